"""`python -m edgeseg`: the same entry point, and the same exit codes, as the `edgeseg` command."""

import atexit
import os
import sys

from edgeseg.cli import run

try:
    run()
except SystemExit as done:
    if done.code != 130:
        raise
    # Under `python -m`, CPython ends the process by SIGINT (-2), whatever code sys.exit asked for, once a
    # KeyboardInterrupt has passed through code that an extension ran with PyRun_String, even though run()
    # caught it (Py_RunMain's unhandled-KeyboardInterrupt flag). So do the exit work here and keep 130.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
