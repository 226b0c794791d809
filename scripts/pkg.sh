#!/usr/bin/env bash
# Builds pkg/: the embeddable JS package (wasm-bindgen --target web output plus package.json), so
# another site can `import init, { ImageGpt } from "./pkg/igpt.js"`.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
# The same profile and features as the site build (www/index.html), so the two share one compilation.
cargo build --profile wasm-release --lib --target wasm32-unknown-unknown --no-default-features --features wgpu,flex
rm -rf pkg
wasm-bindgen --target web --out-dir pkg --out-name igpt "$target_dir/wasm32-unknown-unknown/wasm-release/igpt.wasm"
python3 scripts/strip_wasm_names.py pkg/igpt_bg.wasm
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
cat > pkg/package.json <<JSON
{
  "name": "igpt",
  "version": "$version",
  "description": "Image GPT in the browser: sample and complete images on WebGPU (or the CPU) with a trained igpt model.",
  "type": "module",
  "main": "igpt.js",
  "types": "igpt.d.ts",
  "files": ["igpt.js", "igpt.d.ts", "igpt_bg.wasm", "igpt_bg.wasm.d.ts"],
  "license": "MIT OR Apache-2.0"
}
JSON
echo "wrote pkg/ ($(du -h pkg/igpt_bg.wasm | cut -f1) wasm)"
