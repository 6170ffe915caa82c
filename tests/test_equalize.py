"""Cross-layer equalization and bias correction (edgeseg/export/equalize.py) and `export --equalize`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseg.export.equalize import equalize_onnx, quantize_weights  # noqa: E402


# --- small hand-made graphs ---------------------------------------------------------------
def _conv(name: str, x: str, out: str, weights: np.ndarray, bias: np.ndarray | None, inits: list, group: int = 1):
    inits.append(numpy_helper.from_array(weights.astype(np.float32), f"{name}.w"))
    inputs = [x, f"{name}.w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}.b"))
        inputs.append(f"{name}.b")
    pads = [weights.shape[2] // 2] * 4
    return helper.make_node("Conv", inputs, [out], name=name, group=group, pads=pads)


def _save(nodes, inits, outputs: list[str], channels_in: int, path: Path) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels_in, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 4) for o in outputs], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _weights(path: Path) -> dict[str, np.ndarray]:
    """Conv name -> (weights, bias) of a saved model, by the inputs its nodes name now."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: [inits.get(name) for name in n.input[1:]] for n in model.graph.node if n.op_type == "Conv"}


def _uneven(rng, shape, spread: float = 30.0) -> np.ndarray:
    """Weights whose output channels differ in range by up to ``spread``x: something for CLE to equalize."""
    return rng.normal(size=shape) * np.geomspace(1, spread, shape[0]).reshape(-1, *[1] * (len(shape) - 1))


def _batches(rng, count: int = 4, channels: int = 3, scale: float = 1.0):
    data = [(rng.normal(size=(2, channels, 8, 8)) * scale + 0.5).astype(np.float32) for _ in range(count)]
    return lambda: iter(data)


@pytest.fixture()
def branching_graph(tmp_path) -> Path:
    """a: Conv -> Relu -> Conv (equalizable); b: Conv -> Relu feeding two Convs (must be left alone)."""
    rng = np.random.default_rng(0)
    inits: list = []
    nodes = [
        _conv("a1", "x", "a1_out", _uneven(rng, (8, 3, 3, 3)), rng.normal(size=8), inits),
        helper.make_node("Relu", ["a1_out"], ["a_act"], name="a_relu"),
        _conv("a2", "a_act", "a2_out", rng.normal(size=(4, 8, 1, 1)), rng.normal(size=4), inits),
        _conv("b1", "x", "b1_out", _uneven(rng, (8, 3, 3, 3)), rng.normal(size=8), inits),
        helper.make_node("Relu", ["b1_out"], ["b_act"], name="b_relu"),
        _conv("b2", "b_act", "b2_out", rng.normal(size=(4, 8, 1, 1)), None, inits),
        _conv("b3", "b_act", "b3_out", rng.normal(size=(4, 8, 1, 1)), None, inits),
    ]
    return _save(nodes, inits, ["a2_out", "b2_out", "b3_out"], 3, tmp_path / "branching.onnx")


def test_branching_activation_is_left_alone(branching_graph, tmp_path):
    out = tmp_path / "eq.onnx"
    report = equalize_onnx(branching_graph, out, None, "cle")
    assert [(p["conv1"], p["conv2"]) for p in report.pairs] == [("a1", "a2")]
    assert report.skipped == [{"conv": "b1", "reason": "b_relu feeds 2 nodes (Conv)"}]
    before, after = _weights(branching_graph), _weights(out)
    for conv in ("b1", "b2", "b3"):
        for old, new in zip(before[conv], after[conv]):
            np.testing.assert_array_equal(old, new)
    assert not np.allclose(before["a1"][0], after["a1"][0])  # the other chain was scaled
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    for old, new in zip(_run(branching_graph, x), _run(out, x)):
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-5 * np.abs(old).max())


