#!/usr/bin/env bash
# igpt's CPU training step beside PyTorch's fused-attention one (bench/torch_sdpa_bench.py), back
# to back on one machine, with each process's peak memory (GNU time's maximum resident set size).
# The four shapes of README's table: three Fashion-MNIST ones (784 tokens, K = 16, batch 16) and the
# colour one (1,024 tokens, K = 512, batch 8). Each pair runs ROUNDS times in turn (igpt, PyTorch, ...).
# Usage: bench/cpu_train_vs_sdpa.sh [IGPT_BINARY] [PYTHON_WITH_TORCH]
set -euo pipefail
cd "$(dirname "$0")/.."
igpt=${1:-target/release/igpt}
python=${2:-python3}
sdpa=${SDPA_BENCH:-../bench/torch_sdpa_bench.py}
rounds=${ROUNDS:-2}
steps=${STEPS:-5}
peak() { /usr/bin/time -f "peak %M KB" "$@" 2>&1 | grep -E "tokens/s|^peak" | tr '\n' ' '; echo; }
while read -r shape batch ctx colors; do
  for _ in $(seq "$rounds"); do
    peak "$igpt" bench train --preset "$shape" --batch "$batch" --positions "$ctx" --colors "$colors" \
      --steps "$steps" --device flex
    peak "$python" "$sdpa" "$shape" --batch "$batch" --ctx "$ctx" --vocab "$colors" --steps "$steps"
  done
done <<'SHAPES'
256x2x1 16 784 16
128x8x1 16 784 16
128x8x4 16 784 16
128x4x1 8 1024 512
SHAPES
