"""edgeseg.data: --data resolution, the three layouts, checks on opening, statistics and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import error_of

from edgeseg.data import DatasetSpec, SegmentationData, list_pairs, preset_names, resolve_dataset, train_augment
from edgeseg.data.layouts import fingerprint

CAMVID = Path(__file__).resolve().parents[2] / "shared/datasets/camvid"
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID}")

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
VOC_PALETTE[255 * 3 : 256 * 3] = [224, 224, 192]


# --- helpers ----------------------------------------------------------------------
def write_rgb(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_label(path: Path, values: np.ndarray, palette: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8))
    if palette is not None:
        image.putpalette(palette)  # turns the L image into a palette (P) image with the same indices
    image.save(path)
    return path


def camvid_tree(root: Path, stems: tuple[str, ...] = ("a", "b", "c"), split: str = "train") -> Path:
    """A tiny folder-layout data set with CamVid's classes (values 0..10, 11 = void)."""
    for i, stem in enumerate(stems):
        write_rgb(root / "images" / split / f"{stem}.jpg", 24, 32, seed=i)
        values = np.arange(24 * 32).reshape(24, 32) % 12
        write_label(root / "labels" / split / f"{stem}.png", values)
    return root


def open_camvid(root: Path, split: str = "train") -> SegmentationData:
    return SegmentationData(resolve_dataset(f"camvid:{root}"), split)


# --- CamVid, the real data ----------------------------------------------------------
@pytest.fixture(scope="module")
def camvid_train() -> SegmentationData:
    if not CAMVID.is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return SegmentationData(resolve_dataset(f"camvid:{CAMVID}"), "train")


@needs_camvid
def test_camvid_splits_and_samples(camvid_train: SegmentationData) -> None:
    val = SegmentationData(resolve_dataset(f"camvid:{CAMVID}"), "val")
    assert (len(camvid_train), len(val)) == (367, 101)
    assert camvid_train.spec.num_classes == 11 and camvid_train.spec.ignore_index == 11
    image, label = val.read(5)
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert label.shape == (360, 480) and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(12))
    assert val.pairs[5][0].stem == val.pairs[5][1].stem


@needs_camvid
def test_camvid_pixel_counts_and_weights(camvid_train: SegmentationData) -> None:
    counts = camvid_train.class_pixel_counts()
    void = sum(int((np.asarray(Image.open(label)) == 11).sum()) for _, label in camvid_train.pairs)
    assert counts.dtype == np.int64 and counts.shape == (11,)
    assert counts.sum() + void == 367 * 360 * 480
    # The data set's README: Road is 31.7 % of train pixels, Sky 16.9 %.
    assert counts[3] / (367 * 360 * 480) == pytest.approx(0.317, abs=0.001)
    assert counts[0] / (367 * 360 * 480) == pytest.approx(0.169, abs=0.001)
    weights = camvid_train.median_frequency_weights()
    assert weights.dtype == np.float32 and weights.shape == (11,)
    assert np.all(np.isfinite(weights)) and np.all(weights > 0)
    assert weights[2] > weights[3]  # rare Pole outweighs common Road
    assert np.median(weights) == pytest.approx(1.0)


@needs_camvid
def test_camvid_fingerprint() -> None:
    spec = resolve_dataset(f"camvid:{CAMVID}")
    train = fingerprint(spec, "train")
    assert len(train) == 64 and train == fingerprint(spec, "train") != fingerprint(spec, "val")


# --- the three forms of --data --------------------------------------------------------
def test_presets_are_valid(tmp_path: Path) -> None:
    assert preset_names() == ("camvid", "cityscapes", "voc")
    (tmp_path / "JPEGImages").mkdir()
    specs = {name: resolve_dataset(f"{name}:{tmp_path}") for name in preset_names()}
    assert specs["camvid"].palette[4] == (60, 40, 222) and specs["camvid"].classes[10] == "Bicyclist"
    assert specs["voc"].num_classes == 21 and specs["voc"].palette[15] == (192, 128, 128)
    assert specs["voc"].classes[-1] == "tvmonitor" and specs["voc"].ignore_index == 255
    assert specs["cityscapes"].num_classes == 19 and specs["cityscapes"].palette[13] == (0, 0, 142)
    assert all(spec.root == tmp_path.resolve() for spec in specs.values())


