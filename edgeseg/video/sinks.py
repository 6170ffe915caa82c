"""Video sinks: the ``VideoSink`` base, a video file (.mp4, .avi, .mkv), an image folder and a window
(``display://``). The live view in a browser is in live.py; outputs.py opens any of them by URI.

A video file is written under a hidden temporary name (unique to the process) and renamed when
it is closed, so the final name only ever holds a finished, playable file; ``close`` runs on
every way out of ``edgeseg run`` (end of input, q, Ctrl-C, SIGTERM, SIGHUP, an error).

Write failures (a full disk, the file-size limit, an I/O error) are caught twice: OpenCV 5's
``VideoWriter.write`` returns False once FFmpeg fails to write (older OpenCV returns None and
says nothing), and after ``release`` the temporary file is opened again with OpenCV and must
hold every frame written, the last one decodable. A file that fails either check is deleted,
never renamed, and ``close`` raises one line naming the output and the fix.

A recording can be cut into segments (``segment_frames``): ``rec.mp4`` becomes ``rec_0000.mp4``,
``rec_0001.mp4``, ..., each one finished, checked and published when the next one starts. A muxer
keeps its file's index in memory until the file is closed (an mp4 about 73 bytes a frame), so a
recording that runs for days needs segments to keep memory flat; a killed run loses only the
segment it was writing.

Existing outputs are never replaced silently: ``check_video_file`` and ``check_image_folder`` refuse
an existing file or a non-empty folder unless ``exist_ok``. With ``exist_ok`` a file is replaced when the new one is
finished, and a folder loses only the files of the sink's own pattern (``frame_NNNNNN.png``),
so no old frame is mixed with new ones and nothing else in the folder is touched.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import check_output_path

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DISPLAY = "display://"
QUIT_KEYS = (ord("q"), 27)  # q, Esc
FRAME_NAME = "frame_{:06d}.png"
FRAME_PATTERN = re.compile(r"frame_\d{6,}\.png")  # the names ImageFolderSink writes, and only those
LOW_SPACE_BYTES = 1 << 20


class VideoSink:
    uri: str

    def write(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output; raises EdgesegError if it could not be finished (nothing is published then)."""

    # Optional: told what the frames show. Only the live view (edgeseg/video/live.py) uses them.
    def describe(self, meta) -> None:
        """Called once before the first frame with the model's ModelMeta (class names, palette)."""

    def observe(self, stats, labels: np.ndarray) -> None:
        """Called after each frame is written, with the run's RunStats and the frame's class ids."""


class VideoFileSink(VideoSink):
    def __init__(self, uri: str, fps: float, size: tuple[int, int] | None = None, exist_ok: bool = False,
                 segment_frames: int | None = None) -> None:  # fmt: skip
        self.uri, self.fps, self.segment_frames = uri, fps, segment_frames
        check_video_file(uri, exist_ok, segmented=segment_frames is not None)
        if segment_frames is not None:
            _remove_old_segments(Path(uri))  # only with exist_ok can any exist: never mix two recordings
        self.segment = 0
        self._target(0)
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0  # in the current file
        self.failed = False
        if size is not None:  # known up front: fail before the run, not at its first frame
            self._writer = self._open(*size)

    def _target(self, segment: int) -> None:
        """Point the sink at segment ``segment``'s final and temporary names."""
        base = Path(self.uri)
        self.path = segment_path(base, segment) if self.segment_frames is not None else base
        self.partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial{self.path.suffix}")

    def write(self, image: np.ndarray) -> None:
        if self.segment_frames is not None and self.frames == self.segment_frames:
            self.close()  # publishes this segment (or raises, and the run stops)
            self.segment += 1
            self._target(self.segment)
            self.frames = 0
        if self._writer is None:
            self._writer = self._open(image.shape[1], image.shape[0])
        elif self._size != (image.shape[1], image.shape[0]):
            raise EdgesegError(f"{self.uri}: frames are {image.shape[1]}x{image.shape[0]}, the file was opened for "
                               f"{self._size[0]}x{self._size[1]}; open the sink with the output's size or none")  # fmt: skip
        if self._writer.write(image) is False:  # OpenCV >= 5 reports FFmpeg's write errors; 4.x returns None
            self.failed = True
            raise EdgesegError(self._failure(f"writing frame {self.frames + 1} failed"))
        self.frames += 1

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        self._size = (width, height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EdgesegError(f"--out {self.uri}: cannot create {self.path.parent} ({err.strerror}); choose a writable path") from None
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.partial), cv2.CAP_FFMPEG, fourcc, self.fps, (width, height))
        if not writer.isOpened():
            self.partial.unlink(missing_ok=True)
            raise EdgesegError(f"{self.uri}: OpenCV cannot write {self.path.suffix} video here; use .avi (MJPG) or an image folder")
        return writer

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        _return_freed_heap()  # the muxer's index of this file was just freed
        try:
            if self.failed or not self.frames:  # nothing written, or already reported: leave nothing behind
                return
            if not _holds_frames(self.partial, self.frames):
                self.failed = True
                raise EdgesegError(self._failure(f"the finished file does not hold the {self.frames} frames written"))
            os.replace(self.partial, self.path)
        finally:
            if self.failed or not self.frames:
                self.partial.unlink(missing_ok=True)

    def _failure(self, what: str) -> str:
        return f"--out {self.uri}: {what} ({_write_failure_cause(self.partial)}); nothing was saved; {_FIX}"


_FIX = "free disk space, raise the file-size limit (ulimit -f) or choose another --out"


