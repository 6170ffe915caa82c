"""Video sinks named by URI: ``display://``, a video file (.mp4, .avi), or an image folder.

A video file is written under a hidden temporary name and renamed when it is closed, so the
final name only ever holds a finished, playable file; ``close`` runs on every way out of
``edgeseg run`` (end of input, q, Ctrl-C, an error).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from edgeseg.errors import EdgesegError

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DISPLAY = "display://"
QUIT_KEYS = (ord("q"), 27)  # q, Esc


class VideoSink:
    uri: str

    def write(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output."""


class VideoFileSink(VideoSink):
    def __init__(self, uri: str, fps: float, size: tuple[int, int] | None = None) -> None:
        self.uri, self.path, self.fps = uri, Path(uri), fps
        self.partial = self.path.with_name(f".{self.path.name}.partial{self.path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0
        _check_writable(self.path, uri)
        if size is not None:  # known up front: fail before the run, not at its first frame
            self._writer = self._open(*size)

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._writer = self._open(image.shape[1], image.shape[0])
        elif self._size != (image.shape[1], image.shape[0]):
            raise EdgesegError(f"{self.uri}: frames are {image.shape[1]}x{image.shape[0]}, the file was opened for "
                               f"{self._size[0]}x{self._size[1]}; open the sink with the output's size or none")  # fmt: skip
        self._writer.write(image)
        self.frames += 1

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        self._size = (width, height)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.partial), cv2.CAP_FFMPEG, fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise EdgesegError(f"{self.uri}: OpenCV cannot write {self.path.suffix} video here; use .avi (MJPG) or an image folder")
        return writer

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.frames:
            os.replace(self.partial, self.path)
        else:  # nothing written: leave no empty file behind
            self.partial.unlink(missing_ok=True)


class ImageFolderSink(VideoSink):
    def __init__(self, uri: str) -> None:
        self.uri, self.folder = uri, Path(uri)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EdgesegError(f"{uri}: cannot create the folder ({err.strerror}); choose a writable path") from None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        from edgeseg.images import write_image

        write_image(self.folder / f"frame_{self.frames:06d}.png", image)
        self.frames += 1


class DisplaySink(VideoSink):
    """An OpenCV window. Keys: q or Esc quits, space pauses, s saves a snapshot."""

    def __init__(self, title: str = "edgeseg", snapshot_dir: Path = Path(".")) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EdgesegError(f"{DISPLAY}: no screen here (DISPLAY is not set); pass --no-show and an --out file or folder")
        self.uri, self.title, self.snapshot_dir = DISPLAY, title, snapshot_dir
        self.quit = self.paused = False
        self._last: np.ndarray | None = None
        self._snapshots = 0

    def write(self, image: np.ndarray) -> None:
        self._last = image
        cv2.imshow(self.title, image)
        self._handle(cv2.waitKey(1) & 0xFF)
        while self.paused and not self.quit:
            self._handle(cv2.waitKey(50) & 0xFF)

    def _handle(self, key: int) -> None:
        if key in QUIT_KEYS:
            self.quit = True
        elif key == ord(" "):
            self.paused = not self.paused
        elif key == ord("s") and self._last is not None:
            from edgeseg.images import write_image

            path = write_image(self.snapshot_dir / f"snapshot_{self._snapshots:03d}.png", self._last)
            self._snapshots += 1
            print(f"snapshot: {path}")

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def open_sink(uri: str, fps: float, size: tuple[int, int] | None = None) -> VideoSink:
    """A sink for ``uri``; ``size`` (width, height), when known, opens a video file at once."""
    if uri == DISPLAY:
        return DisplaySink()
    suffix = Path(uri).suffix.lower()
    if suffix in VIDEO_CODECS:
        return VideoFileSink(uri, fps, size)
    if suffix and not Path(uri).is_dir():
        raise EdgesegError(f"--out {uri}: unknown output kind {suffix}; use .mp4, .avi, a folder, or display://")
    return ImageFolderSink(uri)


def _check_writable(path: Path, uri: str) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EdgesegError(f"--out {uri}: cannot create {folder} ({err.strerror}); choose a writable path") from None
    if not os.access(folder, os.W_OK):
        raise EdgesegError(f"--out {uri}: {folder} is not writable; choose another path")
