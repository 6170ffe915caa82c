"""``edgeseg doctor``: what this machine can run, one line per capability, with the fix for each one missing.

The probes live in ``sysinfo`` (best-effort, never raising, importing each library only when asked);
this module turns their facts into the table, the ``--for`` verdicts and the ``--json`` file.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from edgeseg import __version__
from edgeseg.core import sysinfo
from edgeseg.core.sysinfo import JETSON_SETUP
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_json

NEEDS = ("trt", "ort", "cpu", "camera")
MIN_PYTHON = (3, 8)
CUDA_BINDING = "pycuda"
OPENCV_FIX = "pip install 'edgeseg[opencv]'"
OPENCV_FIX_JETSON = f"use JetPack's OpenCV (a venv with --system-site-packages, no pip opencv-python): {JETSON_SETUP}"
TENSORRT_FIX = "pip install 'edgeseg[trt]' (TensorRT 8.5 to 11.x)"
TENSORRT_FIX_JETSON = f"sudo apt install nvidia-jetpack (JetPack's TensorRT), then {JETSON_SETUP}"
ORT_FIX = "pip install 'edgeseg[cpu]' (or 'edgeseg[gpu]' on an NVIDIA GPU)"
ORT_FIX_JETSON = "pip install the onnxruntime-gpu wheel NVIDIA builds for your JetPack"
PYCUDA_FIX = "pip install pycuda"
# A pycuda built against a newer numpy than this one (pip's isolated build of pycuda >= 2024.1.2 on Python 3.8
# uses numpy 1.24): build it again, against the numpy it runs with
PYCUDA_REBUILD = "pip install --force-reinstall --no-deps --no-build-isolation --no-cache-dir pycuda"
CUDA_INIT_FIX = "check the NVIDIA driver (nvidia-smi) and that no other process holds the GPU"
CUDA_INIT_FIX_JETSON = "add this user to the video group (sudo usermod -aG video $USER) and log in again"
OPENVINO_FIX = "optional, for --backend openvino on Intel and AMD CPUs: pip install 'edgeseg[openvino]'"


@dataclass(frozen=True)
class Check:
    """One line of the table. ``status``: ok, missing, warn or info; ``fix`` is set on every line that is not ok."""

    name: str
    status: str
    found: str
    fix: str = ""


def collect_facts() -> dict[str, Any]:
    """Everything the probes see on this machine, JSON-serialisable; no probe raises."""
    jetson = _probe(sysinfo.jetson_info, {})
    tensorrt = _probe(sysinfo.tensorrt_info, {"version": None, "error": "probe failed"})
    gpus = _probe(sysinfo.gpus, [])
    real_gpu = any(gpu.get("source") != "board" for gpu in gpus)
    if jetson:
        jetson = {**jetson, "jetpack": _probe(lambda: sysinfo.jetpack_release(jetson.get("l4t")), None)}
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "numpy": _probe(sysinfo.numpy_info, {"version": None, "error": "probe failed"}),
        "opencv": _probe(sysinfo.opencv_info, {"version": None, "error": "probe failed"}),
        "onnxruntime": _probe(sysinfo.onnxruntime_info, {"version": None, "error": "probe failed", "providers": []}),
        "tensorrt": tensorrt,
        "cuda_binding": _probe(sysinfo.cuda_binding_info, {"pycuda": None, "error": "probe failed"}),
        "gpus": gpus,
        "dla": _probe(lambda: sysinfo.dla_cores(bool(tensorrt.get("in_window")), real_gpu), {"count": None}),
        "jetson": jetson or None,
        "cameras": _probe(sysinfo.cameras, []),
        "torch": _probe(lambda: sysinfo.distribution_version("torch"), None),
        "openvino": _probe(_openvino_info, {"version": None, "error": "probe failed"}),
    }


def _openvino_info() -> dict[str, Any]:
    """OpenVINO's version and its CPU plugin's capabilities (BF16 among them on CPUs that have it)."""
    try:
        import openvino
    except Exception as err:  # absent, or a broken install
        return {"version": None, "error": str(err).splitlines()[0] if str(err) else type(err).__name__}
    capabilities = list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {"version": openvino.__version__.split("-")[0], "error": None, "cpu_capabilities": capabilities}


def _probe(function: Callable[[], Any], fallback: Any) -> Any:
    try:
        return function()
    except Exception:  # a probe must never stop the report
        return fallback


# --- the table ------------------------------------------------------------------------
def checks(facts: dict[str, Any]) -> list[Check]:
    on_jetson = bool(facts["jetson"])
    rows = [_python(facts), _numpy(facts, on_jetson), _opencv(facts, on_jetson), _onnxruntime(facts, on_jetson),
            _tensorrt(facts, on_jetson), _cuda_binding(facts, on_jetson), _gpu(facts), _dla(facts)]  # fmt: skip
    rows += _jetson(facts)
    rows.append(_cameras(facts))
    rows.append(_openvino(facts))
    torch = facts["torch"]
    rows.append(Check("PyTorch", "info", torch or "not installed (the device needs none)",
                      "" if torch else "only to train, export or run .pt here: pip install 'edgeseg[train]'"))  # fmt: skip
    return rows


def _python(facts: dict[str, Any]) -> Check:
    version = facts["python"]["version"]
    found = f"{version} ({facts['python']['executable']})"
    if sysinfo.version_tuple(version)[:2] < MIN_PYTHON:
        return Check("Python", "missing", found, "use Python 3.8 or newer (JetPack 5.1's python3 is 3.8)")
    return Check("Python", "ok", found)


def _numpy(facts: dict[str, Any], on_jetson: bool) -> Check:
    numpy = facts["numpy"]
    if not numpy.get("version"):
        return Check("numpy", "missing", _error(numpy), "pip install 'numpy>=1.17'")
    if on_jetson and sysinfo.version_tuple(numpy["version"])[:1] >= (2,):
        return Check("numpy", "warn", numpy["version"], "JetPack's OpenCV is built against numpy 1.x: pip install 'numpy<2'")
    return Check("numpy", "ok", numpy["version"])


def _opencv(facts: dict[str, Any], on_jetson: bool) -> Check:
    cv = facts["opencv"]
    if not cv.get("version"):
        error = cv.get("error") or ""
        fix = "pip install 'numpy<2' (this OpenCV is built against numpy 1.x)" if "numpy" in error else (
            OPENCV_FIX_JETSON if on_jetson else OPENCV_FIX)  # fmt: skip
        return Check("OpenCV", "missing", _error(cv), fix)
    flags = ", ".join(f"{name} {_yes(cv.get(key))}" for name, key in
                      (("GStreamer", "gstreamer"), ("FFmpeg", "ffmpeg"), ("CUDA", "cuda")))  # fmt: skip
    found = f"{cv['version']} ({flags})"
    if on_jetson and cv.get("gstreamer") is False:
        return Check("OpenCV", "warn", found, f"csi:// needs GStreamer: {OPENCV_FIX_JETSON}")
    return Check("OpenCV", "ok", found)


def _onnxruntime(facts: dict[str, Any], on_jetson: bool) -> Check:
    ort = facts["onnxruntime"]
    if not ort.get("version"):
        return Check("ONNX Runtime", "missing", _error(ort), ORT_FIX_JETSON if on_jetson else ORT_FIX)
    providers = ", ".join(p.replace("ExecutionProvider", "") for p in ort.get("providers", [])) or "no providers"
    return Check("ONNX Runtime", "ok", f"{ort['version']} ({providers})")


def _openvino(facts: dict[str, Any]) -> Check:
    openvino = facts.get("openvino") or {}
    if not openvino.get("version"):
        return Check("OpenVINO", "info", _error(openvino), OPENVINO_FIX)
    bf16 = "BF16" in openvino.get("cpu_capabilities", [])
    return Check("OpenVINO", "ok", f"{openvino['version']} (CPU bf16 {_yes(bf16)})")


def _tensorrt(facts: dict[str, Any], on_jetson: bool) -> Check:
    trt = facts["tensorrt"]
    fix = TENSORRT_FIX_JETSON if on_jetson else TENSORRT_FIX
    if not trt.get("version"):
        return Check("TensorRT", "missing", _error(trt), fix)
    if not trt.get("in_window"):
        return Check("TensorRT", "missing", f"{trt['version']} (outside 8.5 to 11.x)", fix)
    typing_note = "strongly typed only: INT8 from Q/DQ" if trt.get("strongly_typed_only") else "weak and strong typing"
    return Check("TensorRT", "ok", f"{trt['version']} ({typing_note})")


def _cuda_binding(facts: dict[str, Any], on_jetson: bool) -> Check:
    """pycuda.driver imported, and CUDA initialised through it where there is a GPU to initialise."""
    binding = facts["cuda_binding"]
    extra = f"; cuda-python {binding['cuda_python']}" if binding.get("cuda_python") else ""
    if not binding.get("pycuda"):
        installed = binding.get("installed")
        found = f"pycuda {installed}, but pycuda.driver fails: {binding.get('error')}" if installed else _error(binding)
        return Check("CUDA binding", "missing", found + extra, _pycuda_fix(facts, on_jetson))
    if binding.get("init_error") and _gpu_visible(facts):
        return Check("CUDA binding", "missing", f"pycuda {binding['pycuda']}, but CUDA does not initialise: "
                     f"{binding['init_error']}{extra}", CUDA_INIT_FIX_JETSON if on_jetson else CUDA_INIT_FIX)  # fmt: skip
    return Check("CUDA binding", "ok", f"pycuda {binding['pycuda']}{extra}")


def _pycuda_fix(facts: dict[str, Any], on_jetson: bool) -> str:
    """The set-up command on a Jetson (naming its JetPack); elsewhere a rebuild for numpy's C-API error, else pip install."""
    if on_jetson:
        return f"JetPack {facts['jetson'].get('jetpack') or '?'}: {JETSON_SETUP}"
    return PYCUDA_REBUILD if "API version" in str(facts["cuda_binding"].get("error")) else PYCUDA_FIX


