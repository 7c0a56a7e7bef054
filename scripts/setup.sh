#!/usr/bin/env bash
# Installs what the project needs into .venv (idempotent: a second run is quick).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install --quiet torch            # a CUDA build for a machine with a GPU
  else
    .venv/bin/pip install --quiet "torch==2.13.0"  # CPU machines: the pinned CPU build
  fi
fi
if ! .venv/bin/python -c "import neuron_explainer, fastapi, pytest, transformers" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install --quiet -e ".[dev]"
  touch .venv/.installed
fi
# Test-only reference for circuit-tracer's transcoder sets. Its metadata pins transformers<=4.57
# and huggingface_hub<1, which would downgrade ours; the transcoder loaders the tests use need
# neither, so it goes in without its dependencies.
if ! .venv/bin/python -c "import circuit_tracer" 2>/dev/null; then
  .venv/bin/pip install --quiet --no-deps "circuit-tracer==0.5.0"
fi
