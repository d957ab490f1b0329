#!/usr/bin/env bash
# Every CPU speed claim of the README, re-measured in one go on a quiet machine, with the machine named:
#   bash benchmarks/cpu_session.sh > docs/benchmarks/cpu-$(date +%F).txt 2>&1
# Each benchmark runs the peer and pixelwise interleaved in one process and prints the load average before
# and after; a figure taken while the load average was above 0.5 is flagged and not quoted.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # torch's idle threads sleep instead of spinning

echo "=== $(date -u '+%F %T UTC'); $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
$PYTHON -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "=== machine peak"
$PYTHON benchmarks/machine_peak.py --threads 1 2
echo "=== inference, batch 1, both cores"
$PYTHON benchmarks/bench_inference.py --threads 2 --batch 1 --reps 5 --warmup 1 --compile-cases ${INFERENCE_CASES:+--cases $INFERENCE_CASES}
echo "=== dense CRF, CamVid val"
$PYTHON benchmarks/bench_crf.py --images "${CRF_IMAGES:-101}" --repeats 2
echo "=== done $(date -u '+%T UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
