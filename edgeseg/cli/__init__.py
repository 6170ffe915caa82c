"""The ``edgeseg`` command: parses arguments and calls the stages' functions, nothing else.

``app`` holds the commands in pipeline order: the workstation's (``workstation.py``), then those a
device runs too (``device.py``). Each command imports its stage when it runs, so ``edgeseg --help``
and the torch-free commands start fast and work without torch. ``run`` is the console entry point.
"""

from edgeseg.cli import workstation  # noqa: F401, I001 - registers train, calib-data, export, import-seed on app
from edgeseg.cli import device  # noqa: F401 - then eval, predict, build, verify, bench, run, doctor
from edgeseg.cli.app import app
from edgeseg.cli.entry import run

__all__ = ["app", "run"]
