"""Video sources named by URI, like jetson-inference's videoSource.

  0, /dev/video0          a camera (OpenCV device index or V4L2 node)          live
  csi://0                 a Jetson CSI camera through nvarguscamerasrc          live
  rtsp://, http(s)://, rtmp://, udp://, tcp://   a network stream              live
  "... ! appsink"         any GStreamer pipeline (OpenCV built with GStreamer)  live
  clip.mp4                a video file                                          every frame
  frames/, 'frames/*.png' an image folder or glob                                every frame

A live source hands over the newest frame and drops stale ones; a file or folder hands over
every frame. ``reopen`` reconnects a live source that dropped.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.images import IMAGE_SUFFIXES, images_in, is_image

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264", ".mjpeg")
OPEN_TIMEOUT_MS = 5000

# OpenCV and FFmpeg log lines of their own for every failed open; edgeseg reports failures itself.
# (JetPack 5.1's OpenCV 4.5.4 has no cv2.utils.logging; it then keeps its own log level.)
_CV_LOG = getattr(getattr(cv2, "utils", None), "logging", None)
if _CV_LOG is not None:
    _CV_LOG.setLogLevel(_CV_LOG.LOG_LEVEL_SILENT)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used


@dataclass(frozen=True)
class SourceOptions:
    """What a run asks of its source. ``width``/``height``/``fps``: asked of a camera, applied to files and
    folders (``fps`` is a folder's frame rate). ``loop``: start a file or folder again at its end.
    ``decode_threads``: FFmpeg's decoder threads (default: its own choice, one per core); one when a
    model on the CPU needs the cores: FFmpeg's frame threads cost 10 to 100 % more CPU a frame."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    loop: bool = False
    decode_threads: int | None = None


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8
    index: int
    captured: float  # time.perf_counter() when it was read


class VideoSource:
    uri: str
    is_live: bool = False
    fps: float = 30.0

    def read(self) -> Frame | None:
        """The next frame, or None at the end (file) or when the stream dropped (live)."""
        raise NotImplementedError

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        """Release the device or file."""


class CaptureSource(VideoSource):
    """Anything OpenCV's VideoCapture opens: cameras, files, network streams, GStreamer pipelines."""

    def __init__(self, uri: str, target: int | str, api: int, is_live: bool, options: SourceOptions) -> None:
        self.uri, self.is_live, self.loop = uri, is_live, options.loop
        self.decode_threads = options.decode_threads
        self._target, self._api, self._settings = target, api, (options.width, options.height, options.fps)
        self._index = 0
        self._capture = self._open()
        if self._capture is None:
            raise EdgesegError(_cannot_open(uri, is_live))
        if not is_live and not self._capture.grab():  # a file OpenCV opens but cannot decode
            self._capture.release()
            raise EdgesegError(f"{uri}: not a video OpenCV can decode; pass an .mp4/.avi file, a folder of images or a camera")
        if not is_live:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        reported = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(options.fps or (reported if 1 <= reported <= 240 else 30.0))

    def _open(self) -> cv2.VideoCapture | None:
        params = []
        if self._api == cv2.CAP_FFMPEG:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
            if self.decode_threads and hasattr(cv2, "CAP_PROP_N_THREADS"):  # OpenCV 4.6 and newer
                params += [cv2.CAP_PROP_N_THREADS, self.decode_threads]
        capture = cv2.VideoCapture(self._target, self._api, params)
        if not capture.isOpened():
            capture.release()
            return None
        width, height, fps = self._settings
        if self.is_live:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short: less lag
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height), (cv2.CAP_PROP_FPS, fps)):
                if value:
                    capture.set(prop, value)
        return capture

    def read(self) -> Frame | None:
        if self._capture is None:
            return None
        ok, image = self._capture.read()
        if not ok and self.loop and not self.is_live:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok or image is None:
            return None
        frame = Frame(_resize(image, self._settings), self._index, time.perf_counter())
        self._index += 1
        return frame

    def reopen(self) -> bool:
        self.close()
        self._capture = self._open()
        return self._capture is not None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageFolderSource(VideoSource):
    def __init__(self, uri: str, paths: list[Path], options: SourceOptions) -> None:
        self.uri, self.paths, self.loop = uri, paths, options.loop
        self._settings = (options.width, options.height, options.fps)
        self.fps = float(options.fps or 30.0)
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.paths):
            if not self.loop:
                return None
        path = self.paths[self._index % len(self.paths)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EdgesegError(f"{self.uri}: cannot read {path}; remove or replace it")
        frame = Frame(_resize(image, self._settings), self._index, time.perf_counter())
        self._index += 1
        return frame


def open_source(uri: str, options: SourceOptions | None = None) -> VideoSource:
    """The source ``uri`` names (see the module's text), opened with ``options``."""
    options = options or SourceOptions()
    uri = str(uri).strip()
    live = replace(options, loop=False)  # a live source never loops; FFmpeg alone takes decode_threads
    if uri.isdigit() or uri.startswith("/dev/video"):
        target: int | str = int(uri) if uri.isdigit() else uri
        return CaptureSource(uri, target, cv2.CAP_ANY, True, live)
    if uri.startswith("csi://"):
        pipeline = csi_pipeline(uri, options.width, options.height, options.fps)
        return CaptureSource(uri, _gstreamer(pipeline, uri), cv2.CAP_GSTREAMER, True, live)
    if uri.startswith(NETWORK_SCHEMES):
        if uri.startswith(("rtsp://", "rtsps://")):
            # TCP, no buffering: a lost UDP packet smears frames, and buffering is the seconds of lag users see.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay")
        return CaptureSource(uri, uri, cv2.CAP_FFMPEG, True, live)
    if "!" in uri:
        return CaptureSource(uri, _gstreamer(uri, uri), cv2.CAP_GSTREAMER, True, live)
    path = Path(uri)
    if path.is_file():
        return CaptureSource(uri, str(path), cv2.CAP_FFMPEG, False, options)
    images = _images(uri)
    if images:
        return ImageFolderSource(uri, images, options)
    if path.is_dir():
        raise EdgesegError(f"{uri}: folder has no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder of frames")
    raise EdgesegError(f"{uri}: no such file, folder, camera or stream; pass --camera N, a file, a folder or a URL")


def csi_pipeline(uri: str, width: int | None, height: int | None, fps: float | None) -> str:
    sensor = uri[len("csi://") :] or "0"  # str.removeprefix is Python 3.9; JetPack 5.1 has 3.8
    width, height, fps = width or 1280, height or 720, int(fps or 30)
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},height={height},"
        f"framerate={fps}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=1 max-buffers=1"
    )


