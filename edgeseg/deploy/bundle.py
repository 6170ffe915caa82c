"""The deployment bundle: the ``--out`` folder of ``edgeseg export``, copied whole to the device.

``export.json`` is its manifest: every file with its sha256 and what runs it, the input size and
classes, the agreement thresholds ``edgeseg verify`` applies, the defaults ``edgeseg build`` takes,
and the ``verify/`` set (images and the PyTorch reference's label maps, sha256-checked through
``verify/manifest.json``). Requirement strings in ``files[*].requires`` are version specifiers
(">=1.17", ">=8.5,<11", "==8.5.2").

No torch, onnx or onnxruntime here: a Jetson reads bundles with numpy and OpenCV only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import file_sha256, write_bytes, write_json

BUNDLE_FORMAT = 1
VERIFY_FORMAT = 1
MANIFEST = "export.json"
VERIFY_FOLDER = "verify"
# Share of pixels whose label must equal the PyTorch reference's, by the model's precision.
DEFAULT_THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
ORT_MIN = ">=1.17"
TRT_MIN = ">=8.5"
TRT_WEAKLY_TYPED = ">=8.5,<11"  # TensorRT 11 builds strongly typed networks only: no cache, no set ranges
TRT_STRONGLY_TYPED = ">=10.0"  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists from 10.0


def file_requirements(key: str, trt_cache_version: Optional[str]) -> Dict[str, Any]:
    """What runs the bundle file exported under ``key`` (ONNX Runtime, TensorRT, typing)."""
    if key in ("fp32", "fp16", "int8"):
        return {"onnxruntime": ORT_MIN}
    if key == "int8_qdq":
        return {"onnxruntime": ORT_MIN, "tensorrt": TRT_MIN, "tensorrt_int8_source": "qdq"}
    if key == "int8_qdq_fp16":  # FP16 Q/DQ scales need opset 19; built strongly typed only (edgeseg/export/qdq_fp16.py)
        return {"onnxruntime": ORT_MIN, "tensorrt": TRT_STRONGLY_TYPED, "tensorrt_int8_source": "qdq", "strongly_typed": True}
    if key == "calib_cache":
        exact = f"=={trt_cache_version}" if trt_cache_version else TRT_WEAKLY_TYPED
        return {"tensorrt": exact, "weakly_typed": True}
    if key == "calib_ranges":
        return {"tensorrt": TRT_WEAKLY_TYPED, "weakly_typed": True}
    return {}


def default_thresholds(overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """export.json's "thresholds": the defaults, with ``--verify-threshold PRECISION=FRACTION`` entries applied."""
    values = dict(DEFAULT_THRESHOLDS)
    for entry in overrides:
        precision, _, text = str(entry).partition("=")
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if precision.strip() not in DEFAULT_THRESHOLDS or not 0.0 <= value <= 1.0:
            raise EdgesegError(f"--verify-threshold {entry}: write PRECISION=FRACTION with PRECISION one of "
                               f"{', '.join(DEFAULT_THRESHOLDS)} and a share of pixels, e.g. int8=0.98")  # fmt: skip
        values[precision.strip()] = value
    return {precision: {"min_agreement": value} for precision, value in values.items()}


@dataclass(frozen=True)
class VerifyItem:
    name: str  # the image's stem, as tables and reports name it
    image: Path
    reference: Path


@dataclass(frozen=True)
class VerifySet:
    folder: Path
    dataset: str
    split: str
    input_size: Tuple[int, int]
    classes: Tuple[str, ...]
    reference: Dict[str, Any]
    items: List[VerifyItem]


