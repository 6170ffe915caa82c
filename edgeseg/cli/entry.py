"""The console entry point: edgeseg's own errors, click's usage errors and Ctrl-C each end in one line."""

from __future__ import annotations

import sys
from typing import Any, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.core.errors import EdgesegError


def _main() -> None:
    """``app`` outside click's standalone mode, so that edgeseg decides what the user sees.

    Standalone, typer turns Ctrl-C into a silent exit 130 (older click: "Aborted!", exit 1)
    before ``run`` can say so, and prints usage errors as a multi-line panel.
    """
    click_error: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(standalone_mode=False)
    except typer.Abort as err:
        if isinstance(err.__cause__ or err.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except click_error as err:  # bad or missing options and arguments: one line, like edgeseg's own errors
        context = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError":
            err.show()  # the help text, as click shows it
        else:
            message = " ".join((_given(err) or err.format_message()).split()).rstrip(".")
            where = f"; see '{context.command_path} --help'" if context is not None else ""
            typer.echo(f"error: {message}{where}", err=True)
        sys.exit(err.exit_code)
    if code == 130:  # typer's own answer to KeyboardInterrupt, and `run`'s after SIGINT: both are "interrupted"
        raise KeyboardInterrupt
    sys.exit(code if isinstance(code, int) else 0)


def _given(err: Any) -> Optional[str]:
    """"--iters 0: <what is wrong>" for a bad option value, in edgeseg's style (click's range
    messages leave the value out); None when the option is not found as typed."""
    param, args = getattr(err, "param", None), sys.argv[1:]
    if param is None or not getattr(err, "message", ""):
        return None
    for opt in getattr(param, "opts", ()):
        for index, arg in enumerate(args):
            if arg == opt:
                value = " ".join(args[index + 1 : index + 1 + max(1, param.nargs)])
            elif arg.startswith(opt + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            return f"{opt} {value}: {err.message}" if opt.startswith("-") else None
    return None


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        _main()
    except EdgesegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as err:
        hint = _missing_module_hint((err.name or "").split(".")[0])
        if hint is None:
            raise
        typer.echo(f"error: {hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _missing_module_hint(module: str) -> Optional[str]:
    """The one-line fix for an optional module that is missing at first use; None for any other module."""
    if module == "cv2":
        return ("OpenCV (cv2) is not installed; pip install 'edgeseg[opencv]' — on a Jetson use JetPack's own "
                "OpenCV: make the venv with --system-site-packages")  # fmt: skip
    if module in ("torch", "onnx", "onnxslim", "matplotlib"):
        hint = f"{module} is not installed; training, export and .pt models need it: pip install 'edgeseg[train]'"
        if sys.version_info < (3, 9):  # PyTorch 2.5 and newer need Python 3.9
            hint += f" (Python {sys.version_info[0]}.{sys.version_info[1]} gets PyTorch 2.4 at most; on a Jetson, NVIDIA's wheel for your JetPack)"
        return hint
    if module == "tomli":
        return "tomli is not installed; Python before 3.11 reads TOML with it: pip install 'tomli>=1.1'"
    return None