def _gpu_visible(facts: dict[str, Any]) -> bool:
    """A GPU that nvidia-smi or the Jetson board shows, whatever pycuda says."""
    return any(gpu.get("source") != "pycuda" for gpu in facts["gpus"]) or bool(facts["jetson"])


def _gpu(facts: dict[str, Any]) -> Check:
    gpus = facts["gpus"]
    if not gpus:
        return Check("GPU", "missing", "no CUDA GPU found (pycuda, nvidia-smi)",
                     "an NVIDIA GPU with its driver for TensorRT; --for cpu runs without one")  # fmt: skip
    parts = []
    for gpu in gpus:
        memory = f", {gpu['memory_mib']} MiB" if gpu.get("memory_mib") else ""
        parts.append(f"{gpu['name']} (sm {gpu.get('compute_capability') or '?'}{memory}; {gpu['source']})")
    if all(gpu["source"] == "board" for gpu in gpus):
        return Check("GPU", "warn", "; ".join(parts), f"pycuda reaches it: {JETSON_SETUP}")
    return Check("GPU", "ok", "; ".join(parts))


def _dla(facts: dict[str, Any]) -> Check:
    dla = facts["dla"]
    if dla.get("count") is None:
        return Check("DLA cores", "info", "unknown", "TensorRT and pycuda read the count")
    return Check("DLA cores", "info", f"{dla['count']} ({dla.get('source')})")


