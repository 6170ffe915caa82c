"""Shared by the benchmark scripts: save JSON results and replace one section of RESULTS.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
sys.path.insert(0, str(ROOT))

from edgeseg.fileio import write_bytes, write_json  # noqa: E402


def save_json(name: str, data: object) -> Path:
    return write_json(RESULTS_DIR / name, data)


def update_section(key: str, markdown: str) -> Path:
    """Replace the text between <!-- key --> and <!-- /key --> in RESULTS.md, or append the section."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    block = f"<!-- {key} -->\n{markdown.strip()}\n<!-- /{key} -->"
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return write_bytes(RESULTS_MD, text.encode())


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
