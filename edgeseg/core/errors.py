"""The one exception users see: a one-line message that names the file or flag and the fix."""


class EdgesegError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits non-zero, no traceback."""
