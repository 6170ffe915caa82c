"""One run of ``edgeseg run``, by names: the outputs checked, the source, the model and the sinks opened,
``run_video``, and the report printed (and written).

The order is the point: every output is checked before the model loads (a refused output costs
nothing); the source opens before the model, at the helpers' priority (the decoder threads FFmpeg
starts there keep it), because a camera and a file get different copies of the model
(``auto_streams``); the drawing options are checked against the model's classes before an output
is created. Signals stop the run from the start: one during loading ends it before its first frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_json
from edgeseg.runtime import Segmenter
from edgeseg.runtime.backends import runs_on_cpu
from edgeseg.video.outputs import check_output, open_sink
from edgeseg.video.pipeline import RunOptions, renderer_for, run_video
from edgeseg.video.sinks import VideoSink
from edgeseg.video.sources import SourceOptions, open_source
from edgeseg.video.stats import format_stats
from edgeseg.video.threads import HELPER_NICENESS, at_priority, stop_on_signals


def run_session(model: str | Path, source_uri: str, sink_uris: Sequence[str], options: RunOptions | None = None) -> dict:
    """Segment the source ``source_uri`` names into the outputs ``sink_uris`` name with ``model``
    (sources.py and outputs.py list the names); returns (and prints) the run's report.

    The report's ``exit_code`` says how the run ended (see pipeline.py); a write failure raises.
    """
    options = options or RunOptions()
    _check(sink_uris, options)
    on_cpu = runs_on_cpu(model, options.backend, options.device)  # the helpers share the CPU with the model: they make way for it
    with stop_on_signals() as stop, ExitStack() as opened:
        source = at_priority(HELPER_NICENESS if on_cpu else 0, lambda: open_source(source_uri, _source_options(options, on_cpu)))
        opened.callback(source.close)
        streams = options.streams or auto_streams(on_cpu, source.is_live or options.realtime, options.threads)
        segmenter = opened.enter_context(_load(model, options, streams))
        renderer_for(segmenter.meta, options)  # refused before an output is created
        sinks = _open_sinks(sink_uris, source.fps, options)
        stats = run_video(source, segmenter, sinks, options, stop)
    report = {"source": source_uri, "sinks": list(sink_uris), "streams": segmenter.streams, **stats.to_dict()}
    print(format_stats(report), flush=True)
    if options.stats_json is not None:
        try:
            write_json(options.stats_json, report)
        except OSError as err:
            raise EdgesegError(f"--json {options.stats_json}: cannot be written ({err.strerror}); choose a writable path") from None
    return report


def auto_streams(on_cpu: bool, paced: bool, threads: int | None) -> int:
    """Copies of the model for a run that leaves --streams out: 2 on a CPU with 2 threads or more, for a
    file or folder read as fast as it goes; 1 for a camera, a network stream or --realtime, whose
    frames must each come out soonest, and for a GPU.

    On 2 cores, two copies of one thread each run 4 to 10 % more frames a second than one copy of
    two threads (both INT8 models, benchmarks/video_fps.py): a layer's threads no longer wait for
    each other at its end.
    """
    if not on_cpu or paced or (threads or os.cpu_count() or 1) < 2:
        return 1
    return 2


def _check(sink_uris: Sequence[str], options: RunOptions) -> None:
    """Before the model loads: a refused output costs nothing."""
    if not sink_uris:
        raise EdgesegError("edgeseg run: no output; pass --out FILE_OR_FOLDER, or leave --show on")
    if options.segment_seconds is not None and not options.segment_seconds > 0:
        raise EdgesegError(f"--segment {options.segment_seconds}: give the length of each recording file in seconds, e.g. 600")
    for uri in sink_uris:
        check_output(uri, options.exist_ok, segmented=options.segment_seconds is not None)


def _open_sinks(sink_uris: Sequence[str], fps: float, options: RunOptions) -> list[VideoSink]:
    """Every output opened, or none: when one fails, those opened before it are closed (a live view's port freed)."""
    segment_frames = max(1, round(options.segment_seconds * fps)) if options.segment_seconds else None
    sinks: list[VideoSink] = []
    try:
        for uri in sink_uris:
            sinks.append(open_sink(uri, fps, exist_ok=options.exist_ok, segment_frames=segment_frames))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _source_options(options: RunOptions, on_cpu: bool) -> SourceOptions:
    decode_threads = 1 if on_cpu else None  # the cores belong to the model
    return SourceOptions(options.width, options.height, options.fps, options.loop, decode_threads)


def _load(model: str | Path, options: RunOptions, streams: int) -> Segmenter:
    backend_options = {"spin": options.spin, **({"threads": options.threads} if options.threads else {})}
    return Segmenter.load(model, backend=options.backend, device=options.device, streams=streams, **backend_options)


__all__ = ["auto_streams", "run_session"]
