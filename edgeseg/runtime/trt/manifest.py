"""What a TensorRT engine was built for, written beside it as ``<engine>.json``, and checked before it is loaded.

A TensorRT engine only runs on the TensorRT version and GPU it was built with; loading one elsewhere
fails deep inside TensorRT ("Version tag does not match"). The manifest lets the runtime say so in
one line, with the fix, before TensorRT sees the file.

Imports without tensorrt, pycuda or torch: each is imported only where it is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeseg import __version__
from edgeseg.core.errors import EdgesegError
from edgeseg.core.sysinfo import BOARD_MODEL, TEGRA_RELEASE, board_model, l4t_release, run_command

# cuda_driver: the CUDA version the driver supports (cuDriverGetVersion, nvidia-smi's "CUDA Version");
# cuda_runtime: the CUDA runtime library's own version (cudaRuntimeGetVersion), TensorRT's where it is loaded
FACT_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "cuda_driver", "cuda_runtime", "l4t_release", "board",
             "jetpack")  # fmt: skip


def manifest_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_suffix(engine_path.suffix + ".json")


# --- system facts -----------------------------------------------------------------------
def system_facts(
    tegra_release: Path = TEGRA_RELEASE, board_path: Path = BOARD_MODEL, device_index: int = 0
) -> dict[str, Any]:
    """TensorRT version, GPU ``device_index`` (cuda:N), CUDA driver and runtime, Jetson release of this machine; None for what is not there."""
    gpu = _gpu_from_pycuda(device_index) or _gpu_from_nvidia_smi(device_index) or {}
    l4t = l4t_release(tegra_release)
    return {
        "tensorrt_version": _tensorrt_version(),
        "gpu_name": gpu.get("gpu_name"),
        "compute_capability": gpu.get("compute_capability"),
        "cuda_driver": gpu.get("cuda_driver"),
        "cuda_runtime": _cuda_runtime(),
        "l4t_release": l4t,
        "board": board_model(board_path),
        "jetpack": _jetpack_version() if l4t else None,
    }


def _tensorrt_version() -> str | None:
    from edgeseg.runtime.trt.support import tensorrt_version

    return tensorrt_version()


def _cuda_runtime() -> str | None:
    from edgeseg.runtime.trt.cuda import cuda_runtime_version

    return cuda_runtime_version()


def _gpu_from_pycuda(device_index: int) -> dict[str, Any] | None:
    try:
        from edgeseg.runtime.trt.cuda import gpu_facts

        return gpu_facts(device_index)
    except Exception:  # pycuda absent, or present without a driver or that GPU
        return None


def _gpu_from_nvidia_smi(device_index: int) -> dict[str, Any] | None:
    query = run_command(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    lines = query.splitlines() if query else []
    if not 0 <= device_index < len(lines):
        return None
    name, _, capability = lines[device_index].rpartition(",")
    header = re.search(r"CUDA Version:\s*([\d.]+)", run_command(["nvidia-smi"]) or "")
    return {"gpu_name": name.strip(), "compute_capability": capability.strip() or None,
            "cuda_driver": header.group(1) if header else None}  # fmt: skip


def _jetpack_version() -> str | None:
    version = run_command(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    return version.split("-")[0] if version else None


__all__ = ["BuiltEngine", "check_engine_manifest", "engine_manifest", "l4t_release", "manifest_mismatches", "manifest_path", "system_facts"]


# --- the manifest -----------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltEngine:
    """What one build made: the engine's precision and INT8 source, its tensors, batch range, flags and seconds."""

    precision: str
    int8_source: str | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    batch_range: tuple[int, int, int] | None
    build_flags: dict[str, Any]
    build_seconds: float


def engine_manifest(
    *,
    facts: dict[str, Any],
    onnx_path: Path,
    onnx_sha256: str,
    onnx_metadata: dict[str, str],
    engine: BuiltEngine,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of ``engine``, built from ``onnx_path`` on the system of ``facts``; ``extra`` is merged in last."""
    manifest = {
        "edgeseg_version": __version__,
        **{key: facts.get(key) for key in FACT_KEYS},
        "onnx": Path(onnx_path).name,
        "onnx_sha256": onnx_sha256,
        "precision": engine.precision,
        "int8_source": engine.int8_source,
        "calibration_manifest_sha256": None,
        "inputs": engine.inputs,
        "outputs": engine.outputs,
        "batch_range": list(engine.batch_range) if engine.batch_range else None,
        "build_flags": engine.build_flags,
        "build_seconds": round(engine.build_seconds, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "onnx_metadata": onnx_metadata,
    }
    manifest.update(extra or {})
    return manifest


def manifest_mismatches(manifest: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """What differs between the engine's build system and this one that stops the engine from loading."""
    problems = []
    built, here = _trt_release(manifest.get("tensorrt_version")), _trt_release(facts.get("tensorrt_version"))
    if built and here and built != here:
        problems.append(f"TensorRT {built} (built) vs {here} (here)")
    built_cc, here_cc = manifest.get("compute_capability"), facts.get("compute_capability")
    if built_cc and here_cc and str(built_cc) != str(here_cc):
        problems.append(f"compute capability {_sm(built_cc)} (built) vs {_sm(here_cc)} (here)")
    built_gpu, here_gpu = manifest.get("gpu_name"), facts.get("gpu_name")
    if built_gpu and here_gpu and _gpu_key(built_gpu) != _gpu_key(here_gpu):
        problems.append(f"GPU {built_gpu} (built) vs {here_gpu} (here)")
    return problems


def check_engine_manifest(
    engine_path: str | Path, facts: dict[str, Any] | None = None, device_index: int = 0
) -> dict[str, Any]:
    """The engine's manifest, or a one-line EdgesegError when it is missing or made for another system.

    ``facts`` defaults to this machine's, for GPU ``device_index`` (the N of ``--device cuda:N``)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EdgesegError(f"{engine_path}: no such engine file; build one with `edgeseg build BUNDLE`")
    path = manifest_path(engine_path)
    if not path.is_file():
        raise EdgesegError(
            f"{engine_path}: no manifest {path.name} beside it; rebuild it with `edgeseg build BUNDLE`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EdgesegError(f"{path}: unreadable engine manifest ({err}); rebuild it with `edgeseg build BUNDLE`") from None
    facts = system_facts(device_index=device_index) if facts is None else facts
    if manifest_mismatches(manifest, facts):
        raise EdgesegError(
            f"{engine_path.name} was built for {_describe(manifest)}; this system has {_describe(facts)}; "
            "rebuild it here with `edgeseg build BUNDLE`"
        )
    return manifest


def _describe(facts: dict[str, Any]) -> str:
    version = _trt_release(facts.get("tensorrt_version")) or "unknown"
    gpu = facts.get("gpu_name") or "an unknown GPU"
    capability = facts.get("compute_capability")
    return f"TensorRT {version} on {gpu} ({_sm(capability)})" if capability else f"TensorRT {version} on {gpu}"


def _trt_release(version: Any) -> str | None:
    """'10.3.0' from '10.3.0.26': engines are tied to major.minor.patch."""
    if not version:
        return None
    return ".".join(str(version).split(".")[:3])


def _sm(capability: Any) -> str:
    return "sm_" + str(capability).replace(".", "")


def _gpu_key(name: str) -> str:
    """pycuda and nvidia-smi spell the same GPU with or without the vendor prefix."""
    return re.sub(r"^nvidia\s+", "", name.strip().lower())
