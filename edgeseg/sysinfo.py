"""What machine a result came from: CPU, libraries, GPU, and on a Jetson the board, power mode and power.

Every probe is best-effort and never raises: a missing tool or file gives None. Nothing heavy
is imported to read a version (torch's version comes from its package metadata).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
BOARD_MODEL = Path("/proc/device-tree/model")
LIBRARIES = {"numpy": "numpy", "opencv": "opencv-python", "onnxruntime": "onnxruntime", "onnxruntime_gpu": "onnxruntime-gpu",
             "tensorrt": "tensorrt", "pycuda": "pycuda", "torch": "torch", "onnx": "onnx"}  # fmt: skip


def environment(threads: int | None = None) -> dict[str, Any]:
    jetson = jetson_info()
    return {
        "cpu": cpu_model() or jetson.get("board"),
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "gpu": gpu_name(),
        "jetson": jetson or None,
    }


def summary(env: dict[str, Any]) -> str:
    """One line for the top of a results table."""
    libs = env["libraries"]
    parts = [f"{env['cpu']} ({env['logical_cores']} cores)", f"threads {env['threads'] or 'default'}"]
    parts += [f"{name} {version}" for name, version in libs.items() if version]
    if env["gpu"]:
        parts.append(f"GPU {env['gpu']}")
    if env["jetson"]:
        parts.append(", ".join(f"{k} {v}" for k, v in env["jetson"].items() if v is not None))
    return "; ".join(parts)


def cpu_model() -> str | None:
    text = read_text(Path("/proc/cpuinfo")) or ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else (platform.processor() or None)


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name, distribution in LIBRARIES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["opencv"] is None:  # JetPack's OpenCV is a system package, not a pip distribution
        versions["opencv"] = _module_version("cv2")
    if versions["tensorrt"] is None:
        versions["tensorrt"] = _module_version("tensorrt")
    return versions


def gpu_name() -> str | None:
    output = run_command(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    return output.splitlines()[0].strip() if output else None


def jetson_info() -> dict[str, Any]:
    """Board model, L4T release, nvpmodel mode and jetson_clocks state; {} off a Jetson."""
    board, release = board_model(), l4t_release()
    if board is None and release is None:
        return {}
    mode = run_command(["nvpmodel", "-q"])
    mode_match = re.search(r"NV Power Mode:\s*(.+)", mode or "")
    return {"board": board, "l4t": release, "power_mode": mode_match.group(1).strip() if mode_match else None,
            "jetson_clocks": _jetson_clocks_state()}  # fmt: skip


def l4t_release(path: Path = TEGRA_RELEASE) -> str | None:
    """'R35.4.1' from '# R35 (release), REVISION: 4.1, GCID: ...' in /etc/nv_tegra_release."""
    match = re.search(r"R(\d+)[^,]*,\s*REVISION:\s*([\d.]+)", read_text(path) or "")
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def board_model(path: Path = BOARD_MODEL) -> str | None:
    return read_text(path)


def _jetson_clocks_state() -> str | None:
    output = run_command(["jetson_clocks", "--show"])
    if not output:
        return None
    # With jetson_clocks on, every CPU runs at its maximum: MinFreq equals MaxFreq on each line.
    pairs = re.findall(r"MinFreq=(\d+) MaxFreq=(\d+)", output)
    if not pairs:
        return "unknown"
    return "on" if all(low == high for low, high in pairs) else "off"


# --- tegrastats ----------------------------------------------------------------------
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")


def parse_tegrastats_line(line: str) -> dict[str, Any]:
    """One tegrastats line (Nano, TX2, Xavier, Orin; JetPack 4-6) as numbers."""
    result: dict[str, Any] = {"ram_used_mb": None, "ram_total_mb": None, "cpu_load": [], "gpu_load_pct": None,
                              "power_mw": None, "rails_mw": {}, "temperatures_c": {}}  # fmt: skip
    ram = re.search(r"\bRAM (\d+)/(\d+)MB", line)
    if ram:
        result["ram_used_mb"], result["ram_total_mb"] = int(ram.group(1)), int(ram.group(2))
    cpus = re.search(r"\bCPU \[([^\]]*)\]", line)
    if cpus:
        result["cpu_load"] = [None if c.strip() == "off" else int(c.split("%")[0]) for c in cpus.group(1).split(",")]
    gpu = re.search(r"\bGR3D_FREQ (\d+)%", line)
    if gpu:
        result["gpu_load_pct"] = int(gpu.group(1))
    for name, value in re.findall(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b", line):
        result["temperatures_c"][name] = float(value)
    rails = {name: int(now) for name, now, _ in _RAIL.findall(line) if name not in ("RAM", "SWAP", "IRAM")}
    result["rails_mw"] = rails
    total = next((rails[name] for name in _TOTAL_RAILS if name in rails), None)
    result["power_mw"] = total if total is not None else (sum(rails.values()) if rails else None)
    return result


class TegrastatsSampler:
    """Runs ``tegrastats`` while a benchmark runs (if it exists) and averages the board's input power."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self.samples: list[dict[str, Any]] = []
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return shutil.which("tegrastats") is not None

    def __enter__(self) -> "TegrastatsSampler":
        if self.available:
            self._process = subprocess.Popen(
                ["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE, text=True
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.samples.append(parse_tegrastats_line(line))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)
            if self._thread is not None:
                self._thread.join(timeout=5)

    def mean_power_w(self) -> float | None:
        powers = [s["power_mw"] for s in self.samples if s["power_mw"] is not None]
        return sum(powers) / len(powers) / 1000 if powers else None


# --- helpers -------------------------------------------------------------------------
def read_text(path: Path) -> str | None:
    try:
        return Path(path).read_bytes().decode(errors="replace").strip("\x00 \n") or None
    except OSError:
        return None


def run_command(command: list[str], timeout: float = 15) -> str | None:
    """A tool's stripped output, or None when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _module_version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:  # a broken optional install must not break a benchmark report
        return None