def test_relu_pairs_end_with_equal_ranges(tmp_path):
    """A chain of three ReLU pairs with a depthwise middle: after CLE, max |W1[i]| == max |W2[:, i]| for every pair."""
    rng = np.random.default_rng(2)
    inits: list = []
    nodes = [
        _conv("c1", "x", "c1_out", _uneven(rng, (16, 3, 3, 3)), rng.normal(size=16), inits),
        helper.make_node("Relu", ["c1_out"], ["r1"], name="relu1"),
        _conv("dw", "r1", "dw_out", _uneven(rng, (16, 1, 3, 3), 10), rng.normal(size=16), inits, group=16),
        helper.make_node("Relu", ["dw_out"], ["r2"], name="relu2"),
        _conv("pw", "r2", "pw_out", _uneven(rng, (8, 16, 1, 1), 5), rng.normal(size=8), inits),
        helper.make_node("Relu", ["pw_out"], ["r3"], name="relu3"),
        _conv("last", "r3", "y", rng.normal(size=(2, 8, 1, 1)), None, inits),
    ]
    source = _save(nodes, inits, ["y"], 3, tmp_path / "chain.onnx")
    out = tmp_path / "eq.onnx"
    report = equalize_onnx(source, out, None, "cle")
    assert [p["conv1"] for p in report.pairs] == ["c1", "dw", "pw"] and report.passes > 1
    weights = _weights(out)
    for conv1, conv2, depthwise in (("c1", "dw", True), ("dw", "pw", False), ("pw", "last", False)):
        w1, w2 = weights[conv1][0], weights[conv2][0]
        r1 = np.abs(w1).reshape(len(w1), -1).max(axis=1)
        r2 = np.abs(w2).reshape(len(w2), -1).max(axis=1) if depthwise else np.abs(w2).max(axis=(0, 2, 3))
        np.testing.assert_allclose(r1, r2, rtol=1e-3)
    before = _weights(source)["c1"][0]
    spread = lambda w: np.abs(w).reshape(len(w), -1).max(axis=1)  # noqa: E731
    assert spread(weights["c1"][0]).max() / spread(weights["c1"][0]).min() < spread(before).max() / spread(before).min() / 2
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    old, new = _run(source, x)[0], _run(out, x)[0]
    np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-5 * np.abs(old).max())


def _relu6_graph(tmp_path, rng) -> Path:
    inits: list = []
    weights = _uneven(rng, (8, 3, 1, 1), 10) * 0.02  # channels 1-7 stay well under 6 on the images below
    weights[0] = 5.0  # channel 0 goes past 6 on them: it clips
    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    nodes = [
        _conv("c1", "x", "c1_out", weights, np.zeros(8), inits),
        helper.make_node("Clip", ["c1_out", "zero", "six"], ["act"], name="relu6"),
        _conv("c2", "act", "y", rng.normal(size=(4, 8, 1, 1)), None, inits),
    ]
    return _save(nodes, inits, ["y"], 3, tmp_path / "relu6.onnx")


def test_relu6_channels_that_clip_keep_their_scale(tmp_path):
    rng = np.random.default_rng(3)
    source = _relu6_graph(tmp_path, rng)
    images = _batches(rng)
    out = tmp_path / "eq.onnx"
    report = equalize_onnx(source, out, images, "cle", relu6="bounded", headroom=1.0)
    (pair,) = report.pairs
    assert pair["activation"] == "relu6" and 0 < pair["scaled"] < pair["channels"]
    before, after = _weights(source)["c1"][0], _weights(out)["c1"][0]
    np.testing.assert_array_equal(after[0], before[0])  # the clipping channel: s = 1
    for batch in images():  # the calibration images themselves: the function is unchanged on them
        old, new = _run(source, batch)[0], _run(out, batch)[0]
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-5 * np.abs(old).max())
    # skip: ReLU6 chains untouched, and said so
    skipped = equalize_onnx(source, tmp_path / "skip.onnx", None, "cle", relu6="skip")
    assert skipped.pairs == [] and "ReLU6" in skipped.skipped[0]["reason"]
    np.testing.assert_array_equal(_weights(tmp_path / "skip.onnx")["c1"][0], before)


def test_relu6_needs_images(tmp_path):
    from edgeseg.core.errors import EdgesegError

    with pytest.raises(EdgesegError, match="calibration images"):
        equalize_onnx(_relu6_graph(tmp_path, np.random.default_rng(4)), tmp_path / "eq.onnx", None, "cle")


def test_bias_correction_absorbs_the_weight_error(branching_graph, tmp_path):
    """b' = b + (W - Q(W)) E[x]; with Q(W) as quantize.py's INT8 models hold it."""
    from edgeseg.export.quantize import CalibrationSettings, calibrate, quantize_int8

    rng = np.random.default_rng(5)
    images = _batches(rng, count=40)
    out = tmp_path / "bias.onnx"
    report = equalize_onnx(branching_graph, out, images, "bias")
    assert sorted(report.bias_corrected) == ["a1", "a2", "b1", "b2", "b3"]
    before, after = _weights(branching_graph), _weights(out)
    mean_x = np.mean([b.mean(axis=(0, 2, 3)) for b in images()], axis=0)
    w = before["a1"][0].astype(np.float64)
    expected = before["a1"][1] + ((w - quantize_weights(w)).sum(axis=(2, 3)) @ mean_x)
    np.testing.assert_allclose(after["a1"][1], expected, rtol=1e-5, atol=1e-7)
    assert after["b2"][1] is not None  # a Conv without bias got one
    # quantize_weights is what ONNX Runtime's INT8 model stores for that conv
    ranges = tmp_path / "ranges.json"
    calibrate(branching_graph, images(), CalibrationSettings(method="minmax"), ranges)
    qdq = onnx.load(str(quantize_int8(branching_graph, ranges, tmp_path / "q.onnx", "tensorrt")))
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    dequant = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in
                   next(c for c in qdq.graph.node if c.name == "a1").input)  # fmt: skip
    stored = inits[dequant.input[0]].astype(np.float64) * inits[dequant.input[1]].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(stored, quantize_weights(w), rtol=1e-6, atol=1e-9)


