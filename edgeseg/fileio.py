"""Writes that never leave a half-written file under the final name."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeseg.errors import EdgesegError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name is created by the caller's own open (not mkstemp, whose 0600 mode
    would carry over to the final file), so the file gets the usual umask permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, payload: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_json(path: str | Path, data: object) -> Path:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return write_bytes(path, text.encode())


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_output_dir(out: Path, exist_ok: bool, flag: str) -> None:
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{flag} {out}: is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not exist_ok:
        raise EdgesegError(f"{flag} {out}: folder exists and is not empty; choose another or pass --exist-ok")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EdgesegError(f"{flag} {out}: cannot create the folder ({err.strerror}); choose a writable path") from None
