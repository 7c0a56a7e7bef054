#!/usr/bin/env bash
# Installs what is needed and starts the activation server on 127.0.0.1:8000.
# Extra arguments go to the server, e.g. --model-path /path/to/gpt2 or --no-model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/viewer_setup.sh --no-browser --build || echo "note: viewer not built; serving the API only" >&2
exec .venv/bin/python -m neuron_explainer.activation_server "$@"
