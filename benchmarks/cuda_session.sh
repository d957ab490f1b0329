#!/usr/bin/env bash
# The CUDA checks and figures, in one go on one GPU machine, from the repository root:
#   OUT=/some/dir bash benchmarks/cuda_session.sh
# Budget: BUDGET seconds in all (default 540); the benchmarks come first, each under its own timeout, and the
# CamVid training takes what is left (at most TRAIN_SECONDS, default 600), so the script ends in time:
# unet_gpu.yaml from scratch, then PHASE2_SHARE (default 0.15; 0 skips it) of the steps on whole images with
# plain cross-entropy (unet_gpu_fullres.yaml).
# It expects CamVid (train and val, SegNet layout) in $CAMVID (default .camvid_jpeg: the SegNet PNGs
# re-encoded as JPEG quality 95 to fit a 64 MiB transfer, label maps untouched; make it with
# `python benchmarks/camvid_jpeg.py`). Python packages missing there (smp, pypng) come as wheels in .whl/.
# Writes into $OUT: session.log (every figure) and each trained run (metrics, plots, and the result's best
# weights) as a tar in 15 MiB parts. Rehearse on a CPU: DEVICE=cpu REHEARSE=1 BUDGET=300 OUT=/tmp/out bash benchmarks/cuda_session.sh
# For issue #18's CamVid GPU target alone: TRAINING_ONLY=1 BUDGET=560 OUT=out bash benchmarks/cuda_session.sh
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
CAMVID=${CAMVID:-.camvid_jpeg}
PY=${PYTHON:-python3}
LOG="$OUT/session.log"
exec > >(tee -a "$LOG") 2>&1

section() { echo; echo "=== $* ($(( $(date +%s) - START )) s)"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# Rehearsal: tiny sizes, so that every section runs on a CPU in minutes.
small() { if [ -n "${REHEARSE:-}" ]; then echo "$2"; else echo "$1"; fi; }

section environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
lscpu | grep -m1 "Model name"
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$PY" -c "import torch, torchvision, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'smp', smp.__version__, 'cuda', torch.cuda.is_available())"

