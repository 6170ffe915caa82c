"""What machine a result came from: CPU, libraries, GPU, and on a Jetson the board, power mode and power.

Every probe is best-effort and never raises: a missing tool or file gives None. Nothing heavy
is imported to read a version (torch's version comes from its package metadata).
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# The one set-up command of a Jetson (scripts/setup.sh): a venv that sees JetPack's TensorRT, OpenCV and numpy, and
# pycuda built with --no-build-isolation against that numpy. Every install hint on a Jetson names it.
JETSON_SETUP = "bash scripts/setup.sh in the edgeseg checkout (JetPack's TensorRT, pycuda built against JetPack's numpy)"
BOARD_MODEL = Path("/proc/device-tree/model")
LIBRARIES = {"numpy": "numpy", "opencv": "opencv-python", "onnxruntime": "onnxruntime", "onnxruntime_gpu": "onnxruntime-gpu",
             "tensorrt": "tensorrt", "pycuda": "pycuda", "torch": "torch", "onnx": "onnx", "openvino": "openvino"}  # fmt: skip


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


# --- what this machine can run (edgeseg doctor) -----------------------------------------
# Each probe imports its library only when called, and reports a failed import as "error".
TENSORRT_WINDOW = ((8, 5), (11,))  # oldest major.minor, newest major
VIDEO_DEVICES = Path("/dev")
VIDEO4LINUX = Path("/sys/class/video4linux")
PLATFORM_DEVICES = Path("/sys/devices/platform")
# JetPack releases by L4T release (NVIDIA's JetPack archive); other R35/R36 releases fall back to "5.x"/"6.x"
JETPACK_BY_L4T = {"R35.2.1": "5.1", "R35.3.1": "5.1.1", "R35.4.1": "5.1.2", "R35.5.0": "5.1.3", "R35.6.0": "5.1.4",
                  "R36.3.0": "6.0", "R36.4.0": "6.1", "R36.4.3": "6.2"}  # fmt: skip
JETSON_COMPUTE_CAPABILITY = (("Orin", "8.7"), ("Xavier", "7.2"), ("TX2", "6.2"), ("Nano", "5.3"))


def numpy_info() -> dict[str, Any]:
    module, error = _import("numpy")
    return {"version": getattr(module, "__version__", None), "error": error}


def opencv_info() -> dict[str, Any]:
    """cv2's version, where it comes from, and what its build has (GStreamer, FFmpeg, CUDA)."""
    cv2, error = _import("cv2")
    if cv2 is None:
        return {"version": None, "error": error, "path": None, "gstreamer": None, "ffmpeg": None, "cuda": None}
    try:
        build = str(cv2.getBuildInformation())
    except Exception:
        build = ""
    return {"version": getattr(cv2, "__version__", None), "error": None, "path": getattr(cv2, "__file__", None),
            "gstreamer": _build_flag(build, "GStreamer"), "ffmpeg": _build_flag(build, "FFMPEG"),
            "cuda": _build_flag(build, "NVIDIA CUDA")}  # fmt: skip


def _build_flag(build: str, name: str) -> bool | None:
    """'YES' or 'NO' on the ``name:`` line of cv2.getBuildInformation(); an absent line is NO."""
    if not build:
        return None
    match = re.search(rf"^\s*{re.escape(name)}:\s*(\S+)", build, re.M)
    return match is not None and match.group(1).upper().startswith("YES")


def onnxruntime_info() -> dict[str, Any]:
    ort, error = _import("onnxruntime")
    providers: list[str] = []
    if ort is not None:
        try:
            providers = list(ort.get_available_providers())
        except Exception as err:
            error = _first_line(err)
    return {"version": getattr(ort, "__version__", None), "error": error, "providers": providers}


def tensorrt_info() -> dict[str, Any]:
    """TensorRT's version, whether edgeseg supports it (8.5 to 11.x), and whether it builds strongly typed only."""
    try:
        import tensorrt as trt
    except Exception as err:  # ImportError, or OSError when libnvinfer is missing behind the module
        return {"version": None, "error": _first_line(err), "in_window": False, "strongly_typed_only": False}
    version, error = str(trt.__version__), None
    numbers = version_tuple(version)
    oldest, (newest_major,) = TENSORRT_WINDOW
    return {"version": version, "error": error,
            "in_window": bool(numbers) and numbers[:2] >= oldest and numbers[0] <= newest_major,
            "strongly_typed_only": bool(numbers) and numbers[0] >= 11}  # fmt: skip