class Bundle:
    """An export folder with its export.json; file checks by key (``int8``) or name (``model.int8.onnx``)."""

    def __init__(self, root: Path, manifest: Dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def files(self) -> Dict[str, Dict[str, Any]]:
        return self.manifest.get("files") or {}

    @property
    def input_size(self) -> Tuple[int, int]:
        height, width = self.manifest["input_size"]
        return int(height), int(width)

    @property
    def classes(self) -> Tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest.get("num_classes") or len(self.classes))

    @property
    def output_kind(self) -> str:
        return str(self.manifest.get("output_kind", "logits"))

    @property
    def build_defaults(self) -> Dict[str, Any]:
        """What ``edgeseg build`` does without flags: precisions, int8_source, workspace_mib, dla_core, batch, dynamic_batch."""
        defaults = {"precisions": [], "int8_source": "qdq", "workspace_mib": 1024, "dla_core": None,
                    "batch": 1, "dynamic_batch": 0}  # fmt: skip
        defaults.update(self.manifest.get("build") or {})
        return defaults

    def threshold(self, precision: str) -> float:
        """Minimum pixel agreement with the reference for a model of this precision."""
        entry = (self.manifest.get("thresholds") or {}).get(precision) or {}
        value = entry.get("min_agreement", DEFAULT_THRESHOLDS.get(precision, DEFAULT_THRESHOLDS["fp32"]))
        return float(value)

    # --- files -------------------------------------------------------------------------
    def key_of(self, key_or_name: str) -> Optional[str]:
        """The export.json key of a file given by key or by name; None when the bundle does not list it."""
        if key_or_name in self.files:
            return key_or_name
        for key, entry in self.files.items():
            if entry.get("name") == key_or_name:
                return key
        return None

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is one of the files export.json lists, in this folder."""
        path = Path(path)
        return path.resolve().parent == self.root.resolve() and self.key_of(path.name) is not None

    def requires(self, key_or_name: str) -> Dict[str, Any]:
        return dict(self._entry(key_or_name).get("requires") or {})

    def path(self, key_or_name: str) -> Path:
        return self.root / str(self._entry(key_or_name)["name"])

    def check_file(self, key_or_name: str) -> Path:
        """The file's path once its sha256 matches export.json; one line naming it when it is missing or altered."""
        entry = self._entry(key_or_name)
        path = self.root / str(entry["name"])
        _check_sha256(path, entry.get("sha256"), MANIFEST)
        return path

    def onnx_for(self, key: str, precision: str) -> Path:
        """The checked ONNX file ``key`` (``edgeseg.deploy.build.BuildPlan.source_key``) that an engine of ``precision`` is built from."""
        if key not in self.files:
            raise EdgesegError(f"{self.manifest_path}: the bundle has no {key} model for a {precision} engine; "
                               f"re-export with --precision {precision}")  # fmt: skip
        return self.check_file(key)

    def _entry(self, key_or_name: str) -> Dict[str, Any]:
        key = self.key_of(key_or_name)
        if key is None:
            raise EdgesegError(f"{self.manifest_path}: lists no file {key_or_name}; re-copy the bundle or re-export it")
        entry = self.files[key]
        if not isinstance(entry, dict) or not entry.get("name"):
            raise EdgesegError(f"{self.manifest_path}: the entry of {key} is damaged; re-copy the bundle or re-export")
        return entry

    # --- the verify set ----------------------------------------------------------------
    def verify_set(self) -> VerifySet:
        """verify/manifest.json with every image and reference label map sha256-checked."""
        entry = self.manifest.get("verify")
        if not entry:
            raise EdgesegError(f"{self.root}: the bundle has no verify set (exported with --no-verify); "
                               "re-export with --data DATA")  # fmt: skip
        folder = self.root / str(entry.get("folder", VERIFY_FOLDER))
        manifest_file = folder / "manifest.json"
        _check_sha256(manifest_file, entry.get("manifest_sha256"), MANIFEST)
        manifest = _read_json(manifest_file)
        try:
            items = [self._verify_item(folder, item) for item in manifest["images"]]
            height, width = manifest["input_size"]
            verify = VerifySet(folder, str(manifest["dataset"]), str(manifest["split"]), (int(height), int(width)),
                               tuple(manifest["classes"]), dict(manifest["reference"]), items)  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise EdgesegError(f"{manifest_file}: damaged ({type(err).__name__}: {err}); re-copy the bundle or re-export") from None
        if not items:
            raise EdgesegError(f"{manifest_file}: lists no images; re-export with --verify-images N")
        return verify

    def _verify_item(self, folder: Path, item: Dict[str, Any]) -> VerifyItem:
        image = _inside(folder, item["image"])
        reference = _inside(folder, item["reference"])
        _check_sha256(image, item["image_sha256"], "verify/manifest.json")
        _check_sha256(reference, item["reference_sha256"], "verify/manifest.json")
        return VerifyItem(PurePosixPath(item["image"]).stem, image, reference)


