#!/usr/bin/env bash
# Checks the neuron viewer: type check, lint, unit tests (Vitest), the generated API client is
# up to date with the server's schema, production build, and end-to-end tests: a real
# activation server (the bundled demo model, or TDB_E2E_MODEL=random|FOLDER) serving the build, driven in
# headless Chromium, on the demo model and again on a random Llama-style one. Screenshots and
# the server's log go to test-artifacts/.
#   bash scripts/viewer_test.sh            everything
#   bash scripts/viewer_test.sh --no-e2e   all but the end-to-end tests (no browser needed)
set -euo pipefail
cd "$(dirname "$0")/.."
e2e=1
[ "${1:-}" = "--no-e2e" ] && e2e=0
bash scripts/setup.sh                      # the Python side: client check and e2e server
if [ "$e2e" = 1 ]; then bash scripts/viewer_setup.sh; else bash scripts/viewer_setup.sh --no-browser; fi
export PYTHON="$PWD/.venv/bin/python"
cd neuron_viewer
echo "== viewer: typecheck"; npm run --silent typecheck
echo "== viewer: lint"; npm run --silent lint
echo "== viewer: unit tests"; npm run --silent test
echo "== viewer: generated client"; npm run --silent check-client
echo "== viewer: build"; npm run --silent build -- --logLevel warn
if [ "$e2e" = 1 ]; then
  echo "== viewer: end-to-end (headless Chromium), bundled demo model"; npm run --silent e2e
  echo "== viewer: end-to-end, a random Llama-style model (Hugging Face layout)"
  TDB_E2E_MODEL=llama npm run --silent e2e
fi