def has_gstreamer() -> bool:
    return any(line.strip().startswith("GStreamer:") and "YES" in line for line in cv2.getBuildInformation().splitlines())


def _gstreamer(pipeline: str, uri: str) -> str:
    if not has_gstreamer():
        raise EdgesegError(
            f"{uri}: this OpenCV has no GStreamer support; on a Jetson use JetPack's OpenCV "
            "(pip uninstall opencv-python), or pass a camera index, file or URL"
        )
    return pipeline


def _images(uri: str) -> list[Path]:
    path = Path(uri)
    if path.is_dir():
        return images_in(path)
    return sorted(Path(p) for p in glob.glob(uri) if is_image(Path(p)))


def _cannot_open(uri: str, is_live: bool) -> str:
    if uri.isdigit():  # what --camera N passes
        return f"--camera {uri}: no camera there; list cameras with `ls /dev/video*` and pass an index that exists"
    if uri.startswith("/dev/video"):
        return f"--source {uri}: no camera there; list cameras with `ls /dev/video*` and pass one that exists"
    if uri.startswith(NETWORK_SCHEMES):
        return f"{uri}: cannot open the stream within {OPEN_TIMEOUT_MS // 1000} s; check the URL, the network and that the server is up"
    return f"{uri}: OpenCV cannot open it; pass a video file, an image folder, a camera or a URL"


def _resize(image: np.ndarray, settings: tuple) -> np.ndarray:
    """Apply --width/--height to files and folders, and to cameras that ignored the request."""
    width, height, _ = settings
    if not (width and height) or (image.shape[1], image.shape[0]) == (width, height):
        return image
    return cv2.resize(image, (int(width), int(height)), interpolation=cv2.INTER_AREA)
