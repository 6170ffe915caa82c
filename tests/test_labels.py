"""Labels from the logits before the model's last upsample (edgeseg/runtime/labels.py, backends/early_exit.py)."""

import numpy as np
import pytest
import torch

from conftest import ROOT
from edgeseg.runtime.labels import to_labels, upsample_argmax


def _upsampled(logits: np.ndarray, size) -> np.ndarray:
    """The logits upsampled as the model's last layer does (bilinear, align_corners=True)."""
    up = torch.nn.functional.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=True)
    return up[0].numpy()


def _reference(logits: np.ndarray, size) -> np.ndarray:
    return _upsampled(logits, size).argmax(0).astype(np.uint8)


def _assert_same_but_float_ties(labels: np.ndarray, logits: np.ndarray, size) -> None:
    """Equal to the reference labels, but where the two classes' upsampled scores differ by float32 rounding:
    torch interpolates with another formula, and rounds differently."""
    up = _upsampled(logits, size)
    reference = up.argmax(0)
    rows, cols = np.nonzero(labels != reference)
    gaps = np.abs(up[labels[rows, cols], rows, cols] - up[reference[rows, cols], rows, cols])
    assert (gaps <= 1e-5 * np.maximum(1, np.abs(up[:, rows, cols]).max(0))).all(), gaps.max()
    assert len(rows) <= labels.size // 10000, len(rows)


def _smooth_logits(rng, classes: int, height: int, width: int) -> np.ndarray:
    """Logits with regions, as a network gives them: smooth fields, so that most cells agree."""
    coarse = rng.standard_normal((classes, height // 4 + 2, width // 4 + 2)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(height, width), mode="bilinear")
    return np.ascontiguousarray(up[0].numpy() * 4)


@pytest.mark.parametrize(
    "low, size", [((90, 120), (360, 480)), ((23, 30), (360, 480)), ((5, 7), (17, 30)), ((2, 2), (9, 4)), ((8, 8), (8, 8))]
)
def test_upsample_argmax_equals_the_argmax_of_the_upsampled_logits(low, size):
    rng = np.random.default_rng(sum(low) + sum(size))
    logits = _smooth_logits(rng, 11, *low)
    labels = upsample_argmax(logits, size)
    assert labels.dtype == np.uint8 and labels.shape == size
    _assert_same_but_float_ties(labels, logits, size)


def test_noise_makes_every_cell_disagree_and_the_labels_still_match():
    logits = np.random.default_rng(3).standard_normal((11, 12, 16)).astype(np.float32)
    _assert_same_but_float_ties(upsample_argmax(logits, (47, 63)), logits, (47, 63))


def test_ties_go_to_the_first_class_as_argmax():
    logits = np.zeros((5, 6, 8), np.float32)
    assert not upsample_argmax(logits, (21, 29)).any(), "every class tied: class 0"
    logits[3] = logits[4] = 2.0  # classes 3 and 4 tied everywhere, above the rest
    logits[4, 2:4, 3:5] = 3.0  # class 4 alone ahead in a patch
    assert np.array_equal(upsample_argmax(logits, (21, 29)), _reference(logits, (21, 29)))


def test_to_labels_takes_each_kind_of_output():
    rng = np.random.default_rng(4)
    full = rng.standard_normal((11, 36, 48)).astype(np.float32)
    assert np.array_equal(to_labels(full, (36, 48)), full.argmax(0))
    ids = rng.integers(0, 11, (36, 48), dtype=np.uint8)
    assert to_labels(ids, (36, 48)) is ids
    small = _smooth_logits(rng, 11, 9, 12)
    _assert_same_but_float_ties(to_labels(small, (36, 48)), small, (36, 48))
    with pytest.raises(ValueError, match="upsamples"):
        upsample_argmax(full, (18, 24))


# --- ONNX Runtime stops before the upsample --------------------------------------------------


@pytest.fixture(scope="module")
def reference_onnx(tmp_path_factory):
    """The shipped reference model, exported at its own 360x480: trained logits, as users get them."""
    from edgeseg.export.exporter import export_onnx

    return export_onnx(ROOT / "models/reference/best.pt", tmp_path_factory.mktemp("ref") / "m", verify=False).onnx_path


def test_the_cpu_backend_stops_before_the_upsample_and_its_labels_match_the_full_output(reference_onnx, camvid):
    import cv2

    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.labels import argmax

    with Segmenter.load(reference_onnx, threads=2) as segmenter:
        assert segmenter.backend.early_session is not None
        for path in sorted((camvid / "images" / "val").glob("*.jpg"))[::25]:
            image = cv2.imread(str(path))
            place = segmenter.prepare([image])[0]
            full = segmenter.run(1)[0]
            small = segmenter.run(1, for_labels=True)[0]
            assert full.shape == (11, 360, 480) and small.shape == (11, 90, 120)
            assert np.array_equal(segmenter.finish(small[None], [place])[0], argmax(full))
            assert np.array_equal(segmenter.segment(image), argmax(full))


def test_the_cut_graph_loses_only_the_upsample(reference_onnx):
    import onnx

    from edgeseg.runtime.backends.early_exit import without_last_upsample

    model = onnx.load(str(reference_onnx))
    cut = without_last_upsample(model)
    last = next(node for node in model.graph.node if "logits" in node.output)
    assert [output.name for output in cut.graph.output] == [last.input[0]] and len(model.graph.output) == 1
    kept, before = {node.name for node in cut.graph.node}, {node.name for node in model.graph.node}
    assert kept < before and last.name in before - kept and "Resize" not in {
        node.op_type for node in model.graph.node if node.name in before - kept and node.name != last.name}
    assert {node.op_type for node in cut.graph.node} >= {"Conv", "Resize", "Concat"}, "the decoder's own upsample stays"
    assert {prop.key for prop in cut.metadata_props} == {prop.key for prop in model.metadata_props}


def test_early_exit_false_and_other_last_layers_keep_the_full_output(reference_onnx):
    import onnx

    from edgeseg.runtime.backends import open_backend
    from edgeseg.runtime.backends.early_exit import without_last_upsample

    backend = open_backend(reference_onnx, threads=1, early_exit=False)
    assert backend.early_session is None
    assert backend.infer_for_labels(np.zeros((1, 3, 360, 480), np.float32)).shape == (1, 11, 360, 480)
    for attribute, value in (("coordinate_transformation_mode", b"half_pixel"), ("mode", b"nearest")):
        model = onnx.load(str(reference_onnx))
        last = next(node for node in model.graph.node if "logits" in node.output)
        next(attr for attr in last.attribute if attr.name == attribute).s = value
        assert without_last_upsample(model) is None, attribute
