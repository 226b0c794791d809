#!/usr/bin/env bash
# The main job: set up, build, fit a Fashion-MNIST palette, make a model, check it against
# HuggingFace's reference, then score the page's default model on its test split, draw samples and
# completions, and inspect a test image.
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
hf_nll=$(python3 -c 'import json;print(json.load(open("tests/fixtures/hf-imagegpt-tiny/expected.json"))["mean_nll_nats"])')
echo "== HF reference checkpoint: our NLL of its test ids (HF's, from the fixture: $hf_nll nats)"
python3 -c 'import json;json.dump(json.load(open("tests/fixtures/hf-imagegpt-tiny/expected.json"))["input_ids"],open("'"$out"'/fixture_ids.json","w"))'
"$bin" eval --model tests/fixtures/hf-imagegpt-tiny --ids "$out/fixture_ids.json"
echo "== the untrained model on 64 Fashion-MNIST test images (uniform: 4 bits/token)"
"$bin" eval --model "$out/small-init" --data fashion-mnist:test --limit 64

shipped=models/$(python3 -c 'import json;print(json.load(open("models/index.json"))[0]["path"])')  # the page's default
test=$(python3 -c 'import json,sys;c=json.load(open(sys.argv[1]));print(c.get("test_data") or c["baselines"]["test_data"])' "$shipped/card.json")
echo "== the shipped model ($shipped) on 100 images of $test (its card: the whole split)"
"$bin" eval --model "$shipped" --data "$test" --limit 100
echo "== 16 samples and 6 completions of test image 3 from it"
"$bin" sample --model "$shipped" -n 16 --seed 1 -o "$out/samples.png"
"$bin" complete --model "$shipped" --data "$test" --index 3 -n 6 --seed 1 -o "$out/completions.png"
echo "== what it makes of test image 3: surprise and attention at the centre pixel"
"$bin" inspect --model "$shipped" --data "$test" --index 3 -o "$out/inspect.png"
echo "== open $out/samples.png, $out/completions.png and $out/inspect.png; scripts/serve.sh serves the web page"