def _jetson(facts: dict[str, Any]) -> list[Check]:
    jetson = facts["jetson"]
    if not jetson:
        return [Check("Jetson", "info", "not a Jetson")]
    release = f"L4T {jetson.get('l4t') or '?'}, JetPack {jetson.get('jetpack') or '?'}"
    rows = [Check("Jetson", "info", f"{jetson.get('board') or 'unknown board'}; {release}"),
            Check("nvpmodel", "info", jetson.get("power_mode") or "unknown (nvpmodel -q)")]  # fmt: skip
    clocks = jetson.get("jetson_clocks")
    if clocks == "on":
        rows.append(Check("jetson_clocks", "ok", "on"))
    else:
        rows.append(Check("jetson_clocks", "warn", clocks or "unknown (needs sudo)", "sudo jetson_clocks before benchmarking"))
    return rows


def _cameras(facts: dict[str, Any]) -> Check:
    cameras = facts["cameras"]
    if not cameras:
        return Check("Cameras", "missing", "no /dev/video*",
                     "connect a USB or CSI camera; files and streams work without one")  # fmt: skip
    return Check("Cameras", "ok", ", ".join(f"{c['device']} ({c['name'] or 'unnamed'})" for c in cameras))


def _error(facts: dict[str, Any]) -> str:
    return f"not importable ({facts.get('error') or 'not installed'})"


