#!/usr/bin/env bash
# Every CPU speed claim of the README, re-measured in one go on a quiet machine, with the machine named:
#   bash benchmarks/cpu_session.sh > docs/benchmarks/cpu-$(date +%F).txt 2>&1
# Each benchmark runs the peer and pixelwise interleaved in one process (where there is a peer) and prints,
# before and after, the load average and the cores other processes keep busy; a figure taken while more than
# half a core was busy elsewhere is flagged and not quoted.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # torch's idle threads sleep instead of spinning

echo "=== $(date -u '+%F %T UTC'); $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
$PYTHON -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "=== machine peak"
$PYTHON benchmarks/machine_peak.py --threads 1 2
echo "=== inference, batch 1, both cores, with torch.compile"
$PYTHON benchmarks/bench_inference.py --threads 2 --batch 1 --reps 5 --warmup 1 ${INFERENCE_CASES:+--cases $INFERENCE_CASES}
echo "=== inference, batch 1, one core"
$PYTHON benchmarks/bench_inference.py --threads 1 --batch 1 --reps 5 --warmup 1 --compile-cases ${INFERENCE_CASES:+--cases $INFERENCE_CASES}
echo "=== dense CRF, CamVid val"
$PYTHON benchmarks/bench_crf.py --images "${CRF_IMAGES:-101}" --repeats 2
echo "=== start-up"
$PYTHON benchmarks/startup.py
echo "=== slide inference on a 4096 x 4096 image, peak memory"
$PYTHON benchmarks/bench_large_image.py
echo "=== HTTP service under load"
$PYTHON benchmarks/bench_serve_load.py
echo "=== HTTP service, peak memory by upload size"
$PYTHON benchmarks/bench_serve_memory.py
echo "=== DDP on the CPU"
$PYTHON benchmarks/ddp_speed.py
echo "=== done $(date -u '+%T UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
