#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (HF parity, backends, datasets, training,
# sampling, CLI), the CUDA build (no GPU needed), the static site, and the browser tests.
# `scripts/test.sh --full` also reproduces every shipped card's whole-test-split figure (minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
full=false
[ "${1:-}" = --full ] && full=true

# Each step's wall time, listed at the end (also when a step fails): CI shows only the log's tail.
timings=()
current=""
started=$SECONDS
step_started=$SECONDS
end_step() {
  if [ -n "$current" ]; then timings+=("$(printf '%5ds  %s' $((SECONDS - step_started)) "$current")"); fi
  current=""
}
step() { end_step; current="$*"; step_started=$SECONDS; printf '\n== %s\n' "$*"; }
report() {
  local status=$?
  end_step
  printf '\n== time per step (%s)\n' "$([ $status = 0 ] && echo passed || echo "failed, exit $status")"
  printf '%s\n' "${timings[@]}"
  printf '%5ds  in all\n' $((SECONDS - started))
}
trap report EXIT

step "set-up: scripts/setup.sh"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --check

# One pass lints every target and proves the CUDA backend compiles (no GPU needed to build): with
# and without `cuda` the dependencies are built with different features, so two passes would compile
# them all twice. (Only backend.rs's "built without CUDA" stub is then left to the test build.)
step "cargo clippy (native, all targets, with the CUDA backend)"
CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" cargo clippy --release --all-targets --features cuda -- -D warnings

step "cargo test --release"
cargo test --release
if $full; then
  step "every shipped card's whole-split figure (--full)"
  cargo test --release --test shipped_model -- --ignored
fi

step "scripts/gpu-session.sh's stages run in order on the CPU (tiny model, 4 steps: the plumbing a GPU session relies on)"
session=$(mktemp -d)
OUT=$session/out WORK=$session/work IGPT="${CARGO_TARGET_DIR:-target}/release/igpt" IGPT_AUTOTUNE="${CARGO_TARGET_DIR:-target}/release/igpt" DATA=/usr/share/datasets/fashion-mnist \
  DEVICE=flex PRESET=tiny BATCH=4 PRECISION=f32 STEPS=4 TEST_LIMIT=8 SAMPLE="--preset tiny --batch 2" ATTENTION="--batch 2 --heads 2 --head-dim 16 --len 64" WGPU_TOKENS=8 REFERENCE=0 DEADLINE=1200 \
  NAME=smoke bash scripts/gpu-session.sh > "$session/log" 2>&1 || { cat "$session/log"; exit 1; }
grep -o "^== igpt [a-z]*" "$session/out/session.txt" | tr '\n' ' ' | grep -q "bench.*bench.*train.*export" \
  || { echo "the stages ran out of order:"; cat "$session/out/session.txt"; exit 1; }
# (A listing in a file: `tar | grep -q` can fail under pipefail when grep stops reading first.)
tar -tf "$session/out/smoke.tar" > "$session/listing" && grep -q "smoke/model.safetensors" "$session/listing" \
  || { echo "no packed model:"; cat "$session/log"; exit 1; }
grep -q "^nodes: one process" "$session/out/bench.txt" || { echo "no --nodes comparison:"; cat "$session/out/bench.txt"; exit 1; }
grep -q "^ratio on .*unfused path" "$session/out/bench.txt" || { echo "no attention comparison:"; cat "$session/out/bench.txt"; exit 1; }
# (The smoke run passes the plain build as the autotune one: it checks the stage's plumbing only.)
grep -q "^autotune (warm cache): ratio on .*unfused path" "$session/out/bench.txt" \
  || { echo "no autotune stage:"; cat "$session/out/bench.txt"; exit 1; }
grep -q "^wgpu: (a) KV cache" "$session/out/bench.txt" || { echo "no wgpu sampling stage:"; cat "$session/out/bench.txt"; exit 1; }
# A fine-tuning-only session (TRAIN=0): a shipped model fine-tuned with extra options, packed.
OUT=$session/ft WORK=$session/ft-work IGPT="${CARGO_TARGET_DIR:-target}/release/igpt" DATA=/usr/share/datasets/fashion-mnist \
  DEVICE=flex BATCH=4 PRECISION=f32 TRAIN=0 BENCH=0 FINETUNE_FROM=models/fmnist-mini FINETUNE_STEPS=4 FINETUNE_TRAIN=64 \
  FINETUNE_FLAGS="--flip --crop 2" TEST_LIMIT=8 NAME=smoke bash scripts/gpu-session.sh > "$session/ft-log" 2>&1 || { cat "$session/ft-log"; exit 1; }
tar -xOf "$session/ft/smoke-classifier.tar" smoke-classifier/card.json > "$session/ft-card.json" && grep -q '"flip": true' "$session/ft-card.json" \
  || { echo "no fine-tuned model with the given options:"; cat "$session/ft-log"; exit 1; }
# A committed run folder resumed (FINETUNE_RUN): one without its optimizer's moments, as campaign/
# commits them, goes on with fresh ones and comes back without them; the finished run's model too.
ft_flags="--model models/fmnist-mini --train-limit 64 --test-limit 8 --steps 4 --batch 4 --eval-every 2"
# shellcheck disable=SC2086 # a list of options
"${CARGO_TARGET_DIR:-target}/release/igpt" finetune $ft_flags --run "$session/run" -o "$session/run-model" > "$session/run-log" 2>&1 \
  || { cat "$session/run-log"; exit 1; }
rm "$session/run/checkpoint/optimizer.mpk"
OUT=$session/resumed WORK=$session/resumed-work IGPT="${CARGO_TARGET_DIR:-target}/release/igpt" DATA=/usr/share/datasets/fashion-mnist \
  DEVICE=flex TRAIN=0 BENCH=0 REFERENCE=0 FINETUNE_RUN=$session/run FINETUNE_RUN_FLAGS="$ft_flags" \
  bash scripts/gpu-session.sh > "$session/resumed-log" 2>&1 || { cat "$session/resumed-log"; exit 1; }
grep -q "resuming the fine-tuning at step 4 of 4.*Adam starts afresh" "$session/resumed/session.txt" \
  || { echo "no resume with fresh moments:"; cat "$session/resumed-log"; exit 1; }
tar -tf "$session/resumed/finetune-run.tar" > "$session/listing" && grep -q "finetune-run/checkpoint/model.safetensors" "$session/listing" \
  && ! grep -q "optimizer.mpk" "$session/listing" && [[ -f $session/resumed/finetune-run-model.tar ]] \
  || { echo "the resumed run folder did not come back as committed:"; cat "$session/listing" "$session/resumed-log"; exit 1; }
rm -rf "$session"

step "static site: trunk build --release (the wasm32 build of the library)"
trunk build --release

step "the JS package: scripts/pkg.sh (wasm-bindgen --target web)"
bash scripts/pkg.sh

step "browser end-to-end tests (Chromium, WebGPU on SwiftShader, and the CPU fallback)"
node tests/e2e/run.mjs dist
