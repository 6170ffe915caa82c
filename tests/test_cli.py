"""The CLI as users run it: real subprocesses, real files, one-line errors."""

import json

import cv2
import numpy as np
import torch

from conftest import assert_one_line_error, run_cli


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("edgeseg ")


def test_eval_prints_table_and_writes_json_and_plots(small_checkpoint, camvid, tmp_path):
    report = tmp_path / "eval" / "val.json"
    done = run_cli("eval", small_checkpoint, "--data", f"camvid:{camvid}", "--limit", "3", "--json", report)
    assert done.returncode == 0, done.stderr
    assert "mIoU" in done.stdout and "Bicyclist" in done.stdout
    data = json.loads(report.read_text())
    assert data["num_images"] == 3
    assert set(data) >= {"miou", "pixel_accuracy", "mean_accuracy", "per_class", "num_images"}
    assert list(data["per_class"]) == ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                                       "Fence", "Car", "Pedestrian", "Bicyclist"]  # fmt: skip
    for name in ("confusion_matrix.png", "per_class_iou.png"):
        assert cv2.imread(str(report.parent / name)) is not None


def test_predict_writes_ids_at_image_size_and_overlays(small_checkpoint, camvid, tmp_path):
    source = sorted((camvid / "images" / "val").glob("*.jpg"))[:2]
    folder = tmp_path / "in"
    folder.mkdir()
    for path in source:
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "pred"
    done = run_cli("predict", small_checkpoint, folder, "--out", out, "--side-by-side")
    assert done.returncode == 0, done.stderr
    for path in source:
        ids = cv2.imread(str(out / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.shape == (360, 480) and ids.dtype == np.uint8 and ids.max() < 11
        assert cv2.imread(str(out / f"{path.stem}_overlay.jpg")).shape == (360, 480, 3)
        assert cv2.imread(str(out / f"{path.stem}_side.jpg")).shape == (360, 960, 3)
    again = run_cli("predict", small_checkpoint, folder, "--out", out)
    assert_one_line_error(again, "--out", "not empty", "--exist-ok")


def test_missing_checkpoint(tmp_path, camvid):
    done = run_cli("eval", tmp_path / "nope.pt", "--data", f"camvid:{camvid}")
    assert_one_line_error(done, "nope.pt", "no such checkpoint")


def test_not_an_edgeseg_checkpoint(tmp_path, camvid):
    path = tmp_path / "foreign.pt"
    torch.save({"anything": torch.zeros(2)}, path)
    assert_one_line_error(run_cli("eval", path, "--data", f"camvid:{camvid}"), "foreign.pt", "not an edgeseg checkpoint")
    path.write_bytes(b"\x00" * 64)
    assert_one_line_error(run_cli("predict", path, str(camvid / "images/val"), "--out", tmp_path / "o"), "foreign.pt")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_wrong_dataset_layout(small_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli("eval", small_checkpoint, "--data", tmp_path / "empty")
    assert_one_line_error(done, "--data")


def test_dataset_with_other_classes(small_checkpoint, camvid, tmp_path):
    toml = tmp_path / "three.toml"
    toml.write_text(f'layout = "folder"\nroot = "{camvid}"\nignore_index = 11\nclasses = ["a", "b", "c"]\n'
                    'palette = [[0,0,0],[1,1,1],[2,2,2]]\n')  # fmt: skip
    done = run_cli("eval", small_checkpoint, "--data", toml)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_train_refuses_a_non_empty_out_folder(camvid, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", tmp_path / "run", "--epochs", "1")
    assert_one_line_error(done, "--out", "--exist-ok")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["keep.txt"]


def test_train_rejects_bad_flags(camvid, tmp_path):
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", tmp_path / "r", "--img-size", "100", "130")
    assert_one_line_error(done, "--img-size", "multiples of 8")
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", tmp_path / "r", "--loss", "mse")
    assert_one_line_error(done, "--loss", "ce+dice")


def test_import_seed_rejects_a_non_seed_file(tmp_path):
    path = tmp_path / "random.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    done = run_cli("import-seed", path, "--num-classes", "21", "--out", tmp_path / "m.pt")
    assert_one_line_error(done, "random.pth", "not a bubbliiiing/deeplabv3-plus-pytorch")
    assert not (tmp_path / "m.pt").exists()
