#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (HF parity, datasets, CLI), and the builds
# that must keep compiling without a GPU (wasm32 library, CUDA backend).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy (native, all targets)"
cargo clippy --release --all-targets -- -D warnings

step "wasm32 library build (wgpu + flex, the browser's backends)"
cargo build --release --lib --target wasm32-unknown-unknown

step "CUDA backend compiles (no GPU needed to build)"
CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" cargo check --release --features cuda --all-targets

step "cargo test --release"
cargo test --release
