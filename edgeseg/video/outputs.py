"""Outputs named by URI: ``display://`` (a window), a video file (.mp4, .avi, .mkv), an image folder, or
``http://HOST:PORT`` (the live view in a browser). ``check_output`` refuses a bad one before any work,
``open_sink`` opens it; the sinks themselves are in sinks.py and live.py."""

from __future__ import annotations

from pathlib import Path

from edgeseg.video.live import LiveSink, check_live, is_live_uri
from edgeseg.video.sinks import (
    DISPLAY,
    VIDEO_CODECS,
    DisplaySink,
    ImageFolderSink,
    VideoFileSink,
    VideoSink,
    check_image_folder,
    check_video_file,
)


def open_sink(uri: str, fps: float, size: tuple[int, int] | None = None, exist_ok: bool = False,
              segment_frames: int | None = None) -> VideoSink:  # fmt: skip
    """A sink for ``uri``; ``size`` (width, height), when known, opens a video file at once.
    ``exist_ok``: replace an existing video file, or clear a folder's old frames (see sinks.py).
    ``segment_frames``: cut a video file into files of this many frames (``NAME_0000.EXT``, ...)."""
    if uri == DISPLAY:
        return DisplaySink()
    if is_live_uri(uri):
        return LiveSink(uri)
    if _is_video_file(uri):
        return VideoFileSink(uri, fps, size, exist_ok, segment_frames)
    return ImageFolderSink(uri, exist_ok)


def check_output(uri: str, exist_ok: bool = False, segmented: bool = False) -> None:
    """Refuse, in one line and before any work, an output that cannot be written or would replace something."""
    if uri == DISPLAY:
        return
    if is_live_uri(uri):
        check_live(uri)
    elif _is_video_file(uri):
        check_video_file(uri, exist_ok, segmented)
    else:
        check_image_folder(uri, exist_ok)


def _is_video_file(uri: str) -> bool:
    return Path(uri).suffix.lower() in VIDEO_CODECS


__all__ = ["check_output", "open_sink"]