probe=$(mktemp -d)
# TRAINING_ONLY=1 skips the benchmarks, so that nearly all of a 10-minute command goes to the CamVid run.
if [ -z "${TRAINING_ONLY:-}" ]; then
  section "machine peak"
  timeout 60 "$PY" benchmarks/machine_peak.py --device "$DEVICE" --threads 1

  section "training throughput: smp against pixelwise on the same in-memory batches, and the per-image loader"
  timeout 120 "$PY" benchmarks/train_vs_smp.py --device "$DEVICE" --data "$CAMVID" --batch "$(small 16 2)" \
    --steps "$(small 30 2)" --warmup "$(small 5 1)" --workers "$(small 12 2)"

  section "trainer images/s, CamVid DeepLabv3+ MobileNetV2 recipe: per-image loader (12 workers) vs data.in_memory"
  recipe=configs/camvid/deeplabv3plus_mobilenetv2.yaml
  for in_memory in false true; do
    timeout 90 "$PY" -m pixelwise train --config "$recipe" --out "$probe/$in_memory" --set "data.root=$CAMVID" \
      --set "train.device=$DEVICE" --set model.options.pretrained_backbone=false --set "train.batch_size=$(small 16 2)" \
      --set "data.num_workers=$(small 12 2)" --set train.progress=false --set "data.in_memory=$in_memory" \
      --set "train.steps=$(small 60 4)" --set "train.log_every=$(small 20 2)" --set eval.every=100000 \
      --set train.checkpoint_every=100000 --set eval.plot_images=0 > "$probe/$in_memory.log" 2>&1 \
      || tail -5 "$probe/$in_memory.log"
    "$PY" -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1]) if 'images_per_s' in l]; print('data.in_memory=$in_memory:', ', '.join(f\"{r['images_per_s']:.0f}\" for r in rows), 'images/s per log window')" "$probe/$in_memory/metrics.jsonl"
  done

  section "inference: torchvision / smp / pixelwise eager, fast bf16 and fp16, torch.compile"
  timeout 150 "$PY" benchmarks/bench_inference.py --device "$DEVICE" --batch 1 8 --reps "$(small 10 2)" \
    --warmup "$(small 3 1)" --size "$(small 512 128)" --train-steps "$(small 30 2)" \
    --compile-cases unet \
    --cases $(small "deeplabv3_resnet50 deeplabv3_mobilenet_v3_large fcn_resnet50 deeplabv3plus_mobilenet_v2 deeplabv3plus_mobilenet_v2_default unet" "unet")

  section "dense CRF, 512x512, 21 labels, 10 iterations"
  if [ "$DEVICE" = cuda ]; then
    for batch in 1 8; do timeout 40 "$PY" benchmarks/bench_crf.py --device cuda --batch $batch --seconds 8; done
  fi

  section "CUDA tests"
  timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_crf_dense.py tests/test_crf_crfasrnn.py tests/test_in_memory.py -k "cuda or in_memory" 2>&1 | tail -3
fi

section "CamVid U-Net from scratch (configs/camvid/unet_gpu.yaml, then unet_gpu_fullres.yaml)"
# The runs live in $probe, outside $OUT: only their tar parts come back (at most 8 files of 16 MiB).
run="$probe/camvid-unet-gpu"
recipe=configs/camvid/unet_gpu.yaml
common=(--set "data.root=$CAMVID" --set "train.device=$DEVICE" --set train.progress=false)
if [ -n "${REHEARSE:-}" ]; then common+=(--set train.batch_size=2 --set data.crop_size=[64,96] --set eval.batch_size=8); fi
# Steps from the measured rate: a short probe run of the same recipe.
timeout 60 "$PY" -m pixelwise train --config "$recipe" --out "$probe/unet" "${common[@]}" --set "train.steps=$(small 40 4)" \
  --set "train.log_every=$(small 20 2)" --set eval.every=100000 --set train.checkpoint_every=100000 \
  --set eval.plot_images=0 > "$probe/unet.log" 2>&1 || tail -5 "$probe/unet.log"
# Kept back: both runs' start-up, phase 2's evaluations (plain, flip, CRF) and phase 1's, about 2.5 minutes.
train_seconds=$(( $(left) - 150 ))
[ "$train_seconds" -gt "${TRAIN_SECONDS:-600}" ] && train_seconds=${TRAIN_SECONDS:-600}
steps=$("$PY" - "$probe/unet/metrics.jsonl" "$train_seconds" "$probe/unet/config.yaml" "${PHASE2_SHARE:-0.15}" <<'PY'
import json, sys
import yaml
rows = [json.loads(line) for line in open(sys.argv[1]) if '"images_per_s"' in line]
rate = rows[-1]["images_per_s"]
batch = yaml.safe_load(open(sys.argv[3]))["train"]["batch_size"]  # the probe's, overrides included
# 7 validations of the 101 val images take a few seconds each; keep 8% for them. Whole 360x480 images cost
# about what the 352x480 crops do, so phase 2 (PHASE2_SHARE of the steps) runs at the probe's rate too.
total = int(0.92 * float(sys.argv[2]) * rate / batch)
phase2 = int(total * float(sys.argv[4])) // 8 * 8
print(max(8, (total - phase2) // 8 * 8), phase2)
PY
)
read -r steps steps2 <<< "$steps"
echo "probe: $(grep images_per_s "$probe/unet/metrics.jsonl" | tail -1) -> ${steps} + ${steps2} steps in ${train_seconds} s"
timeout $((train_seconds + 60)) "$PY" -m pixelwise train --config "$recipe" --out "$run" "${common[@]}" \
  --set "train.steps=$steps" --set train.log_every=$((steps / 20 > 0 ? steps / 20 : 1)) \
  --set "eval.every=$((steps / 5 > 0 ? steps / 5 : 1))" --set "train.checkpoint_every=$steps" 2>&1 | tail -25
runs=(camvid-unet-gpu)
if [ "$steps2" -gt 0 ]; then
  section "phase 2: whole images, plain cross-entropy (configs/camvid/unet_gpu_fullres.yaml), ${steps2} steps"
  timeout $((train_seconds / 2 + 60)) "$PY" -m pixelwise train --config configs/camvid/unet_gpu_fullres.yaml \
    --out "$probe/camvid-unet-gpu-fullres" "${common[@]}" --set "model.init_from=$run/best" \
    --set "train.steps=$steps2" --set train.log_every=$((steps2 / 10 > 0 ? steps2 / 10 : 1)) \
    --set "eval.every=$((steps2 / 2 > 0 ? steps2 / 2 : 1))" --set "train.checkpoint_every=$steps2" 2>&1 | tail -8
  runs=(camvid-unet-gpu-fullres camvid-unet-gpu)
fi
# The result is the last phase that saved a model. Its best weights go into $OUT before any evaluation, in
# case the command runs out of time; the other run's metrics and plots follow, without weights (64 MiB cap).
result=""
for name in "${runs[@]}"; do
  weights=()
  if [ -z "$result" ] && [ -d "$probe/$name/best" ]; then result=$name; weights=("$name/best"); fi
  tar -C "$probe" -cf - ${weights[@]+"${weights[@]}"} "$name/metrics.jsonl" "$name/config.yaml" \
      $(cd "$probe" && ls "$name"/*.png 2>/dev/null) | split -b 15m - "$OUT/$name.tar.part-"
done
for name in "${runs[@]}"; do
  [ -d "$probe/$name/best" ] || continue
  section "evaluation of $name/best: plain$([ "$name" = "$result" ] && echo ", flip, dense CRF")"
  for extra in "" "--flip" "--crf"; do
    if [ -n "$extra" ] && [ "$name" != "$result" ]; then continue; fi
    timeout "$(small 40 120)" "$PY" -m pixelwise eval --checkpoint "$probe/$name/best" --data "camvid:$CAMVID" \
      --split val $extra --device "$DEVICE" 2>&1 | grep -E "^mean|pixel accuracy|^[a-z/]+ +[0-9]" | tr '\n' ';'
    echo " <- eval $extra"
  done
done
rm -rf "$probe"
section done
ls -la "$OUT"
