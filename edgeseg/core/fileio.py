"""Writes that never leave a half-written file under the final name."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence, Union

from edgeseg.core.errors import EdgesegError

PathArg = Union[str, Path, None]  # typing's aliases: collections.abc's cannot be subscripted on Python 3.8
Paths = Union[PathArg, Sequence[PathArg]]
# errno of a write that failed for want of room: (what happened, what to do)
OUT_OF_ROOM = {
    errno.ENOSPC: ("the disk is full", "free disk space"),
    errno.EDQUOT: ("the disk quota is used up", "free space in the quota"),
    errno.EFBIG: ("the file-size limit (ulimit -f) was reached", "raise the limit"),
}


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


def out_of_room(err: OSError, flag: str, path: str | Path) -> EdgesegError | None:
    """The one line for a write that failed for want of room (full disk, quota, ``ulimit -f``); None for other errors."""
    if err.errno not in OUT_OF_ROOM:
        return None
    cause, fix = OUT_OF_ROOM[err.errno]
    return EdgesegError(f"{flag} {path}: {cause} ({err.strerror}); nothing was saved; {fix} or choose another {flag}")


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


def check_outputs(
    outputs: Mapping[str, Paths],
    exist_ok: bool,
    inputs: Mapping[str, Paths] | None = None,
    folders: Collection[str] = (),
    own_rules: Collection[str] = (),
) -> None:
    """The one rule for every file a command writes, applied before any work, each breach one line.

    ``outputs`` maps a flag (or a label such as ``--plots (beside --json)``) to the path(s) it writes;
    ``inputs`` maps a flag to the path(s) the command reads. Refused: two outputs naming one file,
    an output naming an input (or a folder output holding one), an existing file unless ``exist_ok``
    (a non-empty folder for the flags in ``folders``), and a place where nothing can be written.
    ``own_rules``: flags whose existing outputs the command judges itself (``export --out`` replaces
    an earlier export whole, ``run --out`` cuts segments); they take part in the same-file checks only.
    """
    claimed = _claims(outputs)
    _refuse_shared(claimed, _claims(inputs or {}), set(outputs) - set(folders) - set(own_rules))
    for flag, path in claimed:
        if flag in own_rules:
            continue
        folder = flag in folders
        check_output_path(path, flag, folder=folder)
        if folder and path.is_dir() and any(path.iterdir()) and not exist_ok:
            raise EdgesegError(f"{flag} {path}: folder exists and is not empty; choose another or pass --exist-ok")
        if not folder and path.exists() and not exist_ok:
            raise EdgesegError(f"{flag} {path}: file exists; choose another name, or pass --exist-ok to replace it")


def _claims(named: Mapping[str, Paths]) -> list[tuple[str, Path]]:
    """(flag, path) for every path given; strings that name no file (URLs, display://) are left out."""
    pairs = []
    for flag, value in named.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        pairs += [(flag, Path(v)) for v in values if v is not None and "://" not in str(v)]
    return pairs


def _refuse_shared(outputs: list[tuple[str, Path]], inputs: list[tuple[str, Path]], file_flags: set[str]) -> None:
    """Two outputs naming one file (or one file another's folder); an output naming an input, or a folder holding one.
    ``file_flags``: the flags known to name files (not folders)."""
    seen: dict[str, tuple[str, Path]] = {}
    for flag, path in outputs:
        key = _identity(path)
        if key in seen:
            first_flag, first = seen[key]
            both = f"{first_flag} {first} and {flag} {path}" if (first_flag, first) != (flag, path) else f"{flag} {path} twice"
            raise EdgesegError(f"{both}: two outputs name the same file; give each its own name")
        seen[key] = (flag, path)
    for flag, path in outputs:
        above = {_identity(parent) for parent in _parents(path)}
        for other_flag, other in outputs:
            if other_flag in file_flags and _identity(other) in above:
                raise EdgesegError(f"{other_flag} {other} and {flag} {path}: one file cannot also be the folder of "
                                   "another output; give each its own place")  # fmt: skip
    for in_flag, source in inputs:
        if not source.exists():
            continue
        holders = {_identity(parent) for parent in _parents(source)}
        for flag, path in outputs:
            if _identity(path) == _identity(source):
                raise EdgesegError(f"{flag} {path}: is the {in_flag} input, which writing it would destroy; choose another name")
            if (flag not in file_flags or path.is_dir()) and _identity(path) in holders:
                raise EdgesegError(f"{flag} {path}: holds the {in_flag} input {source}; choose a folder of its own")


def _parents(path: Path) -> list[Path]:
    return list(Path(os.path.realpath(path)).parents)


def _identity(path: Path) -> str:
    """One name per file: symbolic links and ``..`` resolved, hard links by device and inode."""
    try:
        stat = path.stat()
        return f"inode:{stat.st_dev}:{stat.st_ino}"
    except OSError:
        return os.path.normcase(os.path.realpath(path))
