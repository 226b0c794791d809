#!/usr/bin/env bash
# The main job, as far as igpt goes today: set up, build, fit a Fashion-MNIST palette, make a model,
# check it against HuggingFace's reference, and score it on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin igpt
bin="${CARGO_TARGET_DIR:-target}/release/igpt"
out="${1:-runs/demo}"
mkdir -p "$out"

echo "== 16-grey palette from Fashion-MNIST train"
"$bin" palette --data fashion-mnist:train -k 16 -o "$out/palette"
echo "== a randomly initialised small model (256 wide, 8 layers)"
"$bin" init --preset small --palette "$out/palette" -o "$out/small-init"
echo "== HF reference checkpoint: our NLL of its test ids (HF says $(python3 -c 'import json;print(json.load(open("tests/fixtures/hf-imagegpt-tiny/expected.json"))["mean_nll_nats"])' 2>/dev/null || echo '2.8291113') nats)"
python3 -c 'import json;json.dump(json.load(open("tests/fixtures/hf-imagegpt-tiny/expected.json"))["input_ids"],open("'"$out"'/fixture_ids.json","w"))'
"$bin" eval --model tests/fixtures/hf-imagegpt-tiny --ids "$out/fixture_ids.json"
echo "== the untrained model on 64 Fashion-MNIST test images (uniform: 4 bits/token)"
"$bin" eval --model "$out/small-init" --data fashion-mnist:test --limit 64
