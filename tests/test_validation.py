"""Bad model metadata and bad calibration manifests: each refused with one line, never a traceback.

Model files are real: ONNX graphs built with onnx.helper (tiny 1x1 convolutions, so every case
loads in ONNX Runtime in milliseconds) carrying tampered metadata_props, and checkpoints written
with torch.save. Calibration manifests point into a small data set made here. The property
tests generate metadata and manifest entries nobody wrote down and check that parsing gives a
valid ModelMeta or an EdgesegError, nothing else.
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_one_line_error, run_cli
from edgeseg.export import calibration
from edgeseg.export.calibration import load_calibration_set, make_calibration_manifest
from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta, default_class_names, default_palette
from edgeseg.core.onnx_meta import META_KEY, meta_properties, onnx_metadata, parse_meta, read_metadata_props
from edgeseg.runtime import Segmenter

H, W, C = 96, 128, 11
GOOD = ModelMeta(num_classes=C, classes=default_class_names(C), palette=default_palette(C), ignore_index=255,
                 input_size=(H, W))  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def props_with(change=None, output_kind="logits", meta=GOOD) -> dict:
    """Valid metadata_props, with the edgeseg JSON replaced by ``change(data)``."""
    props = meta_properties(meta, output_kind, "fp32", "0" * 64)
    if change is not None:
        props[META_KEY] = json.dumps(change(json.loads(props[META_KEY])))
    return props


# --- tiny real ONNX models ----------------------------------------------------------------------
def _value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def write_onnx(path: Path, props: dict, kind="logits", in_shape=(1, 3, H, W), channels=C, in_elem=TensorProto.FLOAT,
               stride=1, two_inputs=False) -> Path:  # fmt: skip
    """A real model: 1x1 convolution to ``channels`` scores (+ ArgMax and Cast for labels)."""
    nodes, inits = [], []
    inputs = [_value("images", in_elem, list(in_shape))]
    if len(in_shape) != 4:  # a graph of another rank: the output is the input
        nodes.append(helper.make_node("Identity", ["images"], ["logits"]))
        outputs = [_value("logits", in_elem, list(in_shape))]
    else:
        source = "images"
        if in_elem != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT))
            source = "as_float"
        if two_inputs:
            inputs.append(_value("extra", TensorProto.FLOAT, list(in_shape)))
            nodes.append(helper.make_node("Add", [source, "extra"], ["summed"]))
            source = "summed"
        weight = np.random.default_rng(0).standard_normal((channels, in_shape[1], 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, "weight"))
        nodes.append(helper.make_node("Conv", [source, "weight"], ["logits"], strides=[stride, stride]))
        out_hw = [d // stride if isinstance(d, int) else d for d in in_shape[2:]]
        if kind == "labels":
            nodes.append(helper.make_node("ArgMax", ["logits"], ["ids"], axis=1, keepdims=0))
            nodes.append(helper.make_node("Cast", ["ids"], ["labels"], to=TensorProto.UINT8))
            outputs = [_value("labels", TensorProto.UINT8, [in_shape[0], *out_hw])]
        else:
            outputs = [_value("logits", TensorProto.FLOAT, [in_shape[0], channels, *out_hw])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def refused_load(path: Path, *fragments: str) -> str:
    with pytest.raises(EdgesegError) as err:
        Segmenter.load(path)
    text = one_line(err)
    assert path.name in text, text
    for fragment in fragments:
        assert fragment in text, text
    return text


def test_tiny_models_load_and_segment(tmp_path):
    """The control: the same builders with honest metadata give models that work."""
    image = np.zeros((50, 70, 3), np.uint8)
    logits = write_onnx(tmp_path / "logits.onnx", props_with())
    labels = write_onnx(tmp_path / "labels.onnx", props_with(output_kind="labels"), kind="labels", in_shape=("N", 3, H, W))
    for path in (logits, labels):
        with Segmenter.load(path) as segmenter:
            assert segmenter.segment(image).shape == (50, 70)


# --- the edgeseg metadata entry itself ----------------------------------------------------------
def _set(key, value):
    return lambda data: {**data, key: value}


def _pre(key, value):
    return lambda data: {**data, "preprocess": {**data["preprocess"], key: value}}


def _drop(key):
    return lambda data: {k: v for k, v in data.items() if k != key}


def _whole(value):
    return lambda data: value


METADATA_CASES = {
    # what the entry is
    "entry is a JSON string": (_whole(json.dumps({"num_classes": 11})), "JSON string, not a JSON object"),
    "entry is null": (_whole(None), "JSON null, not a JSON object"),
    "entry is a list": (_whole([1, 2]), "JSON list"),
    "entry is a number": (_whole(3), "JSON number"),
    "export facts missing": (_drop("output_kind"), "no output_kind"),
    "output_kind unknown": (_set("output_kind", "argmax"), "output_kind \"argmax\""),
    "output_kind null": (_set("output_kind", None), "output_kind null"),
    "precision unknown": (_set("precision", "int4"), "precision \"int4\""),
    "source_sha256 a number": (_set("source_sha256", 123), "source_sha256 123"),
    "edgeseg_version a list": (_set("edgeseg_version", [0, 1]), "edgeseg_version"),
    # classes
    "num_classes missing": (_drop("num_classes"), "has no num_classes"),
    "num_classes 0": (_set("num_classes", 0), "num_classes 0 must be an integer from 1 to 256"),
    "num_classes 257": (_set("num_classes", 257), "num_classes 257"),
    "num_classes a string": (_set("num_classes", "11"), "num_classes \"11\""),
    "num_classes a float": (_set("num_classes", 11.0), "num_classes 11.0"),
    "num_classes a boolean": (_set("num_classes", True), "num_classes true"),
    "num_classes huge": (_set("num_classes", 10**30), "num_classes"),
    "classes a string": (_set("classes", "Sky"), "classes \"Sky\" must be a list"),
    "two class names for 11": (_set("classes", ["Sky", "Road"]), "classes has 2 entries; it needs 11"),
    "an empty class name": (_set("classes", [""] + list(GOOD.classes[1:])), "classes[0]"),
    "a class name that is a number": (_set("classes", [5] + list(GOOD.classes[1:])), "classes[0] 5"),
    "a class name with a newline": (_set("classes", ["a\nb"] + list(GOOD.classes[1:])), "classes[0]"),
    "repeated class names": (_set("classes", ["x"] * C), "repeat a name"),
    # palette
    "palette of 1000": (_set("palette", [[0, 0, 0]] * 1000), "palette has 1000 entries; it needs 11"),
    "palette a negative number": (_set("palette", -5), "palette -5 must be a list"),
    "palette null": (_set("palette", None), "palette null"),
    "a colour with two values": (_set("palette", [[1, 2]] + [[0, 0, 0]] * 10), "palette[0] has 2 entries"),
    "a colour value of 256": (_set("palette", [[256, 0, 0]] * C), "palette[0] 256"),
    "a colour value of -1": (_set("palette", [[0, -1, 0]] * C), "palette[0] -1"),
    "a colour that is a name": (_set("palette", ["red"] * C), "palette[0] \"red\""),
    # ignore_index
    "ignore_index -1": (_set("ignore_index", -1), "ignore_index -1"),
    "ignore_index a class id": (_set("ignore_index", 3), "ignore_index 3"),
    "ignore_index 300": (_set("ignore_index", 300), "ignore_index 300"),
    "ignore_index a string": (_set("ignore_index", "255"), "ignore_index \"255\""),
    # input_size
    "input_size -8": (_set("input_size", -8), "input_size -8"),
    "input_size negative side": (_set("input_size", [-8, 128]), "multiples of 8 from 32 to 4096"),
    "input_size one element": (_set("input_size", [96]), "input_size has 1 entries"),
    "input_size 100000": (_set("input_size", [100000, 100000]), "input_size [100000, 100000]"),
    "input_size not a multiple of 8": (_set("input_size", [100, 128]), "input_size [100, 128]"),
    "input_size zero": (_set("input_size", [0, 0]), "input_size [0, 0]"),
    "input_size three values": (_set("input_size", [96, 128, 3]), "input_size has 3 entries"),
    "input_size strings": (_set("input_size", ["96", "128"]), "input_size"),
    # preprocess
    "preprocess a string": (_set("preprocess", "abc"), "preprocess \"abc\" must be a JSON object"),
    "scale abc": (_pre("scale", "abc"), "preprocess.scale \"abc\" must be a finite number"),
    "scale 0": (_pre("scale", 0), "preprocess.scale 0 must be greater than 0"),
    "scale NaN": (_pre("scale", float("nan")), "preprocess.scale NaN"),
    "scale Infinity": (_pre("scale", float("inf")), "preprocess.scale Infinity"),
    "std 0": (_pre("std", [0, 1, 1]), "preprocess.std [0, 1, 1] must be greater than 0"),
    "std negative": (_pre("std", [1, -1, 1]), "preprocess.std"),
    "std two values": (_pre("std", [1, 1]), "preprocess.std has 2 entries"),
    "mean not numbers": (_pre("mean", ["a", 0, 0]), "preprocess.mean[0] \"a\""),
    "channel_order RGBA": (_pre("channel_order", "RGBA"), "preprocess.channel_order \"RGBA\""),
    "resize mode unknown": (_pre("resize", "stretch"), "preprocess.resize \"stretch\""),
    "pad_value 300": (_pre("pad_value", 300), "preprocess.pad_value 300"),
    "pad_value -1": (_pre("pad_value", -1), "preprocess.pad_value -1"),
    "preprocess unknown setting": (_pre("gamma", 2.2), "unknown settings [\"gamma\"]"),
    # architecture and provenance
    "backbone unknown": (_set("backbone", "resnet50"), "backbone \"resnet50\""),
    "output_stride 32": (_set("output_stride", 32), "output_stride 32"),
    "provenance a list": (_set("provenance", [1]), "provenance [1] must be an object"),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_bad_metadata_is_one_line_naming_file_and_fix(case):
    change, fragment = METADATA_CASES[case]
    with pytest.raises(EdgesegError) as err:
        parse_meta(props_with(change), "model.onnx")
    text = one_line(err)
    assert text.startswith("model.onnx: ") and fragment in text and "re-export it with `edgeseg export`" in text, text


@pytest.mark.parametrize(
    "properties,fragment",
    [
        ({META_KEY: "{"}, "not JSON"),
        ({META_KEY: "[" * 100000 + "]" * 100000}, "not JSON"),  # nested past the recursion limit
        ({"classes": "[]"}, "not exported by edgeseg"),
        ([["edgeseg", "{}"]], "not exported by edgeseg"),  # an engine manifest whose onnx_metadata is a list
        ({META_KEY: {"num_classes": 11}}, "not a string"),  # ... or whose edgeseg entry is an object
        (None, "not exported by edgeseg"),
    ],
    ids=["truncated JSON", "deeply nested", "no edgeseg key", "mapping is a list", "entry not a string", "mapping null"],
)
def test_damaged_metadata_containers(properties, fragment):
    with pytest.raises(EdgesegError) as err:
        parse_meta(properties, "model.engine")
    assert fragment in one_line(err)


def test_damaged_protobuf_is_one_line(tmp_path):
    good = write_onnx(tmp_path / "good.onnx", props_with()).read_bytes()
    for payload in (good[: len(good) // 2], b"\xff" * 40, good.replace(b"edgeseg", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9")):
        try:
            read_metadata_props(payload)
        except EdgesegError as err:
            assert "\n" not in str(err)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 20)
    with pytest.raises(EdgesegError) as err:
        onnx_metadata(garbage)
    assert "garbage.onnx" in one_line(err)


def test_a_damaged_onnx_file_is_called_unreadable_not_foreign(tmp_path, monkeypatch):
    """A file cut short, zeros or nothing is "not a readable ONNX model", with or without the onnx package (a device
    has none): never "not exported by edgeseg", which sends the user to re-export a model that was never the problem."""
    good = write_onnx(tmp_path / "good.onnx", props_with()).read_bytes()
    cases = {"cut.onnx": good[: len(good) // 2], "cut_early.onnx": good[:40], "zeros.onnx": bytes(64), "empty.onnx": b""}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
    foreign = write_onnx(tmp_path / "foreign.onnx", {})  # sound ONNX, no edgeseg metadata: the other message
    for with_onnx in (True, False):
        if not with_onnx:
            monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails, as on a device
        for name in cases:
            with pytest.raises(EdgesegError) as err:
                onnx_metadata(tmp_path / name)
            assert f"{name}: not a readable ONNX model" in one_line(err), with_onnx
        with pytest.raises(EdgesegError, match="foreign.onnx: not exported by edgeseg"):
            parse_meta(onnx_metadata(foreign), foreign)


# --- the graph against its metadata ---------------------------------------------------------------
GRAPH_CASES = {
    "input rank 0": (dict(in_shape=()), {}, "input has shape []"),
    "input rank 3": (dict(in_shape=(3, H, W)), {}, f"input has shape [3, {H}, {W}]"),
    "input rank 5": (dict(in_shape=(1, 1, 3, H, W)), {}, "needs [N, 3, 96, 128]"),
    "one input channel": (dict(in_shape=(1, 1, H, W)), {}, f"[1, 1, {H}, {W}]"),
    "input size differs from metadata": (dict(in_shape=(1, 3, 64, 64)), {}, "input_size 96x128"),
    "dynamic height and width": (dict(in_shape=("N", 3, "H", "W")), {}, "[N, 3, H, W]"),
    "uint8 input": (dict(in_elem=TensorProto.UINT8), {}, "input is tensor(uint8), not float32"),
    "two inputs": (dict(two_inputs=True), {}, "2 inputs"),
    "labels on a logits model": (dict(), dict(output_kind="labels"), "output_kind labels, but the output is float32"),
    "logits on a labels model": (dict(kind="labels"), {}, "output_kind logits, but the output is uint8"),
    "2 class names on an 11-channel model": (
        dict(), dict(meta=ModelMeta(num_classes=2, classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)),
                                    ignore_index=255, input_size=(H, W))),  # fmt: skip
        "outputs 11 class scores but its metadata names 2 classes"),
    "logits smaller than the input": (dict(stride=2), {}, "not at the input size 96x128"),
}


@pytest.mark.parametrize("case", sorted(GRAPH_CASES))
def test_graph_that_disagrees_with_its_metadata_is_refused(case, tmp_path):
    graph, meta_options, fragment = GRAPH_CASES[case]
    path = write_onnx(tmp_path / "model.onnx", props_with(**meta_options), **graph)
    refused_load(path, fragment, "re-export it with `edgeseg export`")


# --- the same through the commands a user runs --------------------------------------------------------
@pytest.fixture
def one_image(tmp_path):
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), np.full((40, 60, 3), 90, np.uint8))
    return path


def test_cli_commands_refuse_bad_models_in_one_line(tmp_path, one_image):
    scale = write_onnx(tmp_path / "scale.onnx", props_with(_pre("scale", "abc")))
    rank3 = write_onnx(tmp_path / "rank3.onnx", props_with(), in_shape=(3, H, W))
    rank0 = write_onnx(tmp_path / "rank0.onnx", props_with(), in_shape=())
    labels = write_onnx(tmp_path / "labels.onnx", props_with(output_kind="labels"))
    huge = write_onnx(tmp_path / "huge.onnx", props_with(_set("input_size", [100000, 100000])))
    assert_one_line_error(run_cli("predict", scale, one_image, "--out", tmp_path / "p"), "scale.onnx", "preprocess.scale")
    assert_one_line_error(run_cli("predict", rank3, one_image, "--out", tmp_path / "p"), "rank3.onnx", "[3, 96, 128]")
    assert_one_line_error(run_cli("bench", labels, "--iters", "1"), "labels.onnx", "output_kind labels")
    assert_one_line_error(run_cli("bench", huge, "--iters", "1"), "huge.onnx", "input_size [100000, 100000]")
    done = run_cli("run", rank0, "--source", str(one_image), "--out", tmp_path / "run.mp4", "--no-show")
    assert_one_line_error(done, "rank0.onnx", "input has shape []")
    assert not (tmp_path / "p").exists() and not (tmp_path / "run.mp4").exists()


def test_eval_refuses_bad_models_in_one_line(tmp_path, camvid):
    bad = write_onnx(tmp_path / "std0.onnx", props_with(_pre("std", [0, 1, 1])))
    assert_one_line_error(run_cli("eval", bad, "--data", f"camvid:{camvid}", "--limit", "1"), "std0.onnx", "preprocess.std")
    rank3 = write_onnx(tmp_path / "rank3.onnx", props_with(), in_shape=(3, H, W))
    assert_one_line_error(run_cli("eval", rank3, "--data", f"camvid:{camvid}", "--limit", "1"), "rank3.onnx", "input")


# --- checkpoints ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_state():
    from edgeseg.model.network import build_model

    return build_model(C).state_dict()


def _save_checkpoint(path: Path, meta, state) -> Path:
    import torch

    torch.save({"format": "edgeseg", "format_version": 1, "meta": meta, "model": state}, path)
    return path


def _meta_dict(**changes):
    data = GOOD.to_dict()
    data.update(changes)
    return data


CHECKPOINT_CASES = {
    "input_size [0, 0]": (_meta_dict(input_size=[0, 0]), None, "model metadata input_size [0, 0]"),
    "input_size one element": (_meta_dict(input_size=[96]), None, "input_size has 1 entries"),
    "meta a string": ("{\"num_classes\": 11}", None, "model metadata is a string, not a JSON object"),
    "meta without classes": ({k: v for k, v in GOOD.to_dict().items() if k != "classes"}, None, "has no classes"),
    "std 0": (_meta_dict(preprocess={**GOOD.to_dict()["preprocess"], "std": [0.0, 1.0, 1.0]}), None, "preprocess.std"),
    "2 classes on 11-class weights": (
        _meta_dict(num_classes=2, classes=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]]), None,
        "the classifier has 11 classes but the metadata names 2"),
    "weights a list": (GOOD.to_dict(), [1, 2, 3], "weights are a list, not a state_dict"),
    "a weight that is a number": (GOOD.to_dict(), "number", "cls_conv.bias is not a tensor (int)"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_metadata_is_one_line(case, tmp_path, tiny_state):
    meta, state, fragment = CHECKPOINT_CASES[case]
    if state == "number":
        state = dict(tiny_state, **{"cls_conv.bias": 3})
    path = _save_checkpoint(tmp_path / "bad.pt", meta, tiny_state if state is None else state)
    text = refused_load(path, fragment)
    assert "edgeseg train" in text or "architecture" in text


def test_cli_refuses_checkpoint_with_zero_input_size(tmp_path, one_image, tiny_state):
    path = _save_checkpoint(tmp_path / "zero.pt", _meta_dict(input_size=[0, 0]), tiny_state)
    assert_one_line_error(run_cli("predict", path, one_image, "--out", tmp_path / "p"), "zero.pt", "input_size [0, 0]")


# --- calibration manifests ------------------------------------------------------------------------------
TRAIN, VAL = 34, 4


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A two-class folder-layout data set: 34 train and 4 val images of 16x16."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN), ("val", VAL)):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for index in range(count):
            cv2.imwrite(str(root / "images" / split / f"{split}{index:02d}.png"), rng.integers(0, 255, (16, 16, 3), np.uint8))
            cv2.imwrite(str(root / "labels" / split / f"{split}{index:02d}.png"), rng.integers(0, 2, (16, 16), np.uint8))
    (root / "dataset.toml").write_text(
        'name = "tiny"\nlayout = "folder"\nignore_index = 255\nclasses = ["a", "b"]\npalette = [[0, 0, 0], [255, 255, 255]]\n'
    )
    return root


@pytest.fixture(scope="module")
def good_manifest(tiny_data, tmp_path_factory) -> dict:
    path = make_calibration_manifest(str(tiny_data), "train", 32, tmp_path_factory.mktemp("calib") / "set")
    return json.loads(path.read_text())


def write_manifest(folder: Path, content) -> Path:
    path = folder / "manifest.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture
def hashed(monkeypatch):
    """Every file the calibration code hashes, to prove that a refused entry is never opened."""
    seen = []
    real = calibration.file_sha256

    def spy(path):
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(calibration, "file_sha256", spy)
    return seen


def test_the_written_manifest_loads_and_records_its_split(good_manifest, tiny_data, tmp_path):
    content = dict(good_manifest, root=str(tiny_data))
    assert content["split"] == "train" and content["layout"] == "folder"
    assert len(load_calibration_set(write_manifest(tmp_path, content))) == 32


def _manifest_case(good: dict, data: Path, change) -> dict:
    content = json.loads(json.dumps(good))
    content["root"] = content["root_absolute"] = str(data)
    result = change(content, data)
    return content if result is None else result


def _entry(index, value):
    def change(content, data):
        content["images"][index] = value
    return change


def _path(index, value):
    def change(content, data):
        content["images"][index]["path"] = value
    return change


def _true_sha(relative):
    """An entry with its true sha256: the attack in the issue, not a stale manifest."""
    def change(content, data):
        from edgeseg.core.fileio import file_sha256

        target = (data / relative).resolve() if not Path(relative).is_absolute() else Path(relative)
        digest = file_sha256(target) if target.is_file() else "0" * 64
        content["images"][0] = {"path": relative, "sha256": digest}
    return change


def _field(key, value):
    def change(content, data):
        content[key] = value
    return change


def _without(key):
    def change(content, data):
        del content[key]
    return change


def _no_root(content, data):
    content["root"] = content["root_absolute"] = "/no/such/data/set"


def _root_at_images(content, data):
    """A manifest from before the layout was recorded, whose root is not a data set root."""
    del content["layout"]
    content["root"] = content["root_absolute"] = str(data / "images")


def _changed(content, data):
    content["images"][5]["sha256"] = "0" * 64


def _val_split(content, data):
    content["split"] = "val"
    content["images"] = [{"path": f"images/val/val{i:02d}.png", "sha256": "0" * 64} for i in range(VAL)]


MANIFEST_CASES = {
    "a val image through ..": (_true_sha("images/train/../val/val00.png"), "no '..'"),
    "a test image through ../../": (_true_sha("../data/images/val/val01.png"), "no '..'"),
    "/etc/passwd": (_true_sha("/etc/passwd"), "must be relative to the data set root"),
    "an absolute path inside the root": (lambda c, d: _path(0, str(d / c["images"][0]["path"]))(c, d), "must be relative"),
    "a val image by its own path": (_true_sha("images/val/val00.png"), "leads outside images/train/"),
    "the labels folder": (_path(0, "labels/train/train00.png"), "leads outside images/train/"),
    "the split folder itself": (_path(0, "images/train"), "leads outside images/train/"),
    "home directory": (_path(0, "~/.ssh/id_rsa"), "must be relative"),
    "backslashes": (_path(0, "images\\train\\train00.png"), "with / separators"),
    "a NUL byte": (_path(0, "images/train/train00.png\0.jpg"), "must be relative"),
    "an entry that is a string": (_entry(0, "images/train/train00.png"), "images[0] is a string, not an object"),
    "an entry that is null": (_entry(3, None), "images[3] is a null, not an object"),
    "an entry that is a list": (_entry(1, ["images/train/train00.png", "0" * 64]), "images[1] is a list"),
    "an entry without sha256": (_entry(2, {"path": "images/train/train00.png"}), "images[2] sha256 null"),
    "sha256 too short": (_entry(0, {"path": "images/train/train00.png", "sha256": "abc"}), "is not 64 hex digits"),
    "sha256 not hex": (_entry(0, {"path": "images/train/train00.png", "sha256": "z" * 64}), "64 hex digits"),
    "sha256 a number": (_entry(0, {"path": "images/train/train00.png", "sha256": 12}), "sha256 12"),
    "an entry without path": (_entry(0, {"sha256": "0" * 64}), "images[0] has no path"),
    "an empty path": (_path(0, ""), "images[0] has no path"),
    "a path that is a number": (_path(0, 7), "images[0] has no path"),
    "a repeated entry": (lambda c, d: _entry(1, dict(c["images"][0]))(c, d), "images[1] repeats"),
    "split val": (_val_split, "split \"val\" is used to evaluate"),
    "split test": (_field("split", "test"), "split \"test\" is used to evaluate"),
    "split trainval": (_field("split", "trainval"), "split \"trainval\" is used to evaluate"),
    "split with a path": (_field("split", "../val"), "must be a plain split name"),
    "split missing": (_without("split"), "'split' null must be a non-empty string"),
    "split a number": (_field("split", 1), "'split' 1"),
    "images missing": (_without("images"), "'images' null must be a non-empty list"),
    "images an object": (_field("images", {"path": "x"}), "'images' {\"path\": \"x\"}"),
    "images empty": (_field("images", []), "'images' [] must be a non-empty list"),
    "manifest a list": (lambda c, d: [c], "holds a JSON list"),
    "manifest a string": (lambda c, d: '"hello"', "holds a JSON string"),
    "manifest not JSON": (lambda c, d: "{\"format\": ", "not an edgeseg calibration manifest"),
    "format missing": (_without("format"), "format null is not edgeseg-calibration/1"),
    "format unknown": (_field("format", "other/2"), "format \"other/2\""),
    "root a number": (_field("root", 5), "'root' 5 must be a non-empty string"),
    "root missing": (_without("root"), "'root' null"),
    "root not a folder": (_no_root, "the data set root /no/such/data/set is missing"),
    "root_absolute a list": (_field("root_absolute", ["/"]), "'root_absolute' [\"/\"] must be a string"),
    "num_images disagrees": (_field("num_images", 99), "num_images 99 but 32 entries"),
    "layout unknown": (_field("layout", "coco"), "layout \"coco\" must be one of"),
    "root without a layout": (_root_at_images, "has none of images/, leftImg8bit/, JPEGImages/"),
    "a changed image": (_changed, "has changed (sha256 differs)"),
    "a missing image": (_entry(0, {"path": "images/train/gone.png", "sha256": "0" * 64}), "is missing"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest_is_one_line_and_opens_nothing_outside(case, good_manifest, tiny_data, tmp_path, hashed):
    change, fragment = MANIFEST_CASES[case]
    manifest = write_manifest(tmp_path, _manifest_case(good_manifest, tiny_data, change))
    with pytest.raises(EdgesegError) as err:
        load_calibration_set(tmp_path)
    text = one_line(err)
    assert text.startswith(f"--calib {tmp_path}: {manifest}") and fragment in text, text
    train = (tiny_data / "images" / "train").resolve()
    assert all(p.resolve().is_relative_to(train) or p == manifest for p in hashed), hashed


def _symlink_case(tiny_data: Path, good: dict, folder: Path, target: Path) -> Path:
    link = tiny_data / "images" / "train" / f"link-{folder.name}.png"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    content = _manifest_case(good, tiny_data, _entry(0, {"path": f"images/train/{link.name}", "sha256": "0" * 64}))
    return write_manifest(folder, content)


@pytest.mark.parametrize(
    "target",
    ["val", "etc", "nowhere", "loop"],
    ids=["to a val image", "to /etc/passwd", "to a missing file outside", "a symlink loop"],
)
def test_symlink_out_of_the_split_is_refused_the_same_way_whether_or_not_the_target_exists(
    target, good_manifest, tiny_data, tmp_path, hashed
):
    targets = {
        "val": tiny_data / "images" / "val" / "val00.png",
        "etc": Path("/etc/passwd"),
        "nowhere": Path("/no/such/file.png"),
        "loop": tiny_data / "images" / "train" / f"link-{tmp_path.name}.png",
    }
    manifest = _symlink_case(tiny_data, good_manifest, tmp_path, targets[target])
    try:
        with pytest.raises(EdgesegError) as err:
            load_calibration_set(manifest)
        text = one_line(err)
        assert "images[0]" in text and "leads outside images/train/" in text, text
        assert not [p for p in hashed if p != manifest]
    finally:
        (tiny_data / "images" / "train" / f"link-{tmp_path.name}.png").unlink()


def test_voc_manifest_entries_must_be_listed_in_the_split(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("b\n")
    for stem in "ab":
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.zeros((8, 8, 3), np.uint8))
    content = {"format": "edgeseg-calibration/1", "root": str(root), "split": "train", "layout": "voc",
               "images": [{"path": "JPEGImages/b.jpg", "sha256": "0" * 64}]}  # fmt: skip
    with pytest.raises(EdgesegError) as err:
        load_calibration_set(write_manifest(tmp_path, content))
    assert "images[0] \"JPEGImages/b.jpg\" is not in split 'train'" in one_line(err)


def test_calib_data_refuses_every_evaluation_split(tiny_data, tmp_path):
    for split in ("val", "test", "trainval"):
        with pytest.raises(EdgesegError) as err:
            make_calibration_manifest(str(tiny_data), split, 32, tmp_path / split)
        assert f"--split {split}" in one_line(err)
    assert not any(tmp_path.iterdir())


def test_export_refuses_a_manifest_that_escapes_its_root(small_checkpoint, good_manifest, tiny_data, tmp_path):
    (tmp_path / "calib").mkdir()
    write_manifest(tmp_path / "calib", _manifest_case(good_manifest, tiny_data, _true_sha("images/train/../val/val00.png")))
    out = tmp_path / "export"
    done = run_cli("export", small_checkpoint, "--out", out, "--precision", "int8", "--calib", tmp_path / "calib", "--no-verify")
    assert_one_line_error(done, "--calib", "images[0]", "no '..'")
    assert not out.exists()


# --- property-based: what nobody thought of ------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
META_KEYS = [*GOOD.to_dict(), "output_kind", "precision", "source_sha256", "edgeseg_version"]
PRE_KEYS = [*GOOD.to_dict()["preprocess"], "extra"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(META_KEYS) | st.text(max_size=6), JSON, max_size=12))
def test_arbitrary_metadata_objects_parse_or_raise_edgeseg_error(data):
    _parses_or_refuses(data)


@SETTINGS
@given(st.sampled_from(META_KEYS), JSON, st.sampled_from(PRE_KEYS), JSON, st.booleans())
def test_one_field_changed_parses_or_raises_edgeseg_error(key, value, pre_key, pre_value, nested):
    data = json.loads(props_with()[META_KEY])
    if nested:
        data["preprocess"][pre_key] = pre_value
    else:
        data[key] = value
    meta = _parses_or_refuses(data)
    if meta is not None:  # what is accepted is the schema's: it round-trips and builds a valid object again
        assert ModelMeta.from_dict(meta.to_dict()) == meta
        assert 1 <= meta.num_classes <= 256 and len(meta.classes) == len(meta.palette) == meta.num_classes
        assert all(32 <= side <= 4096 and side % 8 == 0 for side in meta.input_size)
        assert min(meta.preprocess.std) > 0


@SETTINGS
@given(st.text(max_size=40) | JSON.map(json.dumps))
def test_arbitrary_metadata_text_parses_or_raises_edgeseg_error(text):
    try:
        parse_meta({META_KEY: text}, "model.onnx")
    except EdgesegError as err:
        assert "\n" not in str(err)


def _parses_or_refuses(data):
    try:
        meta, extras = parse_meta({META_KEY: json.dumps(data)}, "model.onnx")
    except EdgesegError as err:
        assert "\n" not in str(err) and str(err).startswith("model.onnx: ")
        return None
    assert isinstance(meta, ModelMeta) and extras["output_kind"] in ("logits", "labels")
    return meta


SEGMENTS = st.sampled_from(["..", ".", "", "images", "train", "val", "labels", "/", "~", "\\", "\0", "train00.png",
                            "val00.png", "/etc/passwd", "link"]) | st.text(max_size=6)  # fmt: skip
PATHS = st.lists(SEGMENTS, max_size=6).map("/".join) | st.text(max_size=12) | JSON
ENTRIES = st.fixed_dictionaries({"path": PATHS, "sha256": st.text(max_size=70) | st.just("0" * 64) | JSON}) | JSON


@SETTINGS
@given(entries=st.lists(ENTRIES, max_size=5), split=st.sampled_from(["train", "val", "trainval", "../val", "", 3, None]))
def test_arbitrary_manifest_entries_never_escape(entries, split, good_manifest, tiny_data, tmp_path_factory, hashed):
    """Generated entries: a one-line EdgesegError (fewer than 32 images, or a refused entry), and no file
    outside the train images ever hashed."""
    folder = tmp_path_factory.mktemp("m")
    content = _manifest_case(good_manifest, tiny_data, _field("split", split))
    content["images"] = entries + content["images"][len(entries) :] if split == "train" else entries
    content.pop("num_images")
    manifest = write_manifest(folder, content)
    hashed.clear()
    try:
        load_calibration_set(manifest)
    except EdgesegError as err:
        assert "\n" not in str(err)
    train = (tiny_data / "images" / "train").resolve()
    assert all(p == manifest or p.resolve().is_relative_to(train) for p in hashed), hashed
