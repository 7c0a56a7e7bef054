#!/usr/bin/env bash
# Installs what the neuron viewer (neuron_viewer/) needs; idempotent, a second run is quick.
#   bash scripts/viewer_setup.sh               npm packages (npm ci) + Debian's chromium (e2e tests)
#   bash scripts/viewer_setup.sh --no-browser  npm packages only
#   bash scripts/viewer_setup.sh --build       ... and build neuron_viewer/dist when it is stale
set -euo pipefail
cd "$(dirname "$0")/.."
browser=1 build=0
for arg in "$@"; do
  case "$arg" in
    --no-browser) browser=0 ;;
    --build) build=1 ;;
    *) echo "usage: $0 [--no-browser] [--build]" >&2; exit 2 ;;
  esac
done

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is not installed; the viewer needs Node.js 20.19 or later with npm" >&2
  exit 2
fi

cd neuron_viewer
if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.installed
fi

if [ "$build" = 1 ]; then
  stale=$(find src index.html package-lock.json vite.config.ts tsconfig.json -newer dist/index.html -print -quit 2>/dev/null || echo missing)
  if [ ! -f dist/index.html ] || [ -n "$stale" ]; then
    npm run --silent build -- --logLevel warn
  fi
fi

if [ "$browser" = 1 ] && [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the viewer's end-to-end tests..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "error: /usr/bin/chromium is missing: install Debian's chromium (apt-get install chromium) or set CHROMIUM" >&2
    exit 2
  fi
fi
