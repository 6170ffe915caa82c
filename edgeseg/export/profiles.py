"""Export profiles: one TOML file per deployment target (``export/<name>.toml`` in the source tree).

A profile holds the export settings a target needs (input size, precisions, batch, calibration,
TensorRT version, workspace, DLA). ``edgeseg export --profile NAME`` starts from it; any flag
given on the command line wins. NAME is a bundled profile (the wheel ships ``export/*.toml`` as
``edgeseg/profiles_data/``); a value ending in ``.toml`` is a file path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.core.toml_compat import tomllib
from edgeseg.core.errors import EdgesegError

_PACKAGE = Path(__file__).resolve().parents[1]  # edgeseg/
# An installed wheel has the profiles inside the package; a source checkout (or an editable
# install made before they were package data) has them in the top-level export/ folder.
BUNDLED_DIRS = (_PACKAGE / "profiles_data", _PACKAGE.parent / "export")

# profile key -> export option name; sections flatten into the same option names
_TOP = {"img_size": "img_size", "precisions": "precisions", "batch": "batch", "dynamic_batch": "dynamic_batch",
        "argmax": "argmax", "opset": "opset", "description": "description"}  # fmt: skip
_SECTIONS = {
    "calibration": {"method": "calib_method", "images": "calib_images", "percentile": "percentile",
                    "keep_fp": "keep_fp", "max_miou_drop": "max_miou_drop", "data": "calib",
                    "equalize": "equalize"},
    "tensorrt": {"version": "trt_version", "int8_source": "int8_source", "workspace_mib": "workspace_mib",
                 "dla_core": "dla_core", "engine": "engine"},
}  # fmt: skip


def bundled_profile_dir() -> Path | None:
    """The folder of the profiles shipped with edgeseg, or None when it has none."""
    return next((folder for folder in BUNDLED_DIRS if any(folder.glob("*.toml"))), None)


def profile_names() -> list[str]:
    folder = bundled_profile_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder else []


def find_profile(name_or_path: str) -> Path:
    """A bundled profile by name; a value ending in .toml is a file (never looked up in ./export)."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise EdgesegError(f"--profile {name_or_path}: no such file; check the path, or pass a profile name")
        return path
    folder = bundled_profile_dir()
    candidate = folder / f"{name_or_path}.toml" if folder else None
    if candidate is not None and "/" not in name_or_path and candidate.is_file():
        return candidate
    known = ", ".join(profile_names()) or "none bundled"
    raise EdgesegError(f"--profile {name_or_path}: no such profile; choose one of {known}, or pass a .toml file")


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Export options named by the profile (option name -> value)."""
    path = find_profile(name_or_path)
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise EdgesegError(f"--profile {path}: not valid TOML ({err}); fix the file") from None
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in _SECTIONS and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                options[_option(path, _SECTIONS[key], sub_key, f"[{key}] ")] = sub_value
        else:
            options[_option(path, _TOP, key, "")] = value
    if isinstance(options.get("dla_core"), int) and options["dla_core"] < 0:
        options["dla_core"] = None  # -1 in a profile: GPU only
    options.pop("description", None)
    return options


def _option(path: Path, names: dict[str, str], key: str, section: str) -> str:
    if key not in names:
        raise EdgesegError(f"--profile {path}: unknown setting {section}{key}; known: {', '.join(names)}")
    return names[key]
