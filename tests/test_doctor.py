"""``edgeseg doctor`` as a user runs it on this machine (ONNX Runtime, no GPU, no TensorRT), and the hints
the CLI gives when OpenCV or PyTorch is missing, in a real environment that lacks them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, run_cli, run_without, site_without
from edgeseg.deploy.doctor import PYCUDA_REBUILD
from edgeseg.core.sysinfo import JETSON_SETUP

ROWS = ("Python", "numpy", "OpenCV", "ONNX Runtime", "TensorRT", "CUDA binding", "GPU", "DLA cores", "Jetson", "Cameras")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def table_rows(stdout: str) -> dict[str, list[str]]:
    """check name -> [status, rest of the line] for each row of the printed table."""
    rows = {}
    for line in stdout.splitlines():
        for name in ROWS:
            if line.startswith(name + " "):
                status, _, rest = line[len(name):].strip().partition(" ")
                rows[name] = [status, rest.strip()]
    return rows


def test_table_has_every_capability_and_a_fix_on_every_missing_line():
    done = run_cli("doctor")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert set(rows) == set(ROWS), done.stdout
    assert rows["Python"][0] == "ok" and sys.version.split()[0] in rows["Python"][1]
    assert rows["numpy"] == ["ok", np.__version__]
    assert rows["OpenCV"][0] == "ok" and "GStreamer" in rows["OpenCV"][1] and "FFmpeg" in rows["OpenCV"][1]
    for name, (status, rest) in rows.items():
        if status == "missing":
            assert "fix: " in rest, (name, rest)
    if not HAS_TENSORRT:
        assert rows["TensorRT"][0] == "missing" and "fix: pip install 'edgeseg[trt]'" in rows["TensorRT"][1]
    assert "ready for: " in done.stdout


def test_json_holds_the_facts_and_the_verdicts(tmp_path):
    path = tmp_path / "nested" / "doctor.json"
    done = run_cli("doctor", "--json", path)
    assert done.returncode == 0, done.stderr
    report = json.loads(path.read_text())
    facts = report["facts"]
    assert facts["python"]["version"] == sys.version.split()[0]
    assert facts["numpy"]["version"] == np.__version__
    assert {"gstreamer", "ffmpeg", "cuda"} <= set(facts["opencv"]) and facts["opencv"]["version"]
    assert [c["name"] for c in report["checks"]][: len(ROWS)] == list(ROWS)
    assert set(report["needs"]) == {"trt", "ort", "cpu", "camera"}
    if HAS_ORT:
        import onnxruntime

        assert facts["onnxruntime"]["providers"] == onnxruntime.get_available_providers()
        assert report["needs"]["cpu"] == {"met": True, "missing": []}
    if not HAS_TENSORRT:
        assert facts["tensorrt"]["version"] is None and "TensorRT" in report["needs"]["trt"]["missing"]
    assert not list(path.parent.glob(".*.tmp")), "written atomically: no temporary file left"


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here; --for trt may be met")
def test_for_trt_exits_1_naming_tensorrt():
    done = run_cli("doctor", "--for", "trt")
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT" in lines[0] and lines[0].startswith("doctor --for trt: not ready"), done.stderr
    assert "Traceback" not in done.stderr and "TensorRT" in done.stdout


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed here")
@pytest.mark.parametrize("need", ["ort", "cpu", "ort,cpu"])
def test_onnx_runtime_needs_are_met_here(need):
    done = run_cli("doctor", "--for", need)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stderr == ""


def test_unknown_need_is_a_one_line_error():
    assert_one_line_error(run_cli("doctor", "--for", "gpu"), "--for gpu", "trt, ort, cpu, camera")


def test_unwritable_json_is_a_one_line_error_before_any_probe(tmp_path):
    done = run_cli("doctor", "--json", tmp_path)
    assert_one_line_error(done, f"--json {tmp_path}", "is a folder")
    assert done.stdout == ""


# --- a real environment without OpenCV or PyTorch -------------------------------------------
def test_missing_opencv_is_a_one_line_hint(tmp_path):
    site = site_without(tmp_path, "cv2", "opencv")
    assert not (site / "cv2").exists()
    done = run_without(site, "run", tmp_path / "model.onnx", "--source", tmp_path / "clip.mp4")
    assert_one_line_error(done, "OpenCV (cv2) is not installed", "pip install 'edgeseg[opencv]'", "--system-site-packages")
    doctor = run_without(site, "doctor", "--for", "cpu")
    assert doctor.returncode == 1 and "OpenCV (cv2)" in doctor.stderr, (doctor.stdout, doctor.stderr)
    assert table_rows(doctor.stdout)["OpenCV"][0] == "missing" and "edgeseg[opencv]" in doctor.stdout


def test_missing_torch_is_a_one_line_hint(tmp_path):
    site = site_without(tmp_path, "torch")
    done = run_without(site, "train", "--data", "camvid:/nowhere", "--out", tmp_path / "run")
    assert_one_line_error(done, "torch is not installed", "pip install 'edgeseg[train]'")


# --- the verdicts on another machine's facts (a Jetson), which this machine cannot show ------
def jetson_facts(**changes) -> dict:
    """What the probes report on an Orin Nano with JetPack 5.1.2, a CSI camera and pip's OpenCV (no GStreamer)."""
    facts = {
        "python": {"version": "3.8.10", "executable": "/home/nv/venv/bin/python"},
        "numpy": {"version": "1.17.4", "error": None},
        "opencv": {"version": "4.10.0", "error": None, "path": "/home/nv/venv/cv2", "gstreamer": False, "ffmpeg": True, "cuda": False},
        "onnxruntime": {"version": None, "error": "No module named 'onnxruntime'", "providers": []},
        "tensorrt": {"version": "8.5.2.2", "error": None, "in_window": True, "strongly_typed_only": False},
        "cuda_binding": {"pycuda": "2024.1", "error": None, "cuda_python": None},
        "gpus": [{"name": "Orin", "compute_capability": "8.7", "memory_mib": 7620, "source": "pycuda"}],
        "dla": {"count": 0, "source": "tensorrt"},
        "jetson": {"board": "NVIDIA Orin Nano Developer Kit", "l4t": "R35.4.1", "power_mode": "15W",
                   "jetson_clocks": "off", "jetpack": "5.1.2"},
        "cameras": [{"device": "/dev/video0", "name": "vi-output, imx219 9-0010"}],
        "torch": None,
    }  # fmt: skip
    facts.update(changes)
    return facts