def load_bundle(path: str | Path) -> Bundle:
    """The bundle in folder ``path``, or the one holding the model file ``path``."""
    path = Path(path)
    if not path.exists():
        raise EdgesegError(f"{path}: no such bundle folder or file; pass the --out folder of `edgeseg export`")
    root = path if path.is_dir() else path.parent
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        raise EdgesegError(f"{root}: no {MANIFEST}, so not an export bundle; pass the --out folder of `edgeseg export`")
    manifest = _read_json(manifest_file)
    if not isinstance(manifest, dict):
        raise EdgesegError(f"{manifest_file}: damaged (not a JSON object); re-copy the bundle or re-export")
    version = manifest.get("bundle_format")
    if version is None:
        raise EdgesegError(f"{manifest_file}: written before bundles existed (no bundle_format); re-export with this edgeseg")
    if version != BUNDLE_FORMAT:
        raise EdgesegError(f"{manifest_file}: bundle_format {version!r} is unknown to this edgeseg "
                           f"(it reads {BUNDLE_FORMAT}); install the edgeseg that exported it or re-export")  # fmt: skip
    missing = [key for key in ("files", "input_size", "classes") if key not in manifest]
    if missing:
        raise EdgesegError(f"{manifest_file}: damaged (no {', '.join(missing)}); re-copy the bundle or re-export")
    return Bundle(root, manifest)


def write_verify_set(
    folder: Path,
    samples: Iterable[Tuple[Path, Any]],
    *,
    dataset: str,
    split: str,
    checkpoint: str,
    checkpoint_sha256: str,
    input_size: Sequence[int],
    classes: Sequence[str],
) -> Dict[str, Any]:
    """Copy each (source image, reference labels uint8 HxW) into ``folder``; returns export.json's "verify" entry."""
    import cv2
    import numpy as np

    images: List[Dict[str, Any]] = []
    used: set = set()
    for index, (source, labels) in enumerate(samples):
        source = Path(source)
        stem = source.stem if source.stem not in used else f"{index:04d}_{source.stem}"
        used.add(stem)
        image = write_bytes(folder / "images" / f"{stem}{source.suffix.lower()}", source.read_bytes())
        ok, png = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint8))
        if not ok:
            raise EdgesegError(f"{source}: OpenCV could not encode its reference labels as PNG")
        reference = write_bytes(folder / "reference" / f"{stem}.png", png.tobytes())
        images.append({
            "image": f"images/{image.name}", "image_sha256": file_sha256(image),
            "reference": f"reference/{reference.name}", "reference_sha256": file_sha256(reference),
        })  # fmt: skip
    manifest = {
        "format": VERIFY_FORMAT, "dataset": dataset, "split": split,
        "reference": {"checkpoint": checkpoint, "sha256": checkpoint_sha256},
        "input_size": [int(v) for v in input_size], "num_classes": len(classes), "classes": list(classes),
        "images": images,
    }  # fmt: skip
    manifest_file = write_json(folder / "manifest.json", manifest)
    return {"folder": folder.name, "images": len(images), "manifest_sha256": file_sha256(manifest_file)}


def evenly_spaced(count: int, total: int) -> List[int]:
    """``count`` indices spread from the first to the last of ``total`` (all of them when count >= total)."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _check_sha256(path: Path, expected: Any, listed_in: str) -> None:
    if not path.is_file():
        raise EdgesegError(f"{path}: missing from the bundle; re-copy the bundle")
    if file_sha256(path) != expected:
        raise EdgesegError(f"{path}: sha256 differs from {listed_in}; re-copy the bundle or re-export")


def _inside(folder: Path, relative: Any) -> Path:
    """A manifest path that stays inside the verify folder."""
    parts = PurePosixPath(str(relative)).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise EdgesegError(f"{folder / 'manifest.json'}: damaged (path {relative!r}); re-copy the bundle or re-export")
    return folder.joinpath(*parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = getattr(err, "msg", None) or type(err).__name__
        raise EdgesegError(f"{path}: damaged ({reason}); re-copy the bundle or re-export") from None