def test_folder_with_dataset_toml(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path / "mine")
    (root / "dataset.toml").write_text(
        'layout = "folder"\nignore_index = 255\nclasses = ["a", "b"]\npalette = [[0, 0, 0], [255, 0, 0]]\n'
        "[label_map]\n0 = 0\n1 = 1\n2 = 1\n"
    )
    spec = resolve_dataset(str(root))
    assert spec.name == "mine" and spec.root == root.resolve() and spec.num_classes == 2
    data = SegmentationData(spec, "train")
    raw = np.arange(24 * 32).reshape(24, 32) % 12
    assert np.array_equal(data.read_label(0), np.select([raw == 0, raw <= 2], [0, 1], 255))
    assert data.class_pixel_counts().tolist() == [(raw == 0).sum() * 3, ((raw == 1) | (raw == 2)).sum() * 3]


def test_toml_file_with_relative_root(tmp_path: Path) -> None:
    camvid_tree(tmp_path / "data" / "street")
    toml = tmp_path / "configs" / "street.toml"
    toml.parent.mkdir()
    preset = (Path(__file__).resolve().parents[1] / "edgeseg/data/presets/camvid.toml").read_text()
    toml.write_text(preset.replace('name = "camvid"\n', 'root = "../data/street"\n'))
    spec = resolve_dataset(str(toml))
    assert spec.name == "street" and spec.root == (tmp_path / "data" / "street").resolve()
    assert len(SegmentationData(spec, "train")) == 3


# --- VOC and Cityscapes layouts ---------------------------------------------------------
def test_voc_layout_reads_palette_indices(tmp_path: Path) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    values = np.zeros((20, 30), np.uint8)
    values[5:10, 5:10], values[12:, :] = 15, 255
    for name in ("2007_000032", "2007_000039", "2008_000001"):
        write_rgb(voc / "JPEGImages" / f"{name}.jpg", 20, 30)
        write_label(voc / "SegmentationClass" / f"{name}.png", values, VOC_PALETTE)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000039\n2007_000032\n")
    assert Image.open(voc / "SegmentationClass" / "2007_000032.png").mode == "P"

    spec = resolve_dataset(f"voc:{tmp_path / 'VOCdevkit'}")  # the devkit folder resolves to its one VOC20xx
    assert spec.root == voc.resolve()
    data = SegmentationData(spec, "train")
    assert [image.stem for image, _ in data.pairs] == ["2007_000032", "2007_000039"]
    image, label = data.read(0)
    assert image.shape == (20, 30, 3) and np.array_equal(label, values)
    counts = data.class_pixel_counts()
    assert counts[15] == 2 * 25 and counts[0] == 2 * (20 * 30 - 25 - 8 * 30) and counts.sum() == counts[[0, 15]].sum()


def test_cityscapes_layout_maps_label_ids(tmp_path: Path) -> None:
    raw = np.array([[0, 7, 26, 33], [24, 1, 255, 31]] * 4, np.uint8)
    for city, frame in (("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")):
        write_rgb(tmp_path / "leftImg8bit" / "val" / city / f"{frame}_leftImg8bit.png", 8, 4)
        write_label(tmp_path / "gtFine" / "val" / city / f"{frame}_gtFine_labelIds.png", raw)
        write_rgb(tmp_path / "gtFine" / "val" / city / f"{frame}_gtFine_color.png", 8, 4)
    data = SegmentationData(resolve_dataset(f"cityscapes:{tmp_path}"), "val")
    assert [label.parent.name for _, label in data.pairs] == ["aachen", "bremen"]
    expected = np.array([[255, 0, 13, 18], [11, 255, 255, 16]] * 4, np.uint8)
    assert np.array_equal(data.read_label(1), expected)
    assert data.class_pixel_counts()[[0, 11, 13, 16, 18]].tolist() == [8, 8, 8, 8, 8]


def test_folder_layout_reads_palette_label_as_indices(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path, stems=("a",))
    values = np.full((24, 32), 3, np.uint8)
    write_label(root / "labels" / "train" / "a.png", values, VOC_PALETTE)
    assert np.array_equal(open_camvid(root).read_label(0), values)