def test_verdicts_on_a_jetson():
    from edgeseg.deploy.doctor import checks, format_table, unmet

    facts = jetson_facts()
    assert unmet(facts, "trt") == []
    assert unmet(facts, "camera") == ["OpenCV with GStreamer (csi://)"]
    assert unmet(facts, "ort") == ["ONNX Runtime"]
    rows = {row.name: row for row in checks(facts)}
    assert rows["OpenCV"].status == "warn" and "--system-site-packages" in rows["OpenCV"].fix
    assert rows["ONNX Runtime"].fix.startswith("pip install the onnxruntime-gpu wheel NVIDIA builds")
    assert rows["jetson_clocks"].status == "warn" and rows["jetson_clocks"].fix == "sudo jetson_clocks before benchmarking"
    assert "L4T R35.4.1, JetPack 5.1.2" in rows["Jetson"].found and rows["nvpmodel"].found == "15W"
    assert all(row.fix for row in rows.values() if row.status in ("missing", "warn"))
    assert "fix: sudo jetson_clocks" in format_table(list(rows.values()))


def test_tensorrt_window_and_numpy_2_on_a_jetson():
    from edgeseg.deploy.doctor import checks, unmet

    old = jetson_facts(tensorrt={"version": "8.4.1", "error": None, "in_window": False, "strongly_typed_only": False})
    assert unmet(old, "trt") == ["TensorRT 8.5 to 11.x (found 8.4.1)"]
    new = jetson_facts(tensorrt={"version": "11.4.0", "error": None, "in_window": True, "strongly_typed_only": True},
                       numpy={"version": "2.1.0", "error": None})  # fmt: skip
    rows = {row.name: row for row in checks(new)}
    assert "strongly typed only" in rows["TensorRT"].found
    assert rows["numpy"].status == "warn" and "numpy<2" in rows["numpy"].fix
    broken_cv2 = jetson_facts(opencv={"version": None, "error": "numpy.core.multiarray failed to import"})
    assert "numpy<2" in {row.name: row for row in checks(broken_cv2)}["OpenCV"].fix
    no_binding = jetson_facts(cuda_binding={"pycuda": None, "error": "No module named 'pycuda'"}, gpus=[
        {"name": "NVIDIA Orin Nano (integrated)", "compute_capability": "8.7", "memory_mib": 7620, "source": "board"}])
    assert unmet(no_binding, "trt") == ["pycuda", "a CUDA GPU"]