# --- the real model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_onnx(small_checkpoint, tmp_path_factory) -> Path:
    from edgeseg.export.exporter import export_onnx

    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("eq") / "m", verify=False).onnx_path


def _real_batches(camvid: Path, small_onnx: Path, split: str, count: int):
    from edgeseg.export.calibration import load_calibration_set
    from edgeseg.export.exporter import calibration_batches
    from edgeseg.runtime import Segmenter

    with Segmenter.load(small_onnx) as probe:
        meta = probe.meta
    images = load_calibration_set(camvid / "images" / split)
    return lambda: calibration_batches(meta, images, count, 1)


def test_cle_keeps_the_exported_model_s_outputs(small_onnx, camvid, tmp_path):
    out = tmp_path / "eq.onnx"
    report = equalize_onnx(small_onnx, out, _real_batches(camvid, small_onnx, "train", 8), "cle")
    kinds = {p["activation"] for p in report.pairs}
    assert kinds == {"relu", "relu6"} and sum(p["scaled"] for p in report.pairs) > 1000
    assert any("Concat" in s["reason"] for s in report.skipped)  # the ASPP branches
    before, after = _weights(small_onnx), _weights(out)
    assert any(not np.array_equal(before[c][0], after[c][0]) for c in before)
    plain, equalized = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (small_onnx, out))
    agree = total = 0
    for batch in _real_batches(camvid, small_onnx, "val", 6)():  # other images than those it saw
        old, new = plain.run(None, {"images": batch})[0], equalized.run(None, {"images": batch})[0]
        assert np.abs(new - old).max() <= 1e-4 * np.abs(old).max()
        agree, total = agree + int((old.argmax(1) == new.argmax(1)).sum()), total + old[:, 0].size
    assert agree / total >= 0.9999


def test_export_equalize_end_to_end(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "bundle"
    done = run_cli("export", small_checkpoint, "--out", out, "--precision", "int8", "--calib", camvid / "images" / "train",
                   "--calib-images", "32", "--equalize", "cle+bias", "--no-verify")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "export.json").read_text())
    equalization = manifest["equalization"]
    assert equalization["mode"] == "cle+bias" and equalization["pairs"] and equalization["bias_corrected"] > 50
    assert all({"conv", "reason"} <= set(s) for s in equalization["skipped"])
    assert manifest["options"]["equalize"] == "cle+bias"
    assert set(manifest["files"]) == {"fp32", "int8_qdq", "int8_qdq_fp16", "int8"}  # no cache: it would not fit the plain FP32 model
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.fp32.onnx", "model.int8.onnx", "model.int8.qdq.fp16.onnx", "model.int8.qdq.onnx"]
    plain = tmp_path / "plain"
    done = run_cli("export", small_checkpoint, "--out", plain, "--no-verify")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _same_weights(_weights(plain / "model.fp32.onnx"), _weights(out / "model.fp32.onnx"))  # FP32 stays plain
    x = np.random.default_rng(6).random((1, 3, 96, 128), dtype=np.float32)
    for name in ("model.int8.onnx", "model.int8.qdq.onnx"):
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        assert session.run(None, {"images": x})[0].shape == (1, 11, 96, 128)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        all((x is None and y is None) or np.array_equal(x, y) for x, y in zip(a[k], b[k])) for k in a
    )


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--equalize", "sometimes"], ["--equalize", "off, cle, bias or cle+bias"]),
        (["--equalize", "cle", "--int8-source", "cache"], ["--equalize cle with --int8-source cache", "--int8-source qdq"]),
    ],
)
def test_export_equalize_refusals(small_checkpoint, camvid, tmp_path, flags, fragments):
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "x", "--precision", "int8",
                   "--calib", camvid / "images" / "train", "--no-verify", *flags)  # fmt: skip
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "x").exists()


def test_profile_key(tmp_path, small_checkpoint):
    from edgeseg.core.errors import EdgesegError
    from edgeseg.export.exporter import ExportOptions, export_model
    from edgeseg.export.profiles import load_profile

    profile = tmp_path / "p.toml"
    profile.write_text('precisions = ["fp32", "int8"]\n[calibration]\nequalize = "cle"\n')
    assert load_profile(str(profile))["equalize"] == "cle"
    with pytest.raises(EdgesegError, match=r"--equalize \(profile key \[calibration\] equalize\) = 1: must be off, cle"):
        export_model(small_checkpoint, tmp_path / "x", ExportOptions(equalize=1, verify=False))  # type: ignore[arg-type]
