#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what scripts/gpu_check.sh needs on a lent GPU machine, which
# cannot reach the internet and has Python 3.12 with torch, torchvision, transformers, timm, onnx,
# matplotlib, pytest (but not Hydra, pycocotools or faster-coco-eval) and does not see ../shared:
#   .gpu/whl/            wheels of the missing packages (Python 3.12, x86-64)
#   .gpu/medical_waste/  a copy of ../shared/data/medical_waste's train split (the benchmark's data)
# .gpu/ is git-ignored (.git/info/exclude); the device call carries it: carry=[".gpu"].
# Idempotent: files already there are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
mkdir -p .gpu/whl
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels=()
for pkg in hydra-core omegaconf pycocotools faster-coco-eval; do wheels+=("$pkg==$(version "$pkg")"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .gpu/whl "${wheels[@]}"
# antlr4-python3-runtime (Hydra's parser) is published as source only: build its pure-Python wheel here.
ls .gpu/whl/antlr4_python3_runtime-*.whl >/dev/null 2>&1 || \
    "$PY" -m pip wheel -q --no-deps -w .gpu/whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
src=../shared/data/medical_waste
if [ -f "$src/train.json" ] && [ ! -f .gpu/medical_waste/train.json ]; then
    mkdir -p .gpu/medical_waste
    cp -r "$src"/. .gpu/medical_waste/  # the whole set (53 MB): train.json lists images of train/, valid/ and test/
fi
du -sh .gpu/whl .gpu/medical_waste 2>/dev/null || true
echo "ready: run scripts/gpu_check.sh on the GPU machine with carry [\".gpu\"]"