def test_opencv_build_flags_and_jetpack_release():
    from edgeseg.core.sysinfo import _build_flag, jetpack_release, tensorrt_info

    build = ("  Video I/O:\n    FFMPEG:                      YES\n      avcodec:                   YES (58.54.100)\n"
             "    GStreamer:                   YES (1.16.3)\n    v4l/v4l2:                    YES (linux/videodev2.h)\n")  # fmt: skip
    assert (_build_flag(build, "GStreamer"), _build_flag(build, "FFMPEG"), _build_flag(build, "NVIDIA CUDA")) == (True, True, False)
    assert _build_flag("", "GStreamer") is None
    assert jetpack_release("R35.4.1") == "5.1.2" and jetpack_release("R36.4.0") == "6.1"
    assert jetpack_release("R36.9.9") == "6.x" and jetpack_release(None) is None
    if not HAS_TENSORRT:
        assert tensorrt_info()["version"] is None and tensorrt_info()["error"]


# --- a pycuda whose extension does not import: what pip's isolated build gives on JetPack 5.1 ------------------
NUMPY_API_LINE = ("RuntimeError: module compiled against API version 0x10 but this version of numpy is 0xd . Check the "
                  "section C-API incompatibility at the Troubleshooting ImportError section")  # fmt: skip


def broken_pycuda(tmp_path: Path) -> Path:
    """A folder holding a pycuda package whose ``driver`` fails as a pycuda built against numpy 1.24 does under
    numpy 1.17.4: numpy prints its C-API line, then the import fails. A stand-in package, not pycuda."""
    package = tmp_path / "broken" / "pycuda"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('VERSION_TEXT = "2026.1"\n')
    (package / "driver.py").write_text(f"import sys\nsys.stderr.write({NUMPY_API_LINE + chr(10)!r})\n"
                                       "raise ImportError('numpy.core.multiarray failed to import')\n")  # fmt: skip
    return package.parent


def test_a_pycuda_whose_driver_fails_is_missing_with_the_rebuild(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{broken_pycuda(tmp_path)}{os.pathsep}{ROOT}"}
    json_path = tmp_path / "doctor.json"
    command = [sys.executable, "-m", "edgeseg", "doctor", "--for", "trt", "--json", str(json_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    status, rest = table_rows(done.stdout)["CUDA binding"]
    assert status == "missing", rest
    assert "pycuda 2026.1, but pycuda.driver fails: module compiled against API version 0x10 but this version of numpy is 0xd" in rest
    assert rest.endswith(f"fix: {PYCUDA_REBUILD}"), rest  # not a Jetson here: the rebuild against this numpy
    assert "pycuda.driver" in done.stderr.strip().splitlines()[-1] and NUMPY_API_LINE not in done.stderr
    binding = json.loads(json_path.read_text())["facts"]["cuda_binding"]
    assert binding["pycuda"] is None and binding["installed"] == "2026.1" and "API version 0x10" in binding["error"]


def test_on_a_jetson_a_broken_pycuda_names_the_set_up_command_for_its_jetpack():
    from edgeseg.deploy.doctor import checks, unmet

    error = "module compiled against API version 0x10 but this version of numpy is 0xd"
    facts = jetson_facts(cuda_binding={"pycuda": None, "installed": "2026.1", "error": error, "cuda_python": None})
    row = {row.name: row for row in checks(facts)}["CUDA binding"]
    assert row.status == "missing" and error in row.found
    assert row.fix == f"JetPack 5.1.2: {JETSON_SETUP}" and "bash scripts/setup.sh" in row.fix
    assert unmet(facts, "trt") == ["pycuda.driver"]
    cold = jetson_facts(cuda_binding={"pycuda": "2026.1", "installed": "2026.1", "error": None,
                                      "init_error": "cuInit failed: unknown error", "cuda_python": None})  # fmt: skip
    row = {row.name: row for row in checks(cold)}["CUDA binding"]
    assert row.status == "missing" and "CUDA does not initialise: cuInit failed" in row.found and "video" in row.fix
    assert unmet(cold, "trt") == ["CUDA initialised through pycuda"]


def test_every_jetson_install_hint_is_the_set_up_command():
    from edgeseg.deploy import doctor
    from edgeseg.runtime.trt.support import INSTALL_HINT

    for hint in (INSTALL_HINT, doctor.TENSORRT_FIX_JETSON, doctor.OPENCV_FIX_JETSON):
        assert "bash scripts/setup.sh" in hint, hint
    assert "pip install pycuda" not in INSTALL_HINT
