"""Deterministic weights in the seed repository's state_dict layout, built from the shared key list.

The same weights are fed to the seed's own code (see tests/fixtures/make_seed_logits.py) and
to ours, so the recorded seed logits can be compared without shipping the seed's code.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed_state_dict_keys.txt"


def read_seed_layout(path: Path = KEYS_FILE) -> list[tuple[str, str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        key, dtype, shape = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
        rows.append((key, dtype, dims))
    return rows


def _tensor_for(key: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return np.array(0, dtype=np.int64)
    if key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def synthetic_seed_state_dict(num_classes: int = 21) -> dict[str, np.ndarray]:
    state = {}
    for key, _dtype, shape in read_seed_layout():
        if key.startswith("cls_conv."):
            shape = (num_classes,) + shape[1:]
        state[key] = _tensor_for(key, shape)
    return state
