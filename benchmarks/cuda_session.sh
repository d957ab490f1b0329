#!/usr/bin/env bash
# The CUDA checks and figures, run once on a GPU machine from the repository root:
#   OUT=/some/dir bash benchmarks/cuda_session.sh
# It expects CamVid (train and val, SegNet layout) in $CAMVID (default .camvid_jpeg: the SegNet PNGs
# re-encoded as JPEG quality 95 to fit a 64 MiB transfer; label maps untouched) and writes into $OUT:
# session.log (every figure) and the trained CamVid run (best checkpoint, metrics, plots) as a tar in
# 15 MB parts. Rehearse it on a CPU with DEVICE=cpu TRAIN_SECONDS=20 BATCH=2 MIN_STEPS=4 WORKERS=2 PROBE_SECONDS=900 REHEARSE=1 (skips the benchmarks).
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
CAMVID=${CAMVID:-.camvid_jpeg}
TRAIN_SECONDS=${TRAIN_SECONDS:-150}
BATCH=${BATCH:-16}
PY=${PYTHON:-python3}
LOG="$OUT/session.log"
exec > >(tee -a "$LOG") 2>&1

section() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

section environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"

if [ -z "${REHEARSE:-}" ]; then
section "training throughput per precision (quickstart U-Net)"
timeout 80 "$PY" benchmarks/train_speed.py --device "$DEVICE" --steps 20
fi

section "CamVid DeepLabv3+ MobileNetV2 from scratch, bf16, throughput probe"
recipe=configs/camvid/deeplabv3plus_mobilenetv2.yaml
common=(--set "data.root=$CAMVID" --set "train.device=$DEVICE" --set model.options.pretrained_backbone=false
        --set train.batch_size=$BATCH --set data.num_workers=${WORKERS:-12} --set train.progress=false --set train.precision=bf16)
probe=$(mktemp -d)
timeout ${PROBE_SECONDS:-75} "$PY" -m pixelwise train --config "$recipe" --out "$probe/run" "${common[@]}" \
  --set train.steps=40 --set train.log_every=10 --set eval.every=100000 --set train.checkpoint_every=100000 \
  --set eval.plot_images=0 > "$probe/log" 2>&1 || tail -20 "$probe/log"
rate=$("$PY" - "$probe/run/metrics.jsonl" <<'PY'
import json, sys
try:
    rows = [json.loads(line) for line in open(sys.argv[1]) if '"images_per_s"' in line]
    print(max(row["images_per_s"] for row in rows[1:] or rows))
except (OSError, ValueError):
    print(100.0)  # the probe failed: assume 100 images/s; the training's own timeout bounds the run
PY
)
steps=$("$PY" -c "s = int($TRAIN_SECONDS * $rate / $BATCH); print(max(${MIN_STEPS:-100}, s // 100 * 100 or s))")
echo "probe: ${rate} images/s at batch $BATCH -> ${steps} steps for ${TRAIN_SECONDS} s"

section "CamVid DeepLabv3+ MobileNetV2 from scratch, bf16, ${steps} steps"
run="$OUT/camvid-dlv3p"
timeout $((TRAIN_SECONDS + 120)) "$PY" -m pixelwise train --config "$recipe" --out "$run" "${common[@]}" \
  --set "train.steps=$steps" --set train.log_every=100 --set "eval.every=$((steps / 4))" \
  --set "train.checkpoint_every=$((steps / 4))" 2>&1 | grep -v "^ *$" | tail -40
tail -3 "$run/metrics.jsonl"
tar -C "$OUT" -cf - camvid-dlv3p/best camvid-dlv3p/metrics.jsonl camvid-dlv3p/config.yaml \
    $(cd "$OUT" && ls camvid-dlv3p/*.png 2>/dev/null) | split -b 15m - "$OUT/camvid-dlv3p.tar.part-"
rm -rf "$run"
ls -la "$OUT"
