#!/usr/bin/env bash
# Intel AMX (bf16 tiles, f32 sums; the C kernel that src/kernels/amx.rs ports to Rust) against gemm's
# f32 kernels (what igpt's CPU matmuls run in f32), one core each, on a 128-wide model's training-step matmul
# shapes. Needs a CPU with AMX-BF16 (Sapphire Rapids or later; Linux grants the tiles on request) and
# gcc.
# Usage: bench/amx/amx_vs_gemm.sh
set -euo pipefail
cd "$(dirname "$0")"
grep -qw amx_bf16 /proc/cpuinfo || { echo "this CPU has no AMX-BF16"; exit 1; }
out=${TMPDIR:-/tmp}/igpt-amx-bench
mkdir -p "$out"
gcc -O2 -march=sapphirerapids gemm_amx.c -o "$out/gemm_amx" -lm
cargo build --release --quiet --manifest-path rust/Cargo.toml --target-dir "$out/target"
"$out/target/release/gemm_f32"
"$out/gemm_amx"
