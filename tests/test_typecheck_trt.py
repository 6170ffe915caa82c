"""The TensorRT modules, type-checked against tensorrt-stubs (TensorRT 10.x's Python API) with mypy.

scripts/trt_stubs.py installs the stubs into .typecheck/stubs (never into the venv: they would make
`import tensorrt` succeed) and patches the three lines of 10.13 that do not parse. This test runs it,
then mypy over build.py, runtime/trt/ and the TensorRT backend: no unknown attribute, no wrong call.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / ".typecheck" / "stubs"
CHECKED = ["edgeseg/build.py", "edgeseg/runtime/trt", "edgeseg/runtime/backends/tensorrt_backend.py"]


@pytest.fixture(scope="module")
def stubs() -> Path:
    done = subprocess.run([sys.executable, "scripts/trt_stubs.py"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode == 3:
        pytest.skip(f"tensorrt-stubs could not be installed, the package index is unreachable: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert (STUBS / "tensorrt_bindings" / "tensorrt.pyi").is_file()
    return STUBS


def _mypy(*paths: str) -> subprocess.CompletedProcess:
    env = {"MYPYPATH": str(STUBS), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "pyproject.toml", *paths]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_tensorrt_modules_check_clean_against_the_stubs(stubs):
    done = _mypy(*CHECKED)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found in 5 source files" in done.stdout, done.stdout


def test_a_wrong_tensorrt_call_is_reported(stubs, tmp_path):
    wrong = tmp_path / "wrong_trt.py"
    wrong.write_text(
        "from __future__ import annotations\n\n\n"
        "def build() -> int:\n"
        "    import tensorrt as trt\n\n"
        "    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "    config = builder.create_builder_config()\n"
        "    config.set_flag(trt.BuilderFlag.FP61)\n"
        "    builder.build_engine(None, config)  # removed in 10.0\n"
        "    return builder.num_DLA_core\n"
    )
    done = _mypy(str(wrong))
    assert done.returncode == 1, done.stdout
    for expected in ('has no attribute "FP61"', 'has no attribute "build_engine"', 'has no attribute "num_DLA_core"'):
        assert expected in done.stdout, done.stdout


def test_stubs_are_not_importable_from_the_venv():
    done = subprocess.run([sys.executable, "-c", "import tensorrt_bindings"], capture_output=True, text=True, cwd="/")
    assert done.returncode != 0, "tensorrt-stubs is importable at run time: never install it into the venv"
