"""The threads of ``edgeseg run``: the stop event that signals set, the helpers' lower priority, OpenCV's
thread pool, and the workers whose first error stops the run.

With a model on the CPU, the helper threads (drawing, writing, FFmpeg's, a file's capture) run
HELPER_NICENESS below the model's (on Linux): the threads of one copy of the model meet at a
barrier after every layer, so a helper that takes a core from one of them delays both; at a lower
priority the helpers use the moments the model leaves idle (benchmarks/video_fps.py).

SIGINT (Ctrl-C), SIGTERM (``docker stop``, systemd) and SIGHUP (a closed terminal) set the run's
stop event instead of ending the process; the handlers are installed for the run only, when it
runs in the main thread, and the previous ones restored after.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

HELPER_NICENESS = 10  # added to the capture, drawing and writer threads' nice value (Linux)
STOP_SIGNALS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}  # name -> exit code, 128 + the signal's number
T = TypeVar("T")


class StopEvent(threading.Event):
    """Set when the run must stop; ``signal`` names the signal that set it, if one did."""

    signal: str | None = None


@contextmanager
def stop_on_signals(stop: StopEvent | None = None) -> Iterator[StopEvent]:
    """SIGINT, SIGTERM and SIGHUP set ``stop`` (a new event if None) instead of ending the process; restored after."""
    stop = stop if stop is not None else StopEvent()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield stop
        return

    def handler(number: int, _frame) -> None:
        if stop.signal is None:
            stop.signal = signal.Signals(number).name
        stop.set()

    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None:
            previous[number] = signal.signal(number, handler)
    try:
        yield stop
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextmanager
def opencv_threads(count: int | None) -> Iterator[None]:
    """OpenCV's thread pool at ``count`` threads (0: none, each call runs in its caller's thread; None: left
    as it is) for the run only."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(previous if count is None else count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def lower_priority(niceness: int) -> None:
    """Lower the calling thread's priority by ``niceness`` (Linux: a thread is a task with its own nice value).

    Elsewhere ``setpriority`` would take the thread's id for a process id, so it is left alone.
    The threads a library starts from this thread (FFmpeg's encoder) inherit the lower priority.
    """
    if not niceness or not sys.platform.startswith("linux"):
        return
    try:
        thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, os.getpriority(os.PRIO_PROCESS, thread_id) + niceness))
    except (OSError, AttributeError):  # a sandbox that forbids it: run at the normal priority
        pass


def at_priority(niceness: int, call: Callable[[], T]) -> T:
    """``call()`` in a short-lived thread at the helpers' priority: the threads a library starts there
    (FFmpeg's decoder threads, GStreamer's) keep that priority for the run. Its error is raised here."""
    outcome: dict = {}

    def body() -> None:
        lower_priority(niceness)
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - raised again in the calling thread
            outcome["error"] = err

    thread = threading.Thread(target=body, daemon=True, name="open")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Workers:
    """The run's worker threads. The first error of any of them (or of ``run_here``) sets ``stop`` and is
    kept in ``error``, for the caller to raise once every sink is closed."""

    def __init__(self, stop: threading.Event, niceness: int) -> None:
        self.stop, self.niceness = stop, niceness  # niceness: added to a lowered worker's nice value
        self.threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    def start(self, name: str, body: Callable[[], None], lowered: bool = True) -> threading.Thread:
        """Run ``body`` in a daemon thread named ``name``, at the helpers' priority if ``lowered``."""
        thread = threading.Thread(target=self._guard, args=(body, lowered), daemon=True, name=name)
        self.threads.append(thread)
        thread.start()
        return thread

    def run_here(self, body: Callable[[], None]) -> None:
        """Run ``body`` in this thread (a window belongs to the main thread); an error stops the run like a worker's.
        KeyboardInterrupt is left to the caller."""
        try:
            body()
        except Exception as err:  # noqa: BLE001 - raised after the sinks are closed
            self._failed(err)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout=timeout)

    def _guard(self, body: Callable[[], None], lowered: bool) -> None:
        if lowered:
            lower_priority(self.niceness)
        try:
            body()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self._failed(err)

    def _failed(self, err: BaseException) -> None:
        self.error = self.error or err
        self.stop.set()