def _return_freed_heap() -> None:
    """Give glibc's freed heap back to the system (malloc_trim), where there is glibc.

    FFmpeg frees a closed file's index and buffers, but glibc keeps the pages in its per-thread
    arenas; over a recording cut into many segments that reads as slow growth of the process.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        pass


def _holds_frames(path: Path, frames: int) -> bool:
    """Whether OpenCV reads back a container with ``frames`` frames whose last frame decodes.

    A file cut short by a failed write has no mp4 index (OpenCV cannot open it), or an AVI or
    Matroska header that counts fewer (or no) frames; both are caught here.
    """
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened() or int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) != frames:
            return False
        capture.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        ok, _ = capture.read()
        return bool(ok)
    finally:
        capture.release()


def _write_failure_cause(path: Path) -> str:
    """The likely cause, from what can still be asked: free space and the file-size limit."""
    try:
        if shutil.disk_usage(path.parent).free < LOW_SPACE_BYTES:
            return f"the disk is full: {os.strerror(errno.ENOSPC)}"
    except OSError:
        pass
    try:
        import resource  # Unix only
    except ImportError:
        return "a full disk or an I/O error"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return f"the file-size limit of {soft} bytes was reached: {os.strerror(errno.EFBIG)}"
    return "a full disk, the file-size limit or an I/O error"


class ImageFolderSink(VideoSink):
    def __init__(self, uri: str, exist_ok: bool = False) -> None:
        self.uri, self.folder = uri, Path(uri)
        check_image_folder(uri, exist_ok)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in _own_frames(self.folder):  # a previous run's frames: never mixed with this run's
                old.unlink()
        except OSError as err:
            raise EdgesegError(f"--out {uri}: cannot prepare the folder ({err.strerror}); choose a writable path") from None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        from edgeseg.core.images import write_image

        try:
            write_image(self.folder / FRAME_NAME.format(self.frames), image)
        except OSError as err:
            raise EdgesegError(f"--out {self.uri}: writing frame {self.frames + 1} failed ({err.strerror}); {_FIX}") from None
        self.frames += 1


class DisplaySink(VideoSink):
    """An OpenCV window. Keys: q or Esc quits, space pauses, s saves a snapshot."""

    def __init__(self, title: str = "edgeseg", snapshot_dir: Path = Path(".")) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EdgesegError(f"{DISPLAY}: no screen here (DISPLAY is not set); pass --no-show and an --out file or folder")
        self.uri, self.title, self.snapshot_dir = DISPLAY, title, snapshot_dir
        self.quit = self.paused = False
        self.stop: threading.Event | None = None  # the run's stop event: a signal ends a pause too
        self._last: np.ndarray | None = None
        self._snapshots = 0

    def write(self, image: np.ndarray) -> None:
        self._last = image
        cv2.imshow(self.title, image)
        self._handle(cv2.waitKey(1) & 0xFF)
        while self.paused and not self.quit and not (self.stop is not None and self.stop.is_set()):
            self._handle(cv2.waitKey(50) & 0xFF)

    def _handle(self, key: int) -> None:
        if key in QUIT_KEYS:
            self.quit = True
        elif key == ord(" "):
            self.paused = not self.paused
        elif key == ord("s") and self._last is not None:
            from edgeseg.core.images import write_image

            path = write_image(self.snapshot_dir / f"snapshot_{self._snapshots:03d}.png", self._last)
            self._snapshots += 1
            print(f"snapshot: {path}")

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def segment_path(base: Path, segment: int) -> Path:
    """``rec.mp4`` -> ``rec_0003.mp4`` for segment 3."""
    return base.with_name(f"{base.stem}_{segment:04d}{base.suffix}")


def _old_segments(base: Path) -> list[Path]:
    if not base.parent.is_dir():
        return []
    pattern = re.compile(re.escape(base.stem) + r"_\d{4,}" + re.escape(base.suffix))
    return [p for p in base.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()]


def _remove_old_segments(base: Path) -> None:
    try:
        for old in _old_segments(base):
            old.unlink()
    except OSError as err:
        raise EdgesegError(f"--out {base}: cannot remove an earlier recording's segments ({err.strerror}); choose another --out") from None


def check_video_file(uri: str, exist_ok: bool = False, segmented: bool = False) -> None:
    """Refuse, in one line and before any work, a video file that cannot be written or would replace something."""
    path = Path(uri)
    if path.is_dir():
        raise EdgesegError(f"--out {uri}: is a folder; pass a file name, or a folder name without a video suffix for frames")
    if path.exists() and not exist_ok and not segmented:
        raise EdgesegError(f"--out {uri}: file exists; choose another name, or pass --exist-ok to replace it when the new one is finished")
    if segmented and _old_segments(path) and not exist_ok:
        raise EdgesegError(f"--out {uri}: segments of an earlier recording exist ({_old_segments(path)[0].name}, ...); "
                           "choose another name, or pass --exist-ok to delete them and record anew")  # fmt: skip
    check_output_path(path, "--out")


def check_image_folder(uri: str, exist_ok: bool = False) -> None:
    """Refuse, in one line and before any work, a frame folder that cannot be written or holds other files."""
    path = Path(uri)
    if path.suffix and not path.is_dir():
        raise EdgesegError(f"--out {uri}: unknown output kind {path.suffix.lower()}; use .mp4, .avi, .mkv, a folder, or display://")
    if path.exists() and not path.is_dir():
        raise EdgesegError(f"--out {uri}: is a file; pass a folder for the frames, or a .mp4/.avi name for a video")
    if path.is_dir() and any(path.iterdir()) and not exist_ok:
        raise EdgesegError(f"--out {uri}: folder is not empty; choose another, or pass --exist-ok to delete its old frame_*.png and write new ones")
    check_output_path(path, "--out", folder=True)


def _own_frames(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if FRAME_PATTERN.fullmatch(p.name) and p.is_file()]
