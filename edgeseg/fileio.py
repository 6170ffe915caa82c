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


def check_output_path(path: Path | None, flag: str, folder: bool = False) -> None:
    """Refuse an output that cannot be written before the work that fills it, not after.

    ``folder``: ``path`` is a folder to write into, else a file. Nothing is created: the nearest
    existing folder must take a new file (tried with a probe file, which is removed at once).
    """
    if path is None:
        return
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise EdgesegError(f"{flag} {path}: is a file; pass a folder")
    if not folder and path.is_dir():
        raise EdgesegError(f"{flag} {path}: is a folder; give a file name, e.g. {path / 'results.json'}")
    start = path.absolute() if folder else path.absolute().parent
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        raise EdgesegError(f"{flag} {path}: {existing} is a file, not a folder; choose another path")
    probe = existing / f".edgeseg-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise EdgesegError(f"{flag} {path}: cannot write in {existing} ({err.strerror}); choose a writable place") from None