def import_pycuda_driver() -> tuple[Any, str | None]:
    """(pycuda.driver, None), or (None, why it does not import).

    ``pycuda.driver`` is pycuda's compiled extension; ``import pycuda`` alone works even when it is broken. A pycuda
    built against a newer numpy than the one here fails in numpy's ``import_array``, which prints "module compiled
    against API version 0x10 but this version of numpy is 0xd" and then raises an error that does not say so
    (SystemError from pycuda's module init): that printed line is the reason given."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            import pycuda.driver as cuda
    except Exception as err:  # ImportError, OSError (no libcuda), SystemError (numpy's C-API check)
        said = [line for line in printed.getvalue().splitlines() if "API version" in line]
        return None, said[0].replace("RuntimeError: ", "").split(" . Check")[0].strip() if said else _first_line(err)
    return cuda, None


def cuda_binding_info() -> dict[str, Any]:
    """pycuda (edgeseg's CUDA binding) as TensorRT work uses it: its extension ``pycuda.driver`` imported (a pycuda
    built against another numpy fails there, not at ``import pycuda``) and CUDA initialised through it; for
    information, cuda-python. ``pycuda``: its version once ``pycuda.driver`` imports, else None."""
    driver, error = import_pycuda_driver()
    # the package imports even where its extension does not; a source checkout on sys.path has no distribution
    installed = distribution_version("pycuda") or getattr(sys.modules.get("pycuda"), "VERSION_TEXT", None)
    init_error = None
    if driver is not None:
        try:
            driver.init()
        except Exception as err:  # pycuda.driver.Error: no device, no driver, or the driver refuses this user
            init_error = _first_line(err)
    version = (installed or "unknown") if driver is not None else None
    return {"pycuda": version, "installed": installed, "error": error, "init_error": init_error,
            "cuda_python": distribution_version("cuda-python")}  # fmt: skip


def gpus() -> list[dict[str, Any]]:
    """Each CUDA GPU: name, compute capability, memory (MiB) and the probe that saw it; [] when none."""
    return _gpus_from_pycuda() or _gpus_from_nvidia_smi() or _gpu_from_jetson_board()


def _gpus_from_pycuda() -> list[dict[str, Any]]:
    cuda, _ = import_pycuda_driver()
    if cuda is None:
        return []
    try:
        cuda.init()
        found = []
        for index in range(cuda.Device.count()):
            device = cuda.Device(index)
            major, minor = device.compute_capability()
            found.append({"name": device.name(), "compute_capability": f"{major}.{minor}",
                          "memory_mib": device.total_memory() // 2**20, "source": "pycuda"})  # fmt: skip
        return found
    except Exception:  # no driver or no GPU
        return []


def _gpus_from_nvidia_smi() -> list[dict[str, Any]]:
    output = run_command(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"])
    found = []
    for line in (output or "").splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3:
            memory = int(fields[2]) if fields[2].isdigit() else None  # "[N/A]" on a Jetson
            found.append({"name": fields[0], "compute_capability": fields[1] or None, "memory_mib": memory,
                          "source": "nvidia-smi"})  # fmt: skip
    return found


def _gpu_from_jetson_board() -> list[dict[str, Any]]:
    """A Jetson's integrated GPU from its board name, when no CUDA probe answered; memory is shared RAM."""
    board = board_model()
    if board is None or l4t_release() is None:
        return []
    capability = next((cc for family, cc in JETSON_COMPUTE_CAPABILITY if family in board), None)
    total = re.search(r"^MemTotal:\s*(\d+) kB", read_text(Path("/proc/meminfo")) or "", re.M)
    return [{"name": f"{board} (integrated)", "compute_capability": capability,
             "memory_mib": int(total.group(1)) // 1024 if total else None, "source": "board"}]  # fmt: skip


def dla_cores(tensorrt_ok: bool, gpu_found: bool) -> dict[str, Any]:
    """DLA core count and how it was found: TensorRT's builder, /sys on a Jetson, or none off a Jetson."""
    if tensorrt_ok and gpu_found:
        try:
            import tensorrt as trt

            builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
            return {"count": int(builder.num_DLA_cores), "source": "tensorrt"}
        except Exception:
            pass
    if not jetson_info():
        return {"count": 0, "source": "not a Jetson"}
    nodes = {path.name for pattern in ("*nvdla*", "*/*nvdla*") for path in PLATFORM_DEVICES.glob(pattern)}
    if nodes:
        return {"count": len(nodes), "source": "/sys/devices/platform"}
    return {"count": None, "source": "unknown"}


def cameras() -> list[dict[str, Any]]:
    """/dev/video* with the driver's name for each (a Jetson's CSI sensors say 'vi-output, <sensor>')."""
    devices = sorted(VIDEO_DEVICES.glob("video*"), key=lambda p: (len(p.name), p.name))
    return [{"device": str(path), "name": read_text(VIDEO4LINUX / path.name / "name")} for path in devices]


def jetpack_release(l4t: str | None) -> str | None:
    """The JetPack version: from the nvidia-jetpack package if installed, else from the L4T release."""
    if l4t is None:
        return None
    package = run_command(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if package:
        return package.split("-")[0]
    family = {"R32": "4.x", "R35": "5.x", "R36": "6.x"}.get(l4t.split(".")[0])
    return JETPACK_BY_L4T.get(l4t, family)


def version_tuple(version: str) -> tuple[int, ...]:
    """(8, 5, 2) from '8.5.2.2'; stops at the first part that is not a number."""
    numbers = []
    for part in str(version).split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


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


def _import(module: str) -> tuple[Any, str | None]:
    """(module, None), or (None, the error's first line): a broken optional install must not stop a probe."""
    try:
        return __import__(module), None
    except Exception as err:  # ImportError, or OSError when a library behind the module is missing
        return None, _first_line(err) or type(err).__name__


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def distribution_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _module_version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:  # a broken optional install must not break a benchmark report
        return None
