"""The TensorRT modules, type-checked against tensorrt-stubs (TensorRT 10.x's Python API) with mypy.

scripts/trt_stubs.py installs the stubs into .typecheck/stubs (never into the venv: they would make
`import tensorrt` succeed), patches the three lines of 10.13 that do not parse, and types the calls that return
None on failure as such. This test runs it, then mypy over every module that uses TensorRT (build.py, runtime/trt/
with the engine manifest, the TensorRT backend, sysinfo.py, doctor.py): no unknown attribute, no wrong call, no use of a
result that may be None unchecked; and scripts/trt_coverage.py counts how many TensorRT uses that check reaches.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / ".typecheck" / "stubs"
CHECKED = ["edgeseg/deploy/build.py", "edgeseg/runtime/trt", "edgeseg/runtime/backends/tensorrt_backend.py", "edgeseg/core/sysinfo.py",
           "edgeseg/deploy/doctor.py"]  # fmt: skip


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
    assert "Success: no issues found in 8 source files" in done.stdout, done.stdout


def _assert_reported(path: Path, body: str, *expected: str) -> None:
    """mypy, given a module holding ``body`` under ``import tensorrt as trt``, reports each of ``expected``."""
    path.write_text(f"from __future__ import annotations\n\n\ndef use(blob: bytes) -> int:\n    import tensorrt as trt\n\n{body}")
    done = _mypy(str(path))
    assert done.returncode == 1, done.stdout
    for message in expected:
        assert message in done.stdout, done.stdout


def test_a_wrong_tensorrt_call_is_reported(stubs, tmp_path):
    _assert_reported(
        tmp_path / "wrong_trt.py",
        "    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "    config = builder.create_builder_config()\n"
        "    config.set_flag(trt.BuilderFlag.FP61)\n"
        "    builder.build_engine(None, config)  # removed in 10.0\n"
        "    return builder.num_DLA_core\n",
        'has no attribute "FP61"', 'has no attribute "build_engine"', 'has no attribute "num_DLA_core"',
    )  # fmt: skip


def test_a_result_that_may_be_none_must_be_checked(stubs, tmp_path):
    """The patched stubs say which calls return None on failure (scripts/trt_stubs.py names NVIDIA's sources)."""
    _assert_reported(
        tmp_path / "unchecked_trt.py",
        "    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)\n"
        "    context = engine.create_execution_context()\n"
        "    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()\n"
        "    config.set_timing_cache(config.create_timing_cache(b''), ignore_mismatch=False)\n"
        "    return context.persistent_cache_limit + len(bytes(config.get_timing_cache().serialize()))\n",
        'Item "None" of "ICudaEngine | None" has no attribute "create_execution_context"',
        'Item "None" of "IExecutionContext', '"ITimingCache | None"; expected "ITimingCache"',
        'Item "None" of "ITimingCache | None" has no attribute "serialize"',
    )  # fmt: skip


def _coverage(*paths: str) -> tuple[int, int, str]:
    done = subprocess.run([sys.executable, "scripts/trt_coverage.py", *paths], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1].split()  # "checked N of M"
    return int(last[1]), int(last[3]), done.stdout


def test_the_check_reaches_at_least_90_percent_of_the_tensorrt_uses(stubs):
    checked, total, report = _coverage(*CHECKED)
    assert total >= 100 and checked / total >= 0.9, report
    print(report.strip().splitlines()[-1])


def test_a_tensorrt_value_passed_through_any_is_counted_unchecked(stubs, tmp_path):
    through_any = tmp_path / "through_any.py"
    through_any.write_text(
        "from __future__ import annotations\n\nfrom typing import Any\n\n\n"
        "def builder() -> Any:\n"
        "    import tensorrt as trt\n\n"
        "    return trt.Builder(trt.Logger(trt.Logger.WARNING))\n\n\n"
        "def network() -> object:\n"
        "    return builder().create_network(0)\n"
    )
    checked, total, report = _coverage(str(through_any))
    assert (checked, total) == (4, 5) and "through_any.py:13: .create_network (read from Any)" in report, report


def test_stubs_are_not_importable_from_the_venv():
    done = subprocess.run([sys.executable, "-c", "import tensorrt_bindings"], capture_output=True, text=True, cwd="/")
    assert done.returncode != 0, "tensorrt-stubs is importable at run time: never install it into the venv"
