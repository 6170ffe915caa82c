"""Live video: sources and outputs named by URI, and the threaded read -> infer -> render -> write pipeline. Torch-free.

  sources   video sources by URI (cameras, files, folders, streams)     outputs   opens any output by URI
  sinks     the VideoSink base, video files, image folders, a window    live      the live view in a browser
  render    what a frame looks like drawn                               stats     the run's figures and report
  threads   signals, priorities, OpenCV's pool, the worker threads      pipeline  run_video: the frame's path
  session   run_session: one ``edgeseg run`` by names (check, open, run, report)
"""

from edgeseg.video.outputs import check_output, open_sink
from edgeseg.video.pipeline import RunOptions, run_video
from edgeseg.video.session import run_session
from edgeseg.video.sources import SourceOptions, open_source
from edgeseg.video.stats import RunStats, StreamingStats, exit_code, format_stats

__all__ = ["RunOptions", "RunStats", "SourceOptions", "StreamingStats", "check_output", "exit_code", "format_stats", "open_sink",
           "open_source", "run_session", "run_video"]  # fmt: skip
