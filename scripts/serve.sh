#!/usr/bin/env bash
# Builds the static site (www/ -> dist/) and serves it on http://127.0.0.1:8080 while you work on it.
# dist/ alone is the site: copy it to any static host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec trunk serve --release --address 127.0.0.1 --port "${PORT:-8080}"
