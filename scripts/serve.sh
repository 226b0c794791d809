#!/usr/bin/env bash
# Builds the static site (www/ -> dist/) and serves it on http://127.0.0.1:8080 (PORT to change it).
# Installs only what the build needs. dist/ alone is the site: copy it to any static host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh site
port="${PORT:-8080}"
echo "serve: building the site (the first build compiles the wasm: ~6 min on 2 cores), then serving it"
echo "serve: open http://127.0.0.1:$port/ once trunk says it is listening (Ctrl-C stops)"
# No autoreload: trunk would inject an inline script, which the page's Content-Security-Policy refuses.
exec trunk serve --release --no-autoreload --address 127.0.0.1 --port "$port"
