#!/usr/bin/env bash
# Installs what igpt's builds and tests need on a fresh Debian machine. Idempotent: skips what is there.
#   scripts/setup.sh        everything (the CLI's datasets, the tests' browser and npm packages)
#   scripts/setup.sh site   only what building the web page needs (wasm target, wasm-bindgen, trunk)
set -euo pipefail
cd "$(dirname "$0")/.."
only_site=false
[ "${1:-}" = site ] && only_site=true

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
# The emoji dataset's font (colour bitmaps).
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need_apt+=(fonts-noto-color-emoji)
# Mesa's lavapipe: a Vulkan device on the CPU, so the wgpu backend is tested without a GPU.
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
# The browser for the end-to-end tests (WebGPU on SwiftShader).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ] && ! $only_site; then
  echo "setup: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
fi
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# wasm-bindgen's CLI must match the library version in Cargo.lock exactly.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  echo "setup: installing wasm-bindgen-cli $bindgen_version (compiles from source: a few minutes)"
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
# trunk 0.21.14: 0.22 needs a newer rustc than this toolchain's.
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
  echo "setup: installing trunk 0.21.14 (compiles from source: a few minutes)"
  cargo install trunk --version 0.21.14 --locked
fi

# playwright-core drives the system Chromium; it downloads no browser of its own.
if ! $only_site && [ ! -d tests/e2e/node_modules/playwright-core ]; then
  echo "setup: npm packages for the end-to-end tests"
  (cd tests/e2e && npm ci --no-audit --no-fund)
fi
