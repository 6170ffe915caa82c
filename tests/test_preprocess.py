"""Pre/post-processing of the runtime: letterbox, normalisation, conversions, label mapping back."""

import numpy as np
import pytest

from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import Preprocess
from edgeseg.runtime.preprocess import Preprocessor, labels_to_source, to_bgr8


def test_letterbox_pads_grey_and_normalises_rgb_by_255():
    image = np.zeros((30, 90, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    pre = Preprocessor(Preprocess(), (64, 96))
    place = pre(image)
    assert (place.top, place.left, place.height, place.width) == (16, 0, 32, 96)
    chw = pre.buffer[0]
    assert np.allclose(chw[:, 0, 0], 128 / 255)  # padding is grey 128
    assert np.allclose(chw[:, 32, 48], [0, 0, 1])  # RGB order: blue is the last channel


def test_mean_std_and_bgr_order():
    spec = Preprocess(channel_order="BGR", mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5), resize="resize")
    pre = Preprocessor(spec, (8, 8))
    pre(np.full((4, 4, 3), (255, 0, 255), np.uint8))
    assert np.allclose(pre.buffer[0][:, 0, 0], [1.0, -2.0, 1.0])


def test_labels_come_back_at_the_image_size_without_padding():
    pre = Preprocessor(Preprocess(), (64, 96))
    place = pre(np.zeros((30, 90, 3), np.uint8))
    labels = np.full((64, 96), 9, np.uint8)
    labels[16:48] = 3
    back = labels_to_source(labels, place)
    assert back.shape == (30, 90) and set(np.unique(back)) == {3}


@pytest.mark.parametrize(
    "image",
    [np.zeros((5, 6), np.uint8), np.zeros((5, 6, 4), np.uint8), np.full((5, 6, 3), 65535, np.uint16)],
    ids=["grey", "bgra", "16-bit"],
)
def test_conversions_to_8bit_bgr(image):
    out = to_bgr8(image)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8


def test_empty_image_is_an_error():
    with pytest.raises(EdgesegError, match="empty image"):
        to_bgr8(np.zeros((0, 0, 3), np.uint8))


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_the_input_buffer_is_the_reference_formula_per_channel(order):
    spec = Preprocess(channel_order=order, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize="resize")
    image = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    pre = Preprocessor(spec, (24, 32))
    pre(image)
    ordered = image[..., ::-1] if order == "RGB" else image
    expected = (ordered.astype(np.float64) / 255 - spec.mean) / spec.std
    assert pre.buffer.dtype == np.float32
    assert np.allclose(pre.buffer[0], expected.transpose(2, 0, 1), atol=1e-5)


def test_argmax_is_numpys_first_highest_class_on_ties():
    from edgeseg.runtime.segmenter import argmax

    rng = np.random.default_rng(2)
    logits = rng.standard_normal((11, 40, 50)).astype(np.float32)
    logits[4, :10] = logits[7, :10] = 50.0  # a tie between two classes: the first wins
    logits[:, 20, :] = -3.0  # every class tied: class 0
    logits[10, 30:, 40:] = 1e30
    labels = argmax(logits)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, logits.argmax(axis=0))
    assert np.array_equal(argmax(logits[:, :, ::2]), logits[:, :, ::2].argmax(axis=0)), "a strided view"


def test_colorize_paints_each_class_in_its_palette_colour():
    from edgeseg.runtime.visualize import colorize, palette_lut_bgr

    lut = palette_lut_bgr([(128, 64, 128), (0, 0, 192), (10, 20, 30)])
    labels = np.random.default_rng(3).integers(0, 3, (17, 23), dtype=np.uint8)
    labels[0, 0] = 255  # ignore: black
    picture = colorize(labels, lut)
    assert picture.shape == (17, 23, 3) and np.array_equal(picture, lut[labels])
    assert picture[0, 0].tolist() == [0, 0, 0] and lut[0].tolist() == [128, 64, 128][::-1]
