"""Live video: sources and sinks named by URI, and the threaded capture -> inference -> render pipeline. Torch-free."""

from edgeseg.video.pipeline import RunStats, StreamingStats, exit_code, format_stats, run_video
from edgeseg.video.sinks import check_output, open_sink
from edgeseg.video.sources import open_source

__all__ = ["RunStats", "StreamingStats", "check_output", "exit_code", "format_stats", "open_sink", "open_source", "run_video"]