def _yes(flag: bool | None) -> str:
    return "?" if flag is None else ("yes" if flag else "no")


def format_table(rows: list[Check]) -> str:
    header = Check("check", "status", "found", "fix")
    widths = [max(len(getattr(row, field)) for row in [header, *rows]) for field in ("name", "status")]
    found_width = min(60, max(len(row.found) for row in [header, *rows]))
    lines = []
    for row in [header, *rows]:
        fix = f"fix: {row.fix}" if row.fix and row is not header else row.fix
        line = f"{row.name:<{widths[0]}}  {row.status:<{widths[1]}}  {row.found:<{found_width}}  {fix}"
        lines.append(line.rstrip())
    return "\n".join(lines)


# --- needs ------------------------------------------------------------------------------
def unmet(facts: dict[str, Any], need: str) -> list[str]:
    """What this machine lacks for ``need`` (trt, ort, cpu or camera); [] when it has it all."""
    missing = []
    if sysinfo.version_tuple(facts["python"]["version"])[:2] < MIN_PYTHON:
        missing.append("Python >= 3.8")
    if not facts["numpy"].get("version"):
        missing.append("numpy")
    if not facts["opencv"].get("version"):
        missing.append("OpenCV (cv2)")
    ort = facts["onnxruntime"]
    if need == "ort" and not ort.get("version"):
        missing.append("ONNX Runtime")
    if need == "cpu" and "CPUExecutionProvider" not in (ort.get("providers") or []):
        missing.append("ONNX Runtime (CPU provider)")
    if need == "trt":
        trt = facts["tensorrt"]
        if not trt.get("in_window"):
            missing.append(f"TensorRT 8.5 to 11.x (found {trt['version']})" if trt.get("version") else "TensorRT")
        binding = facts["cuda_binding"]
        if not binding.get(CUDA_BINDING):
            missing.append("pycuda.driver" if binding.get("installed") else CUDA_BINDING)
        elif binding.get("init_error") and _gpu_visible(facts):
            missing.append("CUDA initialised through pycuda")
        if not any(gpu.get("source") != "board" for gpu in facts["gpus"]):
            missing.append("a CUDA GPU")
    if need == "camera":
        cameras = facts["cameras"]
        if not cameras:
            missing.append("a camera (/dev/video*)")
        csi = any((camera.get("name") or "").startswith("vi-output") for camera in cameras)
        if csi and facts["opencv"].get("version") and facts["opencv"].get("gstreamer") is False:
            missing.append("OpenCV with GStreamer (csi://)")
    return missing


def parse_needs(value: str | None) -> list[str]:
    needs = [part.strip() for part in (value or "").split(",") if part.strip()]
    for need in needs:
        if need not in NEEDS:
            raise EdgesegError(f"--for {value}: unknown need '{need}'; choose from {', '.join(NEEDS)} (comma-separated)")
    return needs


def run_doctor(for_: str | None = None, json_path: Path | None = None) -> int:
    """``edgeseg doctor``: print the table and what the machine is ready for; the exit code for ``--for``."""
    needs = parse_needs(for_)
    facts = collect_facts()
    rows = checks(facts)
    verdicts = {need: unmet(facts, need) for need in NEEDS}
    print(f"edgeseg {__version__} doctor: what this machine can run")
    print(format_table(rows))
    ready = [need for need in NEEDS if not verdicts[need]]
    print(f"ready for: {', '.join(ready) or 'nothing'}")
    if json_path is not None:
        report = {"edgeseg": __version__, "facts": facts, "checks": [asdict(row) for row in rows],
                  "needs": {need: {"met": not lacks, "missing": lacks} for need, lacks in verdicts.items()}}  # fmt: skip
        try:
            write_json(json_path, report)
        except OSError as err:
            raise EdgesegError(f"--json {json_path}: cannot write ({err.strerror or err}); choose a writable file") from None
        print(f"facts: {json_path}")
    failed = [f"{need} needs {', '.join(verdicts[need])}" for need in needs if verdicts[need]]
    if failed:
        print(f"doctor --for {','.join(needs)}: not ready: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0
