#!/usr/bin/env bash
# One prepared run for a session that has the GPU machine, in stages: the PyTorch reference, our
# training and sampling benchmarks beside it, then a training run sized to a time budget (the campaign's
# continuation with FROM=), exported with its measured test bits/token. Everything it finds lands in $OUT (the device tool brings that folder back).
#
# Prepare on the build machine (the GPU machine builds nothing):
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda
#   mkdir -p .device && xz -T2 -c "$CARGO_TARGET_DIR/release/igpt" > .device/igpt.xz
#   (optional, for the autotune A/B: the same build with Burn's autotuner on)
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda,autotune
#   xz -T2 -c "$CARGO_TARGET_DIR/release/igpt" > .device/igpt-autotune.xz
#   cp /usr/share/datasets/fashion-mnist/*.gz bench/hf_reference_bench.py .device/
# then run `CUDA_PATH=/usr/local/cuda bash scripts/gpu-session.sh` there, carrying `.device`.
#
# Settings (environment, with defaults): DEVICE=cuda PRESET=small BATCH=64 PRECISION=bf16 LR=1e-3
# TRAIN_SECONDS=240 (the training run's budget; its step count comes from the measured throughput,
# unless STEPS is given) BENCH=1 (0 skips every benchmark: then give STEPS)
# NAME=fmnist-small (the exported model) REFERENCE=1 (0 skips the PyTorch benchmark) REFERENCE_SECONDS=180
# FROM= (a model directory to train on, e.g. the campaign's latest milestone models/fmnist-campaign:
# `train --model`, a warm restart with a fresh warmup and cosine; PRESET then only sizes the benchmarks)
# TEST_LIMIT= (score only the first N test images) SAMPLE="--preset igpt-s --colors 512 --positions 1024 --batch 8" (the reference's generate shape).
# ATTENTION="--batch 64 --heads 8 --head-dim 32 --len 784" (`small`'s attention; `bench attention` also
# runs the colour model's, 4 heads of 64 over 1,024 pixels, unless ATTENTION is given)
# PROBE_TRAIN= (probe the exported model with this many training images, recorded in its card)
# FINETUNE_SECONDS= (then fine-tune it as a classifier for about this long; FINETUNE_STEPS= gives the steps instead)
# FINETUNE_FROM= (fine-tune this model directory instead of the one this session trained, e.g. the
# campaign's models/fmnist-128x8) FINETUNE_FLAGS= (more `igpt finetune` options than the ones set
# below, e.g. "--flip --crop 2") TRAIN=1 (0 skips training, export and probe: then the session
# benchmarks and fine-tunes FINETUNE_FROM)
# FINETUNE_RUN= (a committed fine-tuning run folder, e.g. campaign/finetune-long: a copy of it goes on
# with `igpt finetune --resume` on DEVICE until the deadline, its held-out checks and checkpoints as on
# the CPU, Adam's moments started afresh (they are not committed: campaign/README.md); it comes back as
# finetune-run.tar, without the moments, to unpack over the folder and commit:
# `tar -xf finetune-run.tar -C /tmp && cp -r /tmp/finetune-run/. campaign/finetune-long/`)
# FINETUNE_RUN_FLAGS= (the settings the folder was started with; the long fine-tuning's by default)
# DEADLINE=570 (seconds: later stages shrink or are skipped to end by then; the model is packed after
# each stage, so what finished comes back even if the device call is cut short)
# REFERENCE_SHAPES= (a regex of hf_reference_bench.py's bench(...) lines to keep, e.g. 'fmnist')
# NODES=1 (0 skips the one-against-two-processes comparison of `igpt train --nodes`)
# IGPT_AUTOTUNE=.device/igpt-autotune (a build with `--features autotune`: its train, sample and
# attention benchmarks run too when 5 minutes are left, with a cold and then a warm tuning cache, their
# lines marked "autotune:")
# WGPU=1 (0 skips sampling the page's default model through wgpu on the GPU's Vulkan driver, the
# nearest to the page that this machine can run; WGPU_TOKENS=1024 its tokens; the Vulkan loader comes
# from .device/gl/*.deb when the machine lacks it: `apt-get download libvulkan1` into .device/gl)
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda} PRESET=${PRESET:-small} BATCH=${BATCH:-64} PRECISION=${PRECISION:-bf16}
LR=${LR:-1e-3} TRAIN_SECONDS=${TRAIN_SECONDS:-240} NAME=${NAME:-fmnist-small} REFERENCE=${REFERENCE:-1}
SAMPLE=${SAMPLE:---preset igpt-s --colors 512 --positions 1024 --batch 8}
ATTENTION_SHAPES=("${ATTENTION:---batch $BATCH --heads 8 --head-dim 32 --len 784}")
[[ -z ${ATTENTION:-} ]] && ATTENTION_SHAPES+=("--batch 16 --heads 4 --head-dim 64 --len 1024")
BENCH=${BENCH:-1} OUT=${OUT:-runs/gpu-session} DEADLINE=${DEADLINE:-570}
KIT=.device
WORK=${WORK:-/tmp/igpt-gpu}
mkdir -p "$OUT" "$WORK"
log() { printf '\n== %s (%s, %ss in)\n' "$*" "$(date +%T)" "$SECONDS" | tee -a "$OUT/session.txt"; }
left() { echo $((DEADLINE - SECONDS)); }
# A model directory comes back as one tarball (the device call returns at most 8 files).
pack() { tar -C "$WORK" -cf "$OUT/$1.tar" "$1"; }
# The $PRECISION training throughput `bench train` measured (tokens/s), or nothing (e.g. BENCH=0:
# the callers say so, rather than a pipefail exit when bench.txt does not exist).
measured_throughput() {
    grep "^train .*, $PRECISION:" "$OUT/bench.txt" 2>/dev/null | tail -1 | sed -E 's/.*: ([0-9]+) tokens\/s.*/\1/' || true
}

