#!/usr/bin/env bash
# Installs what is needed and runs every check: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check neuron_explainer tests benchmarks
echo "== mypy"; .venv/bin/mypy neuron_explainer
echo "== pytest"; .venv/bin/python -m pytest -q "$@"
echo "== viewer"; bash scripts/viewer_test.sh
