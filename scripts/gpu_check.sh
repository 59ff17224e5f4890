#!/usr/bin/env bash
# The GPU checks of issue 22 as one prepared run, for a session lent a GPU machine (which starts bare,
# has no internet and does not see ../shared). First, here: scripts/prepare_gpu_check.sh. Then:
#   device run  command="bash scripts/gpu_check.sh"  carry=[".gpu"]  timeout_s=600
# Stages (default: both, within --minutes 9 of one call): `tests` runs pytest -m gpu (amp, compile,
# pad_to, fused step, memory in the log, torchrun with nccl); `bench` runs benchmarks/gpu_throughput.py
# on the carried medical_waste copy with whatever time is left. Logs and tables go to $OUT (the device
# tool brings them back) or outputs/gpu_check/.
# Dry run on a CPU (the wheels are for the GPU machine's Python 3.12; BENCH_ARGS shrink the benchmark):
#   PYTHON=.venv/bin/python SKIP_WHEELS=1 BENCH_ARGS="--device cpu --size 128 --models faster_rcnn_r18_demo \
#       --batches 2 --configs fp32 --iters 2 --warmup 1 --workers 0" bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
minutes=${MINUTES:-9}
start=$(date +%s)
out=${OUT:-outputs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled DETECT_MEMBER=gpu_check
PY=${PYTHON:-python3}
if [ -d .gpu/whl ] && [ -z "${SKIP_WHEELS:-}" ]; then  # Hydra, omegaconf, antlr4, pycocotools, faster-coco-eval for Python 3.12
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
        || { echo "installing .gpu/whl failed"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -f .gpu/medical_waste/train.json ] && export DETECT_MEDICAL_WASTE=$PWD/.gpu/medical_waste
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; $PY -c "import torch, torchvision; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"; } \
    2>&1 | tee "$out/machine.txt"
left() { echo $(( minutes * 60 - ($(date +%s) - start) )); }
if [ "$stage" = all ] || [ "$stage" = tests ]; then
    timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_settings.py tests/test_gpu_switches.py \
        2>&1 | tee "$out/pytest_gpu.txt" | tail -15
fi
if [ "$stage" = all ] || [ "$stage" = bench ]; then
    budget=$(( $(left) - 45 ))  # seconds for the benchmark, leaving time to write its files
    echo "gpu_throughput.py with $budget s"
    # Its run folders stay on the machine (the device tool brings back at most 8 files): only the tables travel.
    timeout "$budget" $PY benchmarks/gpu_throughput.py --max-minutes "$(( budget / 60 ))" --out outputs/gpu_check/bench ${BENCH_ARGS:-} \
        2>&1 | tee "$out/gpu_throughput.txt" | tail -80
    newest=$(ls -td outputs/gpu_check/bench/*/ 2>/dev/null | head -1)
    [ -n "$newest" ] && cp "$newest"/results.md "$newest"/results.json "$out"/ 2>/dev/null
fi
echo "gpu_check done in $(( $(date +%s) - start )) s; files in $out"
