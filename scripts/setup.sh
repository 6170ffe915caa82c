#!/usr/bin/env bash
# Creates .venv and installs edgeseg for this machine:
#   no NVIDIA GPU -> a CPU build of PyTorch + onnxruntime (never a CUDA download)
#   NVIDIA GPU    -> PyTorch's default (CUDA) build + onnxruntime-gpu
# both with opencv-python (the opencv extra). Not for a Jetson: see the README's "On a Jetson".
# Usage: bash scripts/setup.sh [--dev]        (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -e /etc/nv_tegra_release ] && [ -z "${EDGESEG_SETUP_ON_JETSON:-}" ]; then
    # A pip OpenCV and numpy 2 would shadow JetPack's OpenCV (GStreamer, numpy 1.x); the board needs no torch.
    echo "setup.sh: this is a Jetson; follow the README's \"On a Jetson\" (venv with --system-site-packages," \
         "pip install -e '.[jetson]', pycuda). EDGESEG_SETUP_ON_JETSON=1 runs this script anyway." >&2
    exit 1
fi

TORCH_VERSION="${EDGESEG_TORCH_VERSION:-2.13.0}"
VENV="${EDGESEG_VENV:-.venv}"
extras="train,opencv"
[ "${1:-}" = "--dev" ] && extras="$extras,dev"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    extras="$extras,gpu"
    "$VENV/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" "torch==$TORCH_VERSION"
else
    extras="$extras,cpu"
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        # "+cpu" only matches a CPU build: from a local wheel cache or a configured index if one
        # has it, else from PyTorch's own CPU-only index. Never PyPI's default (CUDA) build.
        "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null \
            || "${pip[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"${pip[@]}" -e ".[$extras]"
"$VENV/bin/python" -c "import edgeseg, torch, onnxruntime; print('edgeseg', edgeseg.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
