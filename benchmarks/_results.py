"""Shared by the benchmark scripts: save JSON results and replace one section of RESULTS.md."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
sys.path.insert(0, str(ROOT))

from edgeseg.core.fileio import write_bytes, write_json  # noqa: E402


CPU_FLAGS_OF_NOTE = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def cpu_flags() -> list[str]:
    """The flags of /proc/cpuinfo that decide CPU inference speed (x86 SIMD, VNNI, AMX; Arm NEON dot product, SVE)."""
    from edgeseg.core.sysinfo import read_text

    cpuinfo = read_text(Path("/proc/cpuinfo")) or ""
    names = ("flags", "Features")  # x86, Arm
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.split(":")[0].strip() in names), [])
    return [flag for flag in CPU_FLAGS_OF_NOTE if flag in flags]


def machine(threads: int | None = None) -> dict:
    """What every result records about the machine: environment, a one-line summary, the CPU flags of note
    and the load average (a busy machine slows every timing)."""
    from edgeseg.core.sysinfo import environment, summary

    info = environment(threads=threads)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {**info, "summary": summary(info), "cpu_flags": cpu_flags(), "load_average": load}


def save_json(name: str, data: object) -> Path:
    return write_json(RESULTS_DIR / name, data)


def update_section(key: str, markdown: str) -> Path:
    """Replace the text between <!-- key --> and <!-- /key --> in RESULTS.md, or append the section."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    block = f"<!-- {key} -->\n{markdown.strip()}\n<!-- /{key} -->"
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return write_bytes(RESULTS_MD, text.encode())


def openvino_missing() -> str | None:
    """Why OpenVINO rows cannot run here, or None when it is installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install 'edgeseg[openvino]')"
    return None


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
