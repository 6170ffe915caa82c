"""Compare two runs of scripts/main_job.sh: every figure of the proofs equal, timings aside.

    python scripts/compare_main_job.py BEFORE_OUT AFTER_OUT      (e.g. a copy of out/main, then out/main)

Walks every leaf of export/export.json, export/parity.json, export/fidelity.json, eval/camvid.json and
verify/{fp16,int8}.json in both folders and prints each that differs, except timings (``seconds``).
Hashes are compared too, but reported apart: a model file that changed while every figure stayed equal
is worth knowing. Exit 1 when a figure differs. Used for the refactor of issue 24 (docs/design.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

FILES = ("export/export.json", "export/parity.json", "export/fidelity.json", "eval/camvid.json",
         "verify/fp16.json", "verify/int8.json")  # fmt: skip
TIMINGS = ("seconds",)


def leaves(value: Any, path: str = "") -> Iterator[Tuple[str, Any]]:
    """(``/a/b[0]/c``, value) for every number, string, bool or null in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def differences(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """Every leaf whose value differs (or that only one side has), timings left out."""
    keys = sorted(set(before) | set(after))
    return {k: (before.get(k), after.get(k)) for k in keys
            if before.get(k) != after.get(k) and not any(t in k for t in TIMINGS)}  # fmt: skip


def compare(before_dir: Path, after_dir: Path) -> int:
    figures_differ = 0
    for name in FILES:
        old = dict(leaves(json.loads((before_dir / name).read_text())))
        new = dict(leaves(json.loads((after_dir / name).read_text())))
        changed = differences(old, new)
        hashes = {k: v for k, v in changed.items() if k.endswith("sha256")}
        figures = {k: v for k, v in changed.items() if k not in hashes}
        figures_differ += len(figures)
        print(f"{name}: {len(old)} values before, {len(new)} after; {len(figures)} differ, {len(hashes)} hashes differ")
        for key, (was, now) in list(figures.items())[:30] + list(hashes.items()):
            print(f"    {key}: {was!r} -> {now!r}")
    return 1 if figures_differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