def test_grey_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path, stems=("a", "b"))
    Image.new("L", (32, 24), 77).save(root / "images" / "train" / "a.jpg")
    (root / "images" / "train" / "b.jpg").unlink()
    Image.new("RGBA", (32, 24), (10, 20, 30, 40)).save(root / "images" / "train" / "b.png")
    data = open_camvid(root)
    grey, rgba = data.read_image(0), data.read_image(1)
    assert grey.shape == rgba.shape == (24, 32, 3)
    assert abs(int(grey[0, 0, 0]) - 77) <= 2 and rgba[0, 0].tolist() == [10, 20, 30]


# --- errors -------------------------------------------------------------------------
def test_image_without_label(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    (root / "labels" / "train" / "b.png").unlink()
    message = error_of(open_camvid, root)
    assert "1 image has no label" in message and "b.jpg" in message and str(root / "labels" / "train") in message


def test_label_without_image(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    (root / "images" / "train" / "a.jpg").unlink()
    (root / "images" / "train" / "c.jpg").unlink()
    message = error_of(open_camvid, root)
    assert "2 labels have no image" in message and "a.png, c.png" in message


def test_size_mismatch(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    write_label(root / "labels" / "train" / "c.png", np.zeros((24, 30), np.uint8))
    message = error_of(open_camvid, root)
    assert "1 label differs in size" in message and "labels/train/c.png 30x24 vs image 32x24" in message


def test_out_of_range_label_value(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    values = np.zeros((24, 32), np.uint8)
    values[0, 0], values[1, 1] = 12, 200
    write_label(root / "labels" / "train" / "a.png", values)
    message = error_of(open_camvid, root)
    assert "labels/train/a.png has 12, 200" in message and "0..10 and ignore 11" in message
    assert len(SegmentationData(resolve_dataset(f"camvid:{root}"), "train", check=False)) == 3


@pytest.mark.parametrize("broken", ["images/train/b.jpg", "labels/train/b.png"])
def test_unreadable_file(tmp_path: Path, broken: str) -> None:
    root = camvid_tree(tmp_path)
    (root / broken).write_bytes(b"this is not an image")
    message = error_of(open_camvid, root)
    assert "1 file cannot be read" in message and broken in message


def test_colour_label_is_rejected(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    write_rgb(root / "labels" / "train" / "a.png", 24, 32)
    assert "labels/train/a.png (RGB image" in error_of(open_camvid, root)


def test_empty_and_missing_split(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    (root / "images" / "val").mkdir()
    (root / "labels" / "val").mkdir()
    assert "split 'val' has no (image, label) pairs" in error_of(open_camvid, root, "val")
    message = error_of(open_camvid, root, "test")
    assert str(root / "images" / "test") in message and "splits here: train, val" in message


def test_wrong_layout_names_expected_folder(tmp_path: Path) -> None:
    camvid_tree(tmp_path)
    message = error_of(SegmentationData, resolve_dataset(f"cityscapes:{tmp_path}"), "train")
    assert str(tmp_path / "leftImg8bit") in message
    assert "JPEGImages" in error_of(resolve_dataset, f"voc:{tmp_path}")


def test_unknown_preset_missing_root_and_bad_forms(tmp_path: Path) -> None:
    message = error_of(resolve_dataset, f"camvidd:{tmp_path}")
    assert "unknown preset 'camvidd'" in message and "camvid, cityscapes, voc" in message
    missing = tmp_path / "nowhere"
    message = error_of(resolve_dataset, f"camvid:{missing}")
    assert f"root folder {missing} does not exist" in message
    message = error_of(resolve_dataset, "camvid")
    assert message.startswith("--data camvid:") and "NAME:ROOT" in message and "dataset.toml" in message
    assert "has no dataset.toml" in error_of(resolve_dataset, str(tmp_path))
    assert "no such file" in error_of(resolve_dataset, str(tmp_path / "absent.toml"))


GOOD = 'layout = "folder"\nignore_index = 255\nclasses = ["a"]\npalette = [[0, 0, 0]]\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('layout = "folder"\nclasses = [', "malformed TOML"),
        (GOOD.replace('["a"]', '["a", "b"]'), "palette has 1 entries for 2 classes"),
        (GOOD.replace('"folder"', '"tiles"'), "layout 'tiles'"),
        (GOOD.replace("255", "0"), "ignore_index 0"),
        (GOOD.replace("[[0, 0, 0]]", "[[0, 0, 256]]"), "[R, G, B] triples"),
        (GOOD + "[label_map]\n3 = 7\n", "label_map 3 = 7;"),
        (GOOD + "[label_map]\n300 = 0\n", "label_map key '300'"),
        (GOOD.replace("classes", "clases"), "unknown key(s) clases"),
    ],
)
def test_bad_toml(tmp_path: Path, body: str, expected: str) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(body)
    message = error_of(resolve_dataset, str(toml))
    assert str(toml) in message and expected in message


def test_list_pairs_matches_dataset(tmp_path: Path) -> None:
    spec = resolve_dataset(f"camvid:{camvid_tree(tmp_path)}")
    assert isinstance(spec, DatasetSpec)
    names = [(image.name, label.name) for image, label in list_pairs(spec, "train")]
    assert names == [("a.jpg", "a.png"), ("b.jpg", "b.png"), ("c.jpg", "c.png")]
    before = fingerprint(spec, "train")
    with (tmp_path / "images" / "train" / "c.jpg").open("ab") as handle:
        handle.write(b"x")  # a size change alone must change the fingerprint
    assert fingerprint(spec, "train") != before


# --- augmentation ---------------------------------------------------------------------
def sample(h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = (np.arange(h * w).reshape(h, w) // 7 % 11).astype(np.uint8)
    return image, label


def test_train_augment_shapes_values_and_determinism() -> None:
    image, label = sample()
    outs = [train_augment(image, label, (48, 64), np.random.default_rng(seed), 11) for seed in (3, 3, 4)]
    for out_image, out_label in outs:
        assert out_image.shape == (48, 64, 3) and out_image.dtype == np.uint8
        assert out_label.shape == (48, 64) and out_label.dtype == np.uint8
        assert set(np.unique(out_label)) <= set(range(12))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], outs[2][0])


def test_train_augment_pads_label_with_ignore() -> None:
    image, label = sample(30, 40)
    out_image, out_label = train_augment(image, label, (64, 96), np.random.default_rng(0), 255, scale_range=(1.0, 1.0))
    assert out_image.shape == (64, 96, 3)
    assert (out_label == 255).sum() == 64 * 96 - 30 * 40
    assert set(np.unique(out_label[out_label != 255])) == set(np.unique(label))


def test_train_augment_flips_and_scales() -> None:
    image, label = sample()
    flips = set()
    for seed in range(12):
        _, out = train_augment(image, label, (60, 80), np.random.default_rng(seed), 11, scale_range=(1.0, 1.0))
        flips.add("flip" if np.array_equal(out, label[:, ::-1]) else "same" if np.array_equal(out, label) else "?")
    assert flips == {"flip", "same"}
    _, small = train_augment(image, label, (60, 80), np.random.default_rng(0), 11, scale_range=(0.5, 0.5))
    assert (small == 11).sum() == 60 * 80 - 30 * 40


def test_colour_jitter_strength() -> None:
    image, label = sample()
    for seed in range(4):  # strength 0: the image's own pixels, at most flipped
        out, _ = train_augment(image, label, (60, 80), np.random.default_rng(seed), 11, scale_range=(1.0, 1.0), jitter=0)
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    grey = np.full((60, 80, 3), 128, np.uint8)
    spread = []
    for strength in (0.5, 2.0):
        means = [
            train_augment(grey, label, (60, 80), np.random.default_rng(seed), 11, scale_range=(1.0, 1.0), jitter=strength)[0].mean()
            for seed in range(16)
        ]
        spread.append(np.std(means))
    assert spread[1] > 2 * spread[0] > 0  # brightness varies more at a higher strength


def test_class_weighting_modes(tmp_path: Path) -> None:
    data = open_camvid(camvid_tree(tmp_path))
    counts = data.class_pixel_counts().astype(np.float64)
    median = data.median_frequency_weights()
    assert np.allclose(data.class_weights("sqrt-median-freq"), np.sqrt(median))
    assert np.allclose(data.class_weights("log"), 1 / np.log(1.02 + counts / counts.sum()))
    assert data.class_weights("none") is None and np.array_equal(data.class_weights("median-freq"), median)
    with pytest.raises(ValueError):
        data.class_weights("inverse")


@needs_camvid
def test_camvid_log_weights_are_bounded(camvid_train: SegmentationData) -> None:
    weights = camvid_train.class_weights("log")
    assert weights.dtype == np.float32 and np.all(weights > 0) and weights.max() < 1 / np.log(1.02)
    assert weights[10] > weights[2] > weights[3]  # Bicyclist (0.3 %) > Pole (1.0 %) > Road (31.7 %)
