"""Splits that measure generalisation: [splits] in the dataset TOML, their checks, train's rule, eval per split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, error_of, run_cli
from PIL import Image

from edgeseg.data import SegmentationData, list_pairs, resolve_dataset
from edgeseg.core.errors import EdgesegError
from edgeseg.data.layouts import check_train_val_splits, fingerprint
from edgeseg.data.splits import frame_name, sequence_of

PRESET = (Path(__file__).resolve().parents[1] / "edgeseg/data/presets/camvid.toml").read_text()
HEADER = PRESET[: PRESET.index("\n# Splits that measure")]  # the camvid preset without its [splits]
TRAIN_FRAMES = ("A1_001", "A1_002", "A1_003", "B2_001", "B2_002", "C3_001")


def make_tree(root: Path, splits_toml: str = "") -> Path:
    """A tiny folder-layout data set: three sequences in train, one frame of A1 in val; dataset.toml beside it."""
    frames = {"train": TRAIN_FRAMES, "val": ("A1_050",)}
    for split, stems in frames.items():
        for stem in stems:
            for folder, array in (("images", np.full((8, 8, 3), 90, np.uint8)), ("labels", np.full((8, 8), 3, np.uint8))):
                path = root / folder / split / f"{stem}.{'jpg' if folder == 'images' else 'png'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
    (root / "dataset.toml").write_text(HEADER + "\n" + splits_toml)
    return root


HELD_OUT_B2 = """
[splits.train-b]
from = "train"
exclude_sequences = ["B2"]

[splits.held-b]
from = "train"
sequences = ["B2"]

[splits.two-frames]
from = "train"
frames = ["A1_001", "C3_001"]

