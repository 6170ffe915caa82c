"""The CLI as users run it: real subprocesses, real files, one-line errors."""

import json

import cv2
import numpy as np
import torch
from PIL import Image

from conftest import assert_one_line_error, run_cli, run_without, site_without


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
        ids = np.asarray(Image.open(out / f"{path.stem}.png"))  # a palette PNG: Pillow reads the class ids
        assert ids.shape == (360, 480) and ids.dtype == np.uint8 and ids.max() < 11
        assert cv2.imread(str(out / f"{path.stem}_overlay.jpg")).shape == (360, 480, 3)
        assert cv2.imread(str(out / f"{path.stem}_side.jpg")).shape == (360, 960, 3)
    again = run_cli("predict", small_checkpoint, folder, "--out", out)
    assert_one_line_error(again, "--out", "not empty", "--exist-ok")


def test_predict_pictures_show_colours_and_a_legend(small_checkpoint, camvid, tmp_path):
    """The class-id PNG looked black in every viewer: it is now a palette PNG (viewers show the model's colours,
    its pixel values stay the class ids, and edgeseg's own label reader takes it back); the overlay has a legend."""
    from edgeseg.data.dataset import load_label
    from edgeseg.runtime import Segmenter

    image = sorted((camvid / "images" / "val").glob("*.jpg"))[0]
    out = tmp_path / "pred"
    assert run_cli("predict", small_checkpoint, image, "--out", out).returncode == 0
    with Segmenter.load(small_checkpoint) as segmenter:
        frame = cv2.imread(str(image))
        labels = segmenter.segment(frame)
        plain_overlay = segmenter.overlay(frame, labels)
        palette = segmenter.meta.palette
    png = Image.open(out / f"{image.stem}.png")
    assert png.mode == "P" and np.array_equal(np.asarray(png), labels)
    assert np.array_equal(load_label(out / f"{image.stem}.png", "folder"), labels)
    assert png.getpalette()[: 3 * len(palette)] == [v for rgb in palette for v in rgb]
    shown = np.asarray(png.convert("RGB"))  # what a viewer shows: each pixel its class's colour
    assert np.array_equal(shown, np.array(palette, np.uint8)[labels])
    overlay = cv2.imread(str(out / f"{image.stem}_overlay.jpg")).astype(int)
    difference = np.abs(overlay - plain_overlay).mean(axis=2)
    assert difference[:60, -120:].mean() > 30 and difference[-150:, :240].mean() < 8, "a legend top right, JPEG noise elsewhere"


def test_eval_without_matplotlib_refuses_plots_first_and_keeps_its_json_without_them(small_checkpoint, camvid, tmp_path):
    """Not exit 2 after ev.json was written: --plots is refused before any image is scored, and the plots that
    would only have gone beside --json are left out with a note (a device has no matplotlib)."""
    site = site_without(tmp_path, "matplotlib", "mpl_toolkits")
    plots = tmp_path / "plots"
    done = run_without(site, "eval", small_checkpoint, "--data", f"camvid:{camvid}", "--limit", "1",
                       "--json", tmp_path / "ev.json", "--plots", plots, timeout=300)  # fmt: skip
    assert_one_line_error(done, f"--plots {plots}", "matplotlib", "leave --plots out")
    assert done.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    done = run_without(site, "eval", small_checkpoint, "--data", f"camvid:{camvid}", "--limit", "1",
                       "--json", tmp_path / "out" / "ev.json", timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    assert "note: no plots beside --json: matplotlib is not installed" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ev.json"]


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
