import json
import math
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgeseg.core.metrics import ConfusionMatrix, SegMetrics, agreement, format_table
from edgeseg.evaluate.plots import save_confusion_matrix, save_iou_bars, save_training_curves

# 5 classes: 3 appears only in the prediction, 4 appears nowhere.
TARGET = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 2, 3]], dtype=np.uint8)
EXPECTED = np.array(
    [
        [1, 1, 0, 0, 0],
        [0, 2, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
)
NAMES = ["road", "car", "sky", "tree", "sign"]


def _scored(pred, target, num_classes=5, ignore_index=255) -> tuple[ConfusionMatrix, SegMetrics]:
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(np.asarray(pred), np.asarray(target))
    return cm, cm.compute()


def _reference_matrix(pred, target, num_classes, ignore_index):
    """Pixel-by-pixel loop, for comparison with the vectorised update."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
        if t != ignore_index and 0 <= p < num_classes:
            matrix[t, p] += 1
    return matrix


def test_hand_computed_matrix_and_metrics():
    cm, m = _scored(PRED, TARGET)
    assert cm.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm.matrix, EXPECTED)
    # IoU = TP / (gt + pred - TP)
    np.testing.assert_allclose(m.iou[:4], [1 / 2, 2 / 3, 1 / 2, 0.0])
    assert math.isnan(m.iou[4])  # absent from gt and prediction
    assert m.miou == pytest.approx((1 / 2 + 2 / 3 + 1 / 2 + 0) / 4)  # 5/12; class 4 excluded, class 3 counts
    np.testing.assert_allclose(m.accuracy[:3], [1 / 2, 1.0, 1 / 2])
    assert np.isnan(m.accuracy[3:]).all()  # absent from gt
    assert m.mean_accuracy == pytest.approx(2 / 3)
    assert m.pixel_accuracy == pytest.approx(4 / 6)
    assert m.num_pixels == 6
    np.testing.assert_array_equal(m.gt_pixels, [2, 2, 2, 0, 0])


def test_ignored_pixels_never_count_even_with_valid_prediction():
    target = np.array([[0, 255, 1], [255, 2, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [3, 2, 0]], dtype=np.uint8)  # ignored pixels predicted 1 and 3
    cm, m = _scored(pred, target, num_classes=4)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert m.num_pixels == 4
    assert math.isnan(m.iou[3])  # predicted only on ignored pixels: still absent
    np.testing.assert_allclose(m.iou[:3], [1 / 2, 1.0, 1 / 2])
    assert m.pixel_accuracy == pytest.approx(3 / 4)


def test_ignore_index_inside_class_range():
    target = np.array([[0, 1, 2]])
    pred = np.array([[0, 0, 2]])
    cm, m = _scored(pred, target, num_classes=3, ignore_index=1)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    assert m.pixel_accuracy == 1.0


def test_no_ignore_index():
    cm, _ = _scored(PRED, TARGET, ignore_index=None)
    np.testing.assert_array_equal(cm.matrix, EXPECTED)


def test_out_of_range_predictions_are_errors_not_classes():
    target = np.array([[0, 1, 2], [1, 1, 0]], dtype=np.int64)
    pred = np.array([[0, 7, -1], [1, 300, 0]], dtype=np.int16)
    cm, m = _scored(pred, target, num_classes=3)
    assert cm.matrix.shape == (3, 3)
    np.testing.assert_array_equal(cm.matrix, [[2, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(cm.invalid_predictions, [0, 2, 1])
    assert m.iou.shape == (3,)
    np.testing.assert_allclose(m.iou, [1.0, 1 / 3, 0.0])  # class 2: gt 1, predicted 0 -> IoU 0
    np.testing.assert_allclose(m.accuracy, [1.0, 1 / 3, 0.0])
    assert m.pixel_accuracy == pytest.approx(3 / 6)
    assert m.num_pixels == 6


def test_uint8_prediction_out_of_range():
    cm, m = _scored(np.array([[0, 200]], dtype=np.uint8), np.array([[0, 1]], dtype=np.uint8), num_classes=2)
    np.testing.assert_array_equal(cm.matrix, [[1, 0], [0, 0]])
    assert m.iou[1] == 0.0


def test_matches_pixel_loop_on_random_data():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, (40, 50)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(-2, 8, (40, 50)).astype(np.int32)
    cm, _ = _scored(pred, target, num_classes=6)
    np.testing.assert_array_equal(cm.matrix, _reference_matrix(pred, target, 6, 255))


def test_shape_mismatch_raises():
    cm = ConfusionMatrix(3, 255)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_target_outside_classes_raises():
    cm = ConfusionMatrix(3, 255)
    with pytest.raises(ValueError, match=r"\[7\]"):
        cm.update(np.zeros((1, 2), np.uint8), np.array([[0, 7]], np.uint8))


def test_float_labels_raise():
    cm = ConfusionMatrix(3, 255)
    with pytest.raises(ValueError, match="integer"):
        cm.update(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.uint8))


def test_merge_equals_single_update():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, (2, 10, 12)).astype(np.uint8)
    target[0, :2] = 255
    pred = rng.integers(0, 5, (2, 10, 12)).astype(np.uint8)
    first, second, both = ConfusionMatrix(4, 255), ConfusionMatrix(4, 255), ConfusionMatrix(4, 255)
    first.update(pred[0], target[0])
    second.update(pred[1], target[1])
    both.update(pred, target)
    first.merge(second)
    np.testing.assert_array_equal(first.matrix, both.matrix)
    np.testing.assert_array_equal(first.invalid_predictions, both.invalid_predictions)
    assert first.compute().miou == both.compute().miou


def test_merge_rejects_other_class_count():
    with pytest.raises(ValueError):
        ConfusionMatrix(3, 255).merge(ConfusionMatrix(4, 255))


def test_updates_accumulate_across_image_sizes():
    cm = ConfusionMatrix(5, 255)
    cm.update(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    cm.update(PRED, TARGET)
    expected = EXPECTED.copy()
    expected[0, 0] += 64
    np.testing.assert_array_equal(cm.matrix, expected)


def test_pickle_roundtrip_keeps_counts():
    cm, _ = _scored(PRED, TARGET)
    clone = pickle.loads(pickle.dumps(cm))
    np.testing.assert_array_equal(clone.matrix, EXPECTED)


def test_empty_matrix_gives_nan_without_warnings():
    with np.errstate(all="raise"):
        m = ConfusionMatrix(3, 255).compute()
    assert math.isnan(m.miou) and math.isnan(m.pixel_accuracy) and m.num_pixels == 0
    json.dumps(m.to_dict(["a", "b", "c"]), allow_nan=False)


def test_to_dict_is_strict_json():
    _, m = _scored(PRED, TARGET)
    data = m.to_dict(NAMES)
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["miou"] == pytest.approx(5 / 12)
    assert data["per_class"]["sign"] == {"iou": None, "accuracy": None, "gt_pixels": 0}
    assert data["per_class"]["tree"] == {"iou": 0.0, "accuracy": None, "gt_pixels": 0}
    assert data["per_class"]["car"]["iou"] == pytest.approx(2 / 3)
    assert all(0.0 <= data[k] <= 1.0 for k in ("miou", "pixel_accuracy", "mean_accuracy"))


def test_to_dict_rejects_wrong_name_count():
    _, m = _scored(PRED, TARGET)
    with pytest.raises(ValueError):
        m.to_dict(NAMES[:3])


def test_format_table():
    _, m = _scored(PRED, TARGET)
    text = format_table(m, NAMES)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "IoU", "%", "acc", "%"]
    car = next(line for line in lines if line.startswith("car"))
    assert car.split() == ["car", "66.67", "100.00"]
    sign = next(line for line in lines if line.startswith("sign"))
    assert sign.split() == ["sign", "-", "-"]
    assert any(line.startswith("mIoU") and "41.67" in line for line in lines)
    assert any(line.startswith("pixel acc") and "66.67" in line for line in lines)
    assert any(line.startswith("mean acc") and "66.67" in line for line in lines)
    rows = lines[2 : 2 + len(NAMES)]
    assert len({len(row) for row in rows}) == 1  # fixed width


def test_agreement():
    a = np.array([[0, 1], [2, 3]])
    assert agreement(a, a) == 1.0
    assert agreement(a, np.array([[0, 1], [0, 0]])) == 0.5
    with pytest.raises(ValueError):
        agreement(a, a[:1])


def test_modules_import_neither_torch_nor_matplotlib():
    code = "import sys, edgeseg.core.metrics, edgeseg.evaluate.plots; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---- plots ----


def _assert_png(path, tmp_path):
    image = cv2.imread(str(path))
    assert image is not None and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_save_confusion_matrix(tmp_path):
    path = tmp_path / "confusion.png"
    save_confusion_matrix(EXPECTED, NAMES, path)
    _assert_png(path, tmp_path)


def _drawn(monkeypatch, draw) -> list:
    """The axes ``draw()`` makes, caught at the moment the figure is saved (its PNG is still written)."""
    from edgeseg.evaluate import plots

    caught, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (caught.extend(fig.axes), save(fig, path)))
    draw()
    return caught


def test_plots_name_model_and_split_and_every_confusion_cell_has_a_number(tmp_path, monkeypatch):
    """Titles say which model on which split; an empty cell says 0 (it was blank), a share under 0.005 says <.01,
    and a class with no ground-truth pixels says so on its row."""
    subject = "reference/best.pt on camvid heldout"
    matrix = EXPECTED.copy()
    matrix[0, 0] = 1000  # row 0: 1000 and 1 -> 0.999 and <.01
    [axes, _] = _drawn(monkeypatch, lambda: save_confusion_matrix(matrix, NAMES, tmp_path / "c.png", subject))
    assert axes.get_title() == f"Confusion matrix (row-normalised)\n{subject}"
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes.texts}
    assert len(cells) == 25 and cells[(0, 0)] == "1.00" and cells[(0, 1)] == "<.01" and cells[(0, 2)] == "0"
    assert [cells[(3, col)] for col in range(5)] == ["0"] * 5
    assert [t.get_text() for t in axes.get_yticklabels()] == ["road", "car", "sky", "tree (none)", "sign (none)"]
    [bars] = _drawn(monkeypatch, lambda: save_iou_bars(np.array([0.5, 0.0, np.nan]), NAMES[:3], tmp_path / "i.png", subject))
    assert bars.get_title() == f"Per-class IoU\n{subject}"
    assert [t.get_text() for t in bars.texts] == ["n/a", "50.0", "0.0"]


def test_save_confusion_matrix_rejects_wrong_names(tmp_path):
    with pytest.raises(ValueError):
        save_confusion_matrix(EXPECTED, NAMES[:2], tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_save_iou_bars_with_nan(tmp_path):
    path = tmp_path / "iou.png"
    save_iou_bars(np.array([0.5, 2 / 3, 0.5, 0.0, np.nan]), NAMES, path)
    _assert_png(path, tmp_path)


def test_save_iou_bars_all_nan(tmp_path):
    path = tmp_path / "iou.png"
    save_iou_bars(np.full(3, np.nan), NAMES[:3], path)
    _assert_png(path, tmp_path)


def test_save_training_curves(tmp_path):
    rows = [
        {"epoch": 1, "train_loss": 1.2, "lr": 1e-2},
        {"epoch": 2, "train_loss": 0.9, "val_loss": None, "val_miou": 0.31, "lr": 5e-3},
        {"epoch": 3, "train_loss": 0.7, "val_loss": 0.8, "val_miou": 0.42, "lr": 1e-4},
    ]
    path = tmp_path / "curves.png"
    save_training_curves(rows, path)
    _assert_png(path, tmp_path)
    save_training_curves(rows, path)  # overwrite in place
    _assert_png(path, tmp_path)


def test_save_training_curves_without_lr_or_validation(tmp_path):
    path = tmp_path / "curves.png"
    save_training_curves([{"epoch": "1", "train_loss": "0.5", "val_miou": ""}], path)  # CSV-style strings
    _assert_png(path, tmp_path)