if [[ -f $KIT/igpt.xz && ! -x $KIT/igpt ]]; then
    xz -dc "$KIT/igpt.xz" > "$KIT/igpt" && chmod +x "$KIT/igpt"
fi
if [[ -f $KIT/igpt-autotune.xz && ! -x $KIT/igpt-autotune ]]; then
    xz -dc "$KIT/igpt-autotune.xz" > "$KIT/igpt-autotune" && chmod +x "$KIT/igpt-autotune"
fi
IGPT=${IGPT:-$KIT/igpt}
IGPT_AUTOTUNE=${IGPT_AUTOTUNE:-$KIT/igpt-autotune}
DATA=${DATA:-$KIT}
[[ -x $IGPT ]] || { echo "no igpt binary at $IGPT (see the top of this script)" >&2; exit 1; }
[[ -f $DATA/train-images-idx3-ubyte.gz ]] || { echo "no Fashion-MNIST files in $DATA" >&2; exit 1; }
# Where igpt looks for Fashion-MNIST by default, so the card names the plain `fashion-mnist:train`.
STANDARD=/usr/share/datasets/fashion-mnist
if [[ ! -f $STANDARD/train-images-idx3-ubyte.gz ]]; then
    { mkdir -p "$STANDARD" && cp "$DATA"/*-ubyte.gz "$STANDARD/"; } 2>/dev/null || true
fi
if [[ -f $STANDARD/train-images-idx3-ubyte.gz ]]; then SPLIT=fashion-mnist; else SPLIT=fashion-mnist:$DATA; fi

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true; nproc; } | tee -a "$OUT/session.txt"

reference() {
    [[ $REFERENCE == 1 && -f $KIT/hf_reference_bench.py ]] || return 0
    local script=$KIT/hf_reference_bench.py
    if [[ -n ${REFERENCE_SHAPES:-} ]]; then
        script=$WORK/reference.py
        grep -v -E "^bench\(" "$KIT/hf_reference_bench.py" > "$script"
        grep -E "^bench\(.*($REFERENCE_SHAPES)" "$KIT/hf_reference_bench.py" >> "$script"
    fi
    log "PyTorch reference (bench/hf_reference_bench.py${REFERENCE_SHAPES:+, shapes matching $REFERENCE_SHAPES})"
    timeout "$1" python3 "$script" 2>&1 | grep -v Warning | tee -a "$OUT/bench.txt" || true
}
# The stages in the order their figures are worth most, each landing in $OUT as it ends: the PyTorch
# reference first (every ratio needs it from the same run, and it is what a cut-short call loses
# otherwise), then igpt's benchmarks beside it (and one process against two), then the training
# continuation.
if [[ $BENCH == 1 ]]; then
    reference "${REFERENCE_SECONDS:-180}"

    log "igpt bench train: $PRESET, batch $BATCH, f32 then $PRECISION"
    for precision in f32 "$PRECISION"; do
        timeout 120 "$IGPT" bench train --preset "$PRESET" --batch "$BATCH" --steps 20 --device "$DEVICE" \
            --precision "$precision" 2>&1 | tee -a "$OUT/bench.txt" || echo "bench train $precision failed" | tee -a "$OUT/bench.txt"
    done

    log "igpt bench sample $SAMPLE"
    # shellcheck disable=SC2086 # SAMPLE is a list of options
    timeout 150 "$IGPT" bench sample $SAMPLE --device "$DEVICE" \
        2>&1 | tee -a "$OUT/bench.txt" || echo "bench sample failed" | tee -a "$OUT/bench.txt"

    # The fused attention kernels (src/kernels/cube_flash.rs) against Burn's unfused attention, forward
    # and backward, on this device.
    for shape in "${ATTENTION_SHAPES[@]}"; do
        log "igpt bench attention $shape"
        # shellcheck disable=SC2086 # shape is a list of options
        timeout 90 "$IGPT" bench attention $shape --steps 10 --device "$DEVICE" \
            2>&1 | tee -a "$OUT/bench.txt" || echo "bench attention failed" | tee -a "$OUT/bench.txt"
    done

    # Burn's autotuner (a compile-time feature, so a second binary): the same benchmarks, marked, so
    # that they sit beside the plain build's lines and the step sizing below never reads them. The
    # first pass tunes every shape (its time is what a user's first run pays; the tuning cache is
    # CubeCL's, under ./target), the second runs from the cache.
    if [[ -x $IGPT_AUTOTUNE ]] && (( $(left) > 300 )); then
        for pass in "cold cache" "warm cache"; do
            log "igpt bench with Burn's autotuner ($pass): train $PRECISION, sample, attention"
            started=$SECONDS
            {
                timeout 150 "$IGPT_AUTOTUNE" bench train --preset "$PRESET" --batch "$BATCH" --steps 20 \
                    --device "$DEVICE" --precision "$PRECISION" 2>&1 || echo "bench train failed"
                # shellcheck disable=SC2086 # SAMPLE and the shape are lists of options
                timeout 150 "$IGPT_AUTOTUNE" bench sample $SAMPLE --device "$DEVICE" 2>&1 || echo "bench sample failed"
                # shellcheck disable=SC2086
                timeout 90 "$IGPT_AUTOTUNE" bench attention ${ATTENTION_SHAPES[0]} --steps 10 \
                    --device "$DEVICE" 2>&1 || echo "bench attention failed"
                echo "wall $((SECONDS - started)) s"
            } | sed "s/^/autotune ($pass): /" | tee -a "$OUT/bench.txt"
        done
    fi

    # The page's default model through wgpu on this GPU's Vulkan driver. The page itself cannot run
    # here: the machine has no Chromium and no network to fetch one, and Chromium (348 MB installed)
    # does not fit the device tool's 64 MiB carry. Natively wgpu runs igpt's fused CubeCL attention
    # where the page runs Burn's unfused steps, so this is the backend family's figure, not the page's.
    if [[ ${WGPU:-1} == 1 ]] && (( $(left) > 240 )); then
        if ! ldconfig -p | grep -q libvulkan && compgen -G "$KIT/gl/*.deb" > /dev/null; then
            for deb in "$KIT"/gl/*.deb; do dpkg -x "$deb" /; done
            ldconfig
        fi
        nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        [[ -f $nvidia_icd ]] && export VK_DRIVER_FILES=$nvidia_icd
        log "igpt bench sample through wgpu (Vulkan): models/emoji-256x4x4, one image of ${WGPU_TOKENS:-1024} tokens"
        { timeout 200 "$IGPT" bench sample --model models/emoji-256x4x4 --batch 1 --tokens "${WGPU_TOKENS:-1024}" --cached-only \
            --device wgpu 2>&1 || echo "bench sample on wgpu failed"; } | sed 's/^/wgpu: /' | tee -a "$OUT/bench.txt"
    fi

    # Data parallelism across processes (`--nodes`) on the one GPU: the same 20 steps in one process,
    # then split between two, and the time each spent in all-reduces.
    if [[ ${NODES:-1} == 1 ]] && (( $(left) > 240 )); then
        log "igpt train: one process against --nodes 2 on this one device, $PRESET, batch $BATCH, 20 steps"
        port=$((29400 + RANDOM % 1000 * 3))
        nodes_train() {
            timeout 120 "$IGPT" train --preset "$PRESET" --palette models/fmnist-mini --data "$SPLIT:train" \
                --limit $((BATCH * 20)) --batch "$BATCH" --steps 20 --log-every 10 --eval-every 1000 \
                --checkpoint-every 1000 --device "$DEVICE" --precision "$PRECISION" "$@"
        }
        started=$(date +%s%N)
        nodes_train -o "$WORK/nodes-one" > "$WORK/nodes-one.log" 2>&1 || echo "one process failed" | tee -a "$OUT/bench.txt"
        one=$(( ($(date +%s%N) - started) / 1000000 ))
        started=$(date +%s%N)
        nodes_train --nodes 2 --node-rank 0 --coordinator "127.0.0.1:$port" -o "$WORK/nodes-two" > "$WORK/nodes-0.log" 2>&1 &
        nodes_train --nodes 2 --node-rank 1 --coordinator "127.0.0.1:$port" -o "$WORK/nodes-two" > "$WORK/nodes-1.log" 2>&1 \
            || echo "node 1 failed" | tee -a "$OUT/bench.txt"
        wait || echo "node 0 failed" | tee -a "$OUT/bench.txt"
        two=$(( ($(date +%s%N) - started) / 1000000 ))
        { echo "nodes: one process ${one} ms, two processes ${two} ms (wall, 20 steps of $BATCH, $PRESET, $PRECISION)"
          grep -h "in all-reduces" "$WORK/nodes-0.log" "$WORK/nodes-1.log"
          for run in one two; do echo "nodes-$run last log row: $(tail -1 "$WORK/nodes-$run/log.csv")"; done
        } 2>&1 | tee -a "$OUT/bench.txt"
    fi
fi

if [[ ${TRAIN:-1} == 1 ]]; then
    # Steps that fit the budget at the throughput just measured (90% of it: validation and checkpoints).
    if [[ -n ${STEPS:-} ]]; then
        steps=$STEPS sizing="STEPS given"
    else
        tokens_per_second=$(measured_throughput)
        [[ -n $tokens_per_second ]] || { echo "no $PRECISION training throughput measured: give STEPS" >&2; exit 1; }
        steps=$((TRAIN_SECONDS * tokens_per_second * 9 / 10 / (BATCH * 784)))
        steps=$((steps < 10 ? 10 : steps))
        sizing="${TRAIN_SECONDS}s at $tokens_per_second tokens/s"
    fi

    RUN=$WORK/run
    if [[ -n ${FROM:-} ]]; then start=(--model "$FROM"); else start=(--preset "$PRESET" --palette models/fmnist-mini); fi
    # Validation on 1,000 held-out training images: the test split chooses nothing.
    log "igpt train: ${FROM:-$PRESET}, $steps steps of $BATCH, $PRECISION ($sizing)"
    "$IGPT" train "${start[@]}" --data "$SPLIT:train" \
        --holdout 1000 --batch "$BATCH" --steps "$steps" --lr "$LR" \
        --warmup $((steps / 20 + 1)) --eval-every $((steps / 5 + 1)) --eval-images 1000 \
        --checkpoint-every $((steps / 3 + 1)) --device "$DEVICE" --precision "$PRECISION" -o "$RUN" \
        2>&1 | tail -5 | tee -a "$OUT/session.txt"

    log "igpt export (f16) and its test bits/token on the test split"
    "$IGPT" export --run "$RUN" -o "$WORK/$NAME" --f16 --test "$SPLIT:test" --device "$DEVICE" ${TEST_LIMIT:+--limit "$TEST_LIMIT"} \
        --note "Trained by scripts/gpu-session.sh: $steps steps of $BATCH images, $PRECISION products, on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "$DEVICE")." \
        2>&1 | tail -3 | tee -a "$OUT/session.txt"
    cp "$RUN/log.csv" "$WORK/$NAME/training-log.csv"
    pack "$NAME"

    if [[ -n ${PROBE_TRAIN:-} ]] && (( $(left) > 60 )); then
        log "igpt probe: $PROBE_TRAIN training images, all test images (recorded in the card)"
        timeout "$(left)" "$IGPT" probe --model "$WORK/$NAME" --train-limit "$PROBE_TRAIN" --batch 256 ${TEST_LIMIT:+--test-limit "$TEST_LIMIT"} \
            --record --json --device "$DEVICE" 2>&1 | tail -3 | tee -a "$OUT/session.txt" || echo "probe failed" | tee -a "$OUT/session.txt"
        pack "$NAME"
    fi
fi

# The campaign's committed fine-tuning run, resumed from its latest checkpoint until the deadline (a
# checkpoint at every held-out check, so a stop loses at most the steps since the last one).
if [[ -n ${FINETUNE_RUN:-} ]] && (( $(left) > 90 )); then
    run_copy=$WORK/finetune-run
    rm -rf "$run_copy" && cp -r "$FINETUNE_RUN" "$run_copy"
    flags=${FINETUNE_RUN_FLAGS:---model models/fmnist-128x8 --steps 17000 --batch 16 --lr 5e-4 --warmup 200 --eval-every 500 --patience 5 --flip --crop 2}
    log "igpt finetune --resume $FINETUNE_RUN on $DEVICE until the deadline"
    # shellcheck disable=SC2086 # flags is a list of options
    timeout "$(( $(left) - 20 ))" "$IGPT" finetune $flags --run "$run_copy" --resume -o "$WORK/finetune-run-model" \
        --device "$DEVICE" 2>&1 | tr '\r' '\n' | grep -E "resuming|held-out|wrote|error" | tee -a "$OUT/session.txt" || true
    rm -f "$run_copy"/checkpoint*/optimizer.mpk
    tar -C "$WORK" --exclude='*.new' --exclude='*.old' -cf "$OUT/finetune-run.tar" finetune-run
    # The finished fine-tuning's model, scored once on test (when the run reached its last step).
    if [[ -d $WORK/finetune-run-model ]]; then pack finetune-run-model; fi
fi

# Fine-tuning: FINETUNE_STEPS, or the steps that fit FINETUNE_SECONDS at the measured throughput.
ft_steps=0
if [[ -n ${FINETUNE_STEPS:-} ]]; then
    ft_steps=$FINETUNE_STEPS ft_sizing="steps given"
elif [[ -n ${FINETUNE_SECONDS:-} ]]; then
    budget=$(( $(left) - 60 < FINETUNE_SECONDS ? $(left) - 60 : FINETUNE_SECONDS ))
    tokens_per_second=$(measured_throughput)
    # Held-out checks (6,000 images, five of them) take about a fifth of the time.
    ft_steps=$((budget * ${tokens_per_second:-0} * 7 / 10 / (BATCH * 784)))
    ft_sizing="${budget}s at ${tokens_per_second:-?} tokens/s"
    if [[ -z $tokens_per_second ]]; then
        echo "no $PRECISION training throughput measured to size the fine-tuning: give FINETUNE_STEPS" | tee -a "$OUT/session.txt"
    elif (( ft_steps < 50 )); then
        echo "no time left to fine-tune ($budget s)" | tee -a "$OUT/session.txt"
        ft_steps=0
    fi
fi
if (( ft_steps > 0 )); then
    from=${FINETUNE_FROM:-$WORK/$NAME}
    log "igpt finetune $from: $ft_steps steps of $BATCH, $PRECISION ($ft_sizing)"
    # shellcheck disable=SC2086 # FINETUNE_FLAGS is a list of options
    timeout "$(( $(left) - 10 ))" "$IGPT" finetune --model "$from" -o "$WORK/$NAME-classifier" ${FINETUNE_FLAGS:-} \
        --steps "$ft_steps" --batch "$BATCH" --lr "${FINETUNE_LR:-1e-4}" --warmup $((ft_steps / 20 + 1)) \
        --eval-every $((ft_steps / 5 + 1)) --patience 3 --precision "$PRECISION" --f16 --device "$DEVICE" ${TEST_LIMIT:+--test-limit "$TEST_LIMIT"} \
        ${FINETUNE_TRAIN:+--train-limit "$FINETUNE_TRAIN"} 2>&1 | tail -4 | tee -a "$OUT/session.txt" || echo "finetune failed" | tee -a "$OUT/session.txt"
    if [[ -d $WORK/$NAME-classifier ]]; then pack "$NAME-classifier"; fi
fi

log "done"
