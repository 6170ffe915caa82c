"""Install ``tensorrt-stubs`` (type stubs of TensorRT 10.x's Python API) where only mypy looks, and patch that copy.

    python scripts/trt_stubs.py            # into .typecheck/stubs (git-ignored); a no-op once done

The stubs go into ``.typecheck/stubs`` only, never into the virtual environment: the wheel also ships a
bare ``tensorrt/`` folder, which would make ``import tensorrt`` succeed there and plant a fake TensorRT.
tests/test_typecheck_trt.py points mypy at the folder (MYPYPATH).

Measured on tensorrt-stubs 10.13.0.35.1, and patched here in this copy only:
* ``def ...(self, in: list[...], ...)``: a parameter named ``in`` does not parse -> ``in_``;
* ``add_scale_nd(..., power: Weights = None, channel_axis: int)``: no default after defaulted ones -> ``= 0``;
* ``class Dims`` has no ``__iter__`` although Dims behave like tuples -> one is added;
* the calls that return None on failure are typed ``... | None`` (pybind11-stubgen cannot know), so mypy
  rejects any use of their result that does not check first:
  ``Runtime.deserialize_cuda_engine`` ("or None if it could not be deserialized", its docstring) and
  ``Builder.build_serialized_network`` (None when the build fails), ``IBuilderConfig.get_timing_cache``
  ("or None if no timing cache is set", its docstring), ``IBuilderConfig.create_timing_cache`` and
  ``ICudaEngine.create_execution_context`` (NVIDIA's samples check both for nullptr:
  samples/utils/timingCache.cpp and samples/common/sampleInference.cpp in TensorRT 10.3; an out-of-memory
  context is NVIDIA/TensorRT#3017).

Exit status: 0 installed (or already there), 3 when the package index cannot be reached (the test then
skips, saying so), 1 for anything else.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / ".typecheck" / "stubs"
REQUIREMENT = "tensorrt-stubs==10.13.*"
MARKER = ".edgeseg-patched"
PATCHES = "2"  # bumped when patch() changes: an older patched copy is installed again
OPTIONAL = ("deserialize_cuda_engine", "build_serialized_network", "get_timing_cache", "create_timing_cache",
            "create_execution_context")  # fmt: skip
UNREACHABLE = ("Could not find a version", "No matching distribution", "Failed to establish", "Name or service",
               "Temporary failure in name resolution", "Network is unreachable", "timed out")  # fmt: skip


def install(target: Path = TARGET) -> int:
    stamp = f"{REQUIREMENT} patches {PATCHES}\n"
    if (target / MARKER).is_file():
        if (target / MARKER).read_text() == stamp:
            return 0
        shutil.rmtree(target)  # patched by an older version of this script
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--upgrade",
         "--target", str(target), REQUIREMENT],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        print(f"trt_stubs: pip could not install {REQUIREMENT}: {message[-1] if message else done.returncode}",
              file=sys.stderr)  # fmt: skip
        return 3 if any(text in done.stderr + done.stdout for text in UNREACHABLE) else 1
    patch(target / "tensorrt_bindings" / "tensorrt.pyi")
    (target / MARKER).write_text(stamp)
    print(f"trt_stubs: {REQUIREMENT} in {target.relative_to(ROOT)} (patched)")
    return 0


def patch(stub: Path) -> None:
    text = stub.read_text()
    text, renamed = re.subn(r"([(,]\s*)in(\s*:)", r"\1in_\2", text)
    text, defaulted = re.subn(r"(power: Weights = None, channel_axis: int)\)", r"\1 = 0)", text)
    dims = "class Dims:\n"
    if dims not in text:
        raise SystemExit(f"trt_stubs: {stub} has no `class Dims:`; update scripts/trt_stubs.py for this version")
    head, _, rest = text.partition(dims)
    docstring_end = rest.index('"""', rest.index('"""') + 3) + 3  # after the class docstring
    method = "\n    def __iter__(self) -> typing.Iterator[int]:\n        ...\n"
    text = head + dims + rest[:docstring_end] + method + rest[docstring_end:]
    text, optional = re.subn(rf"(def (?:{'|'.join(OPTIONAL)})\(.*\)) -> (\w+):", r"\1 -> \2 | None:", text)
    if not renamed or not defaulted or optional < len(OPTIONAL):
        raise SystemExit(f"trt_stubs: {stub} changed (in: {renamed}, channel_axis: {defaulted}, optional returns: "
                         f"{optional}); update this script")  # fmt: skip
    stub.write_text(text)


if __name__ == "__main__":
    sys.exit(install())
