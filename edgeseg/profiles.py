"""Export profiles: one TOML file per deployment target (``export/<name>.toml``).

A profile holds the export settings a target needs (input size, precisions, batch, calibration,
TensorRT version, workspace, DLA). ``edgeseg export --profile NAME`` starts from it; any flag
given on the command line wins.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

PROFILE_DIRS = (Path("export"), Path(__file__).resolve().parents[1] / "export")

# profile key -> export option name; sections flatten into the same option names
_TOP = {"img_size": "img_size", "precisions": "precisions", "batch": "batch", "dynamic_batch": "dynamic_batch",
        "argmax": "argmax", "opset": "opset", "description": "description"}  # fmt: skip
_SECTIONS = {
    "calibration": {"method": "calib_method", "images": "calib_images", "percentile": "percentile",
                    "keep_fp": "keep_fp", "max_miou_drop": "max_miou_drop", "data": "calib"},
    "tensorrt": {"version": "trt_version", "int8_source": "int8_source", "workspace_mib": "workspace_mib",
                 "dla_core": "dla_core", "engine": "engine"},
}  # fmt: skip


def profile_names() -> list[str]:
    return sorted({p.stem for folder in PROFILE_DIRS if folder.is_dir() for p in folder.glob("*.toml")})


def find_profile(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    for folder in PROFILE_DIRS:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(profile_names()) or "none found"
    raise EdgesegError(f"--profile {name_or_path}: no such profile; choose one of {known}, or pass a .toml file")


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Export options named by the profile (option name -> value)."""
    path = find_profile(name_or_path)
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
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
