#!/usr/bin/env bash
# Creates .venv and installs edgeseg for this machine:
#   no NVIDIA GPU -> a CPU build of PyTorch + onnxruntime (never a CUDA download)
#   NVIDIA GPU    -> PyTorch's default (CUDA) build + onnxruntime-gpu
#   Jetson        -> the whole device set-up (no torch, no pip OpenCV): a venv that sees JetPack's TensorRT,
#                    OpenCV and numpy, the jetson extra, pycuda built against JetPack's numpy, the import
#                    checks, then `edgeseg doctor --for trt`
# the first two with opencv-python (the opencv extra).
# Usage: bash scripts/setup.sh [--dev]        (--dev adds the test tools)
#   EDGESEG_VENV                  the venv (default .venv)
#   EDGESEG_TEGRA_RELEASE         the file that marks a Jetson (default /etc/nv_tegra_release)
#   EDGESEG_SETUP_DRY_RUN=1       on a Jetson: print the set-up's commands, one per line, instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${EDGESEG_VENV:-.venv}"
dev=""
[ "${1:-}" = "--dev" ] && dev=",dev"

# --- a Jetson ------------------------------------------------------------------------------------
# pycuda is an sdist that pip builds in an isolated environment, against the numpy its pyproject.toml asks for
# (numpy>=1.24 since pycuda 2024.1.2): on JetPack 5.1 (Python 3.8, numpy 1.17.4) that is numpy 1.24, and the
# extension then fails to import ("module compiled against API version 0x10 but this version of numpy is 0xd").
# --no-build-isolation builds it against the numpy it will run with (JetPack's, through --system-site-packages),
# which needs setuptools and wheel in the venv; --no-cache-dir keeps pip from reusing a wheel it built before.
# tests/test_install_pycuda.py runs these same commands against a real numpy 1.17.4 on Python 3.8.
PYCUDA_PIP=(--no-build-isolation --no-cache-dir)

run() {
    if [ -n "${EDGESEG_SETUP_DRY_RUN:-}" ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

jetson_setup() {
    local python="${EDGESEG_JETSON_PYTHON:-/usr/bin/python3}"  # JetPack's Python, whose dist-packages hold TensorRT
    local venv_python="$VENV/bin/python"
    local pip=("$venv_python" -m pip install --disable-pip-version-check)
    if [ -z "${EDGESEG_SETUP_DRY_RUN:-}" ] && ! "$python" -c "import tensorrt" >/dev/null 2>&1; then
        echo "setup.sh: JetPack's TensorRT is not importable by $python; sudo apt install nvidia-jetpack python3-venv" \
             "python3-dev, then run this again" >&2
        exit 1
    fi
    [ -x "$venv_python" ] || run "$python" -m venv --system-site-packages "$VENV"
    # JetPack 5.1's pip 20.0 cannot install this project editable; setuptools and wheel build pycuda below
    run "${pip[@]}" --upgrade pip setuptools wheel
    run "${pip[@]}" -e ".[jetson$dev]"
    # a pip OpenCV would shadow JetPack's (GStreamer, built against its numpy)
    if [ -n "${EDGESEG_SETUP_DRY_RUN:-}" ] || "$venv_python" -m pip show -q opencv-python >/dev/null 2>&1; then
        run "$venv_python" -m pip uninstall -y opencv-python
    fi
    # a pycuda that does not import (none, or one built against another numpy) is built again
    if [ -n "${EDGESEG_SETUP_DRY_RUN:-}" ] || ! "$venv_python" -c "import pycuda.driver" >/dev/null 2>&1; then
        run env "PATH=/usr/local/cuda/bin:$PATH" "${pip[@]}" "${PYCUDA_PIP[@]}" --force-reinstall --no-deps pycuda
        run "${pip[@]}" pycuda  # its pure-Python dependencies (pytools, mako, platformdirs)
    fi
    run "$venv_python" -c "import tensorrt, cv2, numpy, pycuda.driver; print('tensorrt', tensorrt.__version__, '| cv2', cv2.__version__, '| numpy', numpy.__version__, '| pycuda.driver ok')"
    run "$VENV/bin/edgeseg" doctor --for trt
}

if [ -e "${EDGESEG_TEGRA_RELEASE:-/etc/nv_tegra_release}" ]; then
    jetson_setup
    exit 0
fi

# --- a PC ------------------------------------------------------------------------------------------
TORCH_VERSION="${EDGESEG_TORCH_VERSION:-2.13.0}"
extras="train,opencv${dev}"

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