[splits.rest]
from = "train"
exclude_frames = ["A1_001", "C3_001"]
"""


def stems(spec, split: str) -> list[str]:
    return [frame_name(image) for image, _ in list_pairs(spec, split)]


# --- parsing and selection ---------------------------------------------------------------
def test_splits_parse_and_select_frames(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, HELD_OUT_B2)))
    assert [(s.name, s.source, s.selector) for s in spec.splits] == [
        ("train-b", "train", "exclude_sequences"), ("held-b", "train", "sequences"),
        ("two-frames", "train", "frames"), ("rest", "train", "exclude_frames"),
    ]  # fmt: skip
    assert stems(spec, "train-b") == ["A1_001", "A1_002", "A1_003", "C3_001"]
    assert stems(spec, "held-b") == ["B2_001", "B2_002"]
    assert stems(spec, "two-frames") == ["A1_001", "C3_001"]
    assert stems(spec, "rest") == ["A1_002", "A1_003", "B2_001", "B2_002"]
    data = SegmentationData(spec, "held-b")
    assert len(data) == 2 and data.read(1)[1].shape == (8, 8)
    assert fingerprint(spec, "held-b") != fingerprint(spec, "train")


def test_no_frame_in_two_splits_of_a_pair(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, HELD_OUT_B2)))
    for train, held in (("train-b", "held-b"), ("rest", "two-frames")):
        assert not set(stems(spec, train)) & set(stems(spec, held))
        assert sorted(stems(spec, train) + stems(spec, held)) == sorted(TRAIN_FRAMES)
    assert check_train_val_splits(spec, "train-b", "held-b") is None
    note = check_train_val_splits(spec, "rest", "two-frames")  # no frame in common, but drive A1 on both sides
    assert note is not None and "shares sequence(s) A1 " in note and "(train-b, held-b)" in note


def test_frame_and_sequence_names() -> None:
    assert sequence_of(frame_name(Path("0016E5_07959.png"))) == "0016E5"
    assert frame_name(Path("aachen_000000_000019_leftImg8bit.png")) == "aachen_000000_000019"
    assert frame_name(Path("aachen_000000_000019_gtFine_labelIds.png")) == "aachen_000000_000019"
    assert sequence_of("aachen_000000_000019") == "aachen" and sequence_of("frame7") == "frame7"


# --- errors when a split is opened -------------------------------------------------------
def test_unknown_sequence_lists_the_known_ones(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, '[splits.x]\nfrom = "train"\nsequences = ["B2", "Z9"]\n')))
    message = error_of(SegmentationData, spec, "x")
    assert "split 'x' names sequence(s) Z9" in message and "its sequences: A1, B2, C3" in message


def test_unknown_frame_is_named(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, '[splits.x]\nfrom = "train"\nframes = ["A1_001", "A1_999"]\n')))
    assert "names 1 frame(s)" in (message := error_of(list_pairs, spec, "x")) and "A1_999" in message


def test_split_that_names_no_frame(tmp_path: Path) -> None:
    toml = '[splits.none-left]\nfrom = "train"\nexclude_sequences = ["A1", "B2", "C3"]\n'
    spec = resolve_dataset(str(make_tree(tmp_path, toml)))
    message = error_of(SegmentationData, spec, "none-left")
    assert "split 'none-left'" in message and "names no frame" in message and "sequences A1, B2, C3" in message


def test_unknown_source_split(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, '[splits.x]\nfrom = "trian"\nsequences = ["A1"]\n')))
    message = error_of(SegmentationData, spec, "x")
    assert "from 'trian', which is not a split here (splits: train, val)" in message


def test_unknown_split_name_lists_derived_ones(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, HELD_OUT_B2)))
    assert "splits here: train, val, train-b (derived)" in error_of(list_pairs, spec, "held-c")


# --- errors in the TOML ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[splits.x]\nfrom = "train"\nsequences = []\n', "sequences is empty, so the split names no frame"),
        ('[splits.x]\nsequences = ["A1"]\n', 'needs from = "SPLIT"'),
        ('[splits.x]\nfrom = "train"\nsequences = ["A1"]\nframes = ["A1_001"]\n', "exactly one of sequences"),
        ('[splits.x]\nfrom = "train"\nsequence = ["A1"]\n', "unknown key(s) sequence"),
        ('[splits.x]\nfrom = "train"\nsequences = "A1"\n', "must be a list of names"),
        ('[splits."a,b"]\nfrom = "train"\nsequences = ["A1"]\n', "letters, digits"),
        ('[splits.x]\nfrom = "train"\nsequences = ["A1"]\n[splits.y]\nfrom = "x"\nsequences = ["A1"]\n',
         "another derived split"),
        # a held-out pair that overlaps: held takes A1 and B2, train-x excludes only B2
        ('[splits.train-x]\nfrom = "train"\nexclude_sequences = ["B2"]\n'
         '[splits.held]\nfrom = "train"\nsequences = ["B2", "A1"]\n',
         "[splits.held] and [splits.train-x] overlap: sequence(s) A1 are in both"),
        ('[splits.t]\nfrom = "train"\nexclude_frames = ["A1_001"]\n[splits.h]\nfrom = "train"\nframes = ["A1_001", "C3_001"]\n',
         "overlap: frame(s) C3_001"),
    ],
)  # fmt: skip
def test_bad_split_tables(tmp_path: Path, body: str, expected: str) -> None:
    root = make_tree(tmp_path, body)
    message = error_of(resolve_dataset, str(root))
    assert str(root / "dataset.toml") in message and expected in message


def test_pairs_without_a_shared_name_are_separate_folds(tmp_path: Path) -> None:
    folds = "".join(
        f'[splits.train-{s}]\nfrom = "train"\nexclude_sequences = ["{s}"]\n[splits.held-{s}]\nfrom = "train"\nsequences = ["{s}"]\n'
        for s in ("A1", "B2")
    )
    spec = resolve_dataset(str(make_tree(tmp_path, folds)))  # held-A1 lies inside train-B2: a different fold, fine
    assert stems(spec, "held-A1") == ["A1_001", "A1_002", "A1_003"]


# --- train's rule ------------------------------------------------------------------------
def test_train_and_val_splits_must_not_share_frames_or_held_out_sequences(tmp_path: Path) -> None:
    spec = resolve_dataset(str(make_tree(tmp_path, HELD_OUT_B2)))
    assert "2 of its frames are also in --train-split train" in error_of(check_train_val_splits, spec, "train", "held-b")
    assert "is also --train-split" in error_of(check_train_val_splits, spec, "held-b", "held-b")
    message = error_of(check_train_val_splits, spec, "train-b", "val")  # val's A1_050 is a drive train-b trains on
    assert "shares sequence(s) A1" in message and "'train-b' is chosen by sequence" in message
    note = check_train_val_splits(spec, "train", "val")  # two plain folders: allowed, with a note
    assert note is not None and note.startswith("note: --val-split val shares sequence(s) A1")


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared/datasets/camvid/images").is_dir(),
                    reason="CamVid not found")  # fmt: skip
def test_camvid_preset_holds_out_drive_0006R0() -> None:
    spec = resolve_dataset(f"camvid:{Path(__file__).resolve().parents[2] / 'shared/datasets/camvid'}")
    train, held = stems(spec, "train-heldout"), stems(spec, "heldout")
    assert (len(train), len(held)) == (266, 101)  # the data set's README: 0001TP 62, 0006R0 101, 0016E5 204
    assert {sequence_of(s) for s in held} == {"0006R0"} and {sequence_of(s) for s in train} == {"0001TP", "0016E5"}
    assert sorted(train + held) == stems(spec, "train")
    assert check_train_val_splits(spec, "train-heldout", "heldout") is None
    assert "shares sequence(s) 0016E5" in check_train_val_splits(spec, "train", "val")


def test_train_cli_rejects_overlapping_splits(camvid: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", out, "--train-split", "train", "--val-split", "heldout")
    assert_one_line_error(done, "--val-split heldout: 101 of its frames are also in --train-split train")
    assert not out.exists()  # refused before the run folder is made


# --- eval per split ----------------------------------------------------------------------
def test_eval_reports_each_split(small_checkpoint: Path, camvid: Path, tmp_path: Path) -> None:
    report = tmp_path / "eval" / "metrics.json"
    done = run_cli("eval", small_checkpoint, "--data", f"camvid:{camvid}", "--split", "heldout,val", "--limit", "1",
                   "--json", report)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on camvid heldout (1 images)" in done.stdout and "on camvid val (1 images)" in done.stdout
    summary = done.stdout[done.stdout.index("split "):].splitlines()
    assert summary[1].split()[:2] == ["heldout", "1"] and summary[2].split()[:2] == ["val", "1"]
    data = json.loads(report.read_text())
    assert list(data["splits"]) == ["heldout", "val"] and data["dataset"] == "camvid"
    for name, split_report in data["splits"].items():
        assert split_report["split"] == name and split_report["num_images"] == 1
        assert 0 <= split_report["miou"] <= 1 and "Sky" in split_report["per_class"]
        assert (report.parent / name / "per_class_iou.png").is_file()
    assert data["splits"]["heldout"]["per_class"] != data["splits"]["val"]["per_class"]


@pytest.mark.parametrize(
    ("split", "expected"),
    [("heldout,nope", "no folder"), ("val,val", "names a split twice")],
)
def test_eval_bad_split_list(small_checkpoint: Path, camvid: Path, split: str, expected: str) -> None:
    done = run_cli("eval", small_checkpoint, "--data", f"camvid:{camvid}", "--split", split, "--limit", "1")
    assert_one_line_error(done, expected)
    assert "IoU" not in done.stdout  # nothing was scored before the error


# --- export checks on a chosen split ---------------------------------------------------------
def test_export_proves_fidelity_and_verify_set_on_the_chosen_split(small_checkpoint: Path, camvid: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = run_cli("export", small_checkpoint, "--out", out, "--data", f"camvid:{camvid}", "--split", "heldout",
                   "--precision", "fp32,fp16", "--num-verify", "2", "--fidelity-images", "2", "--verify-images", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["source"] == f"camvid:{camvid} heldout, first 2 images"
    assert json.loads((out / "fidelity.json").read_text())["split"] == "heldout"
    verify = json.loads((out / "verify" / "manifest.json").read_text())
    assert verify["split"] == "heldout"
    assert all(Path(entry["image"]).name.startswith("0006R0_") for entry in verify["images"])


def test_export_unknown_split_is_refused_before_any_file(small_checkpoint: Path, camvid: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = run_cli("export", small_checkpoint, "--out", out, "--data", f"camvid:{camvid}", "--split", "nope")
    assert_one_line_error(done, "nope")
    assert not out.exists()


def test_calibration_set_of_a_derived_split_loads_from_its_source_folder(camvid: Path, tmp_path: Path) -> None:
    from edgeseg.export.calibration import load_calibration_set, make_calibration_manifest

    manifest = make_calibration_manifest(f"camvid:{camvid}", "train-heldout", 32, tmp_path / "calib")
    content = json.loads(manifest.read_text())
    assert (content["split"], content["image_split"]) == ("train-heldout", "train")
    calib = load_calibration_set(str(tmp_path / "calib"))
    assert len(calib.images) == 32 and not any(p.name.startswith("0006R0") for p in calib.images)
    content["images"][0]["path"] = "images/val/" + Path(content["images"][0]["path"]).name
    manifest.write_text(json.dumps(content))
    with pytest.raises(EdgesegError, match="leads outside images/train/"):
        load_calibration_set(str(tmp_path / "calib"))
