"""The device, as a Jetson has it: no torch, the base install plus ONNX Runtime, the oldest Python a JetPack ships.

A fresh virtual environment (``.venv-device``, made on first use) gets ``pip install .[opencv]`` and
onnxruntime, nothing else; Python 3.8 (JetPack 5.1) when this machine has it, else this Python.
A bundle exported in the same test run (with torch, as on the workstation) is copied there and
verified, benchmarked and run through a short clip; ``doctor`` reports; ``build`` fails with one line
naming TensorRT, which no CPU machine has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, run_cli

DEVICE_VENV = ROOT / ".venv-device"
# JetPack 5.1's Python first, then JetPack 6's; pyenv keeps other Pythons on this workplace's machines.
DEVICE_PYTHON_VERSIONS = ("3.8", "3.10")

pytestmark = pytest.mark.slow


def _device_interpreter() -> str:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for version in DEVICE_PYTHON_VERSIONS:
        candidates = sorted(pyenv.glob(f"{version}.*/bin/python")) + [Path(p) for p in [shutil.which(f"python{version}")] if p]
        for candidate in candidates:
            if subprocess.run([str(candidate), "-c", "pass"], capture_output=True, timeout=60).returncode == 0:
                return str(candidate)  # pyenv's shims exist on PATH but fail for a version not selected
    return sys.executable


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if done.returncode != 0:
        pytest.fail(f"pip install {' '.join(args)} failed in the device venv:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def device_python() -> Path:
    """The device venv's python, with the project installed from a wheel (so package data counts too)."""
    python = DEVICE_VENV / "bin" / "python"
    if not python.is_file():
        subprocess.run([_device_interpreter(), "-m", "venv", str(DEVICE_VENV)], check=True, timeout=300)
        _pip(python, "onnxruntime")
    _pip(python, "--force-reinstall", "--no-deps", ".")  # this tree's code, as a user's wheel install has it
    _pip(python, ".[opencv]")  # the base dependencies and OpenCV, whatever is missing
    return python


def _device(python: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    edgeseg = python.parent / "edgeseg"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(edgeseg), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=python.parent.parent, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def bundle(small_checkpoint, camvid, tmp_path_factory) -> Path:
    """An FP32/FP16/INT8 export of the small model, made on the 'workstation' (this venv, with torch)."""
    out = tmp_path_factory.mktemp("workstation") / "bundle"
    calib = f"{camvid}/images/train/0001TP_00*.jpg"  # an untrained model: INT8 agrees on ~87-91 % of pixels
    done = run_cli("export", small_checkpoint, "--out", out, "--data", f"camvid:{camvid}", "--precision", "fp32,fp16,int8",
                   "--calib", calib, "--calib-images", "16", "--num-verify", "2", "--fidelity-images", "4",
                   "--verify-images", "6", "--verify-threshold", "fp16=0.995", "--verify-threshold", "int8=0.8", timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    copied = tmp_path_factory.mktemp("device") / "bundle"
    shutil.copytree(out, copied)  # "copying it is the whole deployment"
    return copied


@pytest.fixture(scope="module")
def clip(tmp_path_factory, camvid) -> Path:
    path = tmp_path_factory.mktemp("clip") / "street.mp4"
    frames = sorted((camvid / "images" / "val").glob("*.jpg"))[:12]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (480, 360))
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    return path


def test_device_venv_has_no_torch_and_the_expected_python(device_python):
    done = subprocess.run([str(device_python), "-c", "import sys; print(sys.version_info[:2]); import torch"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr, done.stderr[-1000:]
    if _device_interpreter() != sys.executable:
        assert done.stdout.strip() in ("(3, 8)", "(3, 10)"), done.stdout


@pytest.mark.parametrize("model", ["model.int8.onnx", "model.fp16.onnx", "model.int8.qdq.onnx"])
def test_verify_on_the_device(device_python, bundle, model, tmp_path):
    report_path = tmp_path / "verify.json"
    done = _device(device_python, "verify", bundle / model, "--json", report_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["num_images"] == 6
    assert report["agreement"] >= report["threshold"]


def test_bench_on_the_device(device_python, bundle, tmp_path):
    results = tmp_path / "bench.json"
    done = _device(device_python, "bench", bundle / "model.fp32.onnx", bundle / "model.int8.onnx",
                   "--iters", "3", "--warmup", "1", "--threads", "2", "--json", results)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(results.read_text())["results"]
    assert [Path(r["model"]).name for r in rows] == ["model.fp32.onnx", "model.int8.onnx"]
    assert all(r["latency_ms"]["mean"] > 0 for r in rows)


def test_run_a_clip_on_the_device(device_python, bundle, clip, tmp_path):
    video = tmp_path / "segmented.mp4"
    done = _device(device_python, "run", bundle / "model.int8.onnx", "--source", clip, "--out", video, "--no-show",
                   "--threads", "2", "--json", tmp_path / "run.json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 12
    assert json.loads((tmp_path / "run.json").read_text())["processed"] == 12


def test_doctor_on_the_device(device_python, tmp_path):
    facts_path = tmp_path / "doctor.json"
    done = _device(device_python, "doctor", "--json", facts_path)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(facts_path.read_text())
    text = json.dumps(facts)
    assert "onnxruntime" in text.lower() and "CPUExecutionProvider" in text
    assert _device(device_python, "doctor", "--for", "ort").returncode == 0
    assert _device(device_python, "doctor", "--for", "trt").returncode == 1


def test_build_without_tensorrt_is_one_line(device_python, bundle):
    done = _device(device_python, "build", bundle)
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-1000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "TensorRT" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list(bundle.glob("*.engine"))


def test_verify_catches_a_bundle_altered_in_transit(device_python, bundle, tmp_path):
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    reference = sorted((altered / "verify" / "reference").glob("*.png"))[0]
    labels = cv2.imread(str(reference), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(reference), np.where(labels == 0, 1, 0).astype(np.uint8))
    done = _device(device_python, "verify", altered / "model.int8.onnx")
    assert done.returncode == 2 and reference.name in done.stderr and "Traceback" not in done.stderr, done.stderr
