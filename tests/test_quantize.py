"""FP16, INT8 and the TensorRT calibration cache, on real ONNX Runtime sessions and real CamVid images."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import assert_one_line_error, run_cli
from edgeseg.export.calibration import load_calibration_set, make_calibration_manifest, select_by_coverage
from edgeseg.core.errors import EdgesegError
from edgeseg.export.exporter import export_onnx
from edgeseg.core.onnx_meta import read_meta
from edgeseg.export.quantize import (
    activation_scales,
    entropy_threshold,
    read_calibration_cache,
    trt_version_code,
)
from edgeseg.runtime import Segmenter


@pytest.fixture(scope="module")
def manifest(camvid, tmp_path_factory):
    return make_calibration_manifest(f"camvid:{camvid}", "train", 32, tmp_path_factory.mktemp("calib") / "camvid-32")


@pytest.fixture(scope="module")
def exported(small_checkpoint, camvid, manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant") / "out"
    return export_onnx(small_checkpoint, out, data=f"camvid:{camvid}", num_verify=2, fidelity_images=4,
                       precisions=("fp32", "fp16", "int8"), calib=str(manifest.parent), calib_images=32,
                       trt_version="8.5.2")  # fmt: skip


def _initializers(path):
    graph = onnx.load(str(path)).graph
    return graph, {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def test_all_artefacts_written_with_their_precision(exported):
    names = sorted(p.name for p in exported.onnx_path.parent.iterdir())
    assert names == sorted(["model.fp32.onnx", "model.fp16.onnx", "model.int8.qdq.onnx", "model.int8.qdq.fp16.onnx",
                            "model.int8.onnx", "model.calib.cache", "model.calib.json", "parity.json", "fidelity.json",
                            "export.json", "report.html", "verify"])  # fmt: skip
    for key, precision in (("fp32", "fp32"), ("fp16", "fp16"), ("int8_qdq", "int8"), ("int8_qdq_fp16", "int8"), ("int8", "int8")):
        assert read_meta(exported.files[key])[1]["precision"] == precision


def test_tensorrt_form_is_symmetric_int8_with_float_biases(exported):
    graph, constants = _initializers(exported.files["int8_qdq"])
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers
    for node in quantizers:
        zero_point = constants[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants]
    assert weights and all(constants[n.input[0]].dtype == np.int8 for n in weights)  # no int32 bias DQ
    assert any(constants[n.input[1]].size > 1 for n in weights)  # per-channel weight scales


def test_cpu_form_has_uint8_activations_and_float_logits(exported):
    graph, constants = _initializers(exported.files["int8"])
    activation_zero_points = [constants[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points and all(z.dtype == np.uint8 for z in activation_zero_points)
    for form, float_logits in (("int8", True), ("int8_qdq", False)):
        graph = onnx.load(str(exported.files[form])).graph
        producers = {out: n for n in graph.node for out in n.output}
        upsampling, requantized = producers[graph.output[0].name], []
        while upsampling.op_type in ("QuantizeLinear", "DequantizeLinear"):
            requantized.append(upsampling.op_type)
            upsampling = producers[upsampling.input[0]]
        assert upsampling.op_type == "Resize" and (not requantized) == float_logits, (form, requantized)
        assert producers[upsampling.input[0]].op_type == "DequantizeLinear"  # the classifier itself is int8


def test_fp16_model_keeps_float32_input_and_output(exported):
    session = ort.InferenceSession(str(exported.files["fp16"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    graph, constants = _initializers(exported.files["fp16"])
    assert any(array.dtype == np.float16 for array in constants.values())


# --- the Q/DQ model with FP16 float layers, for strongly typed INT8 engines (edgeseg/export/qdq_fp16.py) --------
def _qdq_scales(path) -> dict:
    """{Q/DQ node name: (its scale's initializer name, the scale)} of a Q/DQ model."""
    graph, constants = _initializers(path)
    return {n.name: (n.input[1], constants[n.input[1]]) for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}


def test_fp16_qdq_model_has_the_qdq_models_scales_in_fp16_at_opset_19(exported):
    half, plain = _qdq_scales(exported.files["int8_qdq_fp16"]), _qdq_scales(exported.files["int8_qdq"])
    assert set(half) == set(plain) and len(half) > 100
    finfo, coarse = np.finfo(np.float16), {}  # below FP16's smallest normal number a scale keeps a subnormal value
    for name, (initializer, scale) in half.items():
        before = plain[name][1]
        expected = np.maximum(before, finfo.smallest_subnormal).astype(np.float16)
        assert scale.dtype == np.float16 and np.array_equal(scale, expected), name
        coarse.update({(initializer, i): (name, i) for i in np.flatnonzero(before < finfo.tiny)})  # a shared scale once
    _check_rerounded_weights(exported, coarse.values())
    model = onnx.load(str(exported.files["int8_qdq_fp16"]))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 19)]
    assert {p.key: p.value for p in model.metadata_props}["qdq_float_type"] == "float16"
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    float32 = [v.name for v in [*inferred.value_info, *inferred.input, *inferred.output] if v.type.tensor_type.elem_type == 1]
    assert sorted(float32) == ["images", "logits"]  # every layer in between runs in FP16
    assert not any(init.data_type == 1 for init in model.graph.initializer)
    report = json.loads((exported.onnx_path.parent / "export.json").read_text())["int8_qdq_fp16"]
    assert report["opset"] == 19 and report["max_normal_scale_change"] <= 2**-11
    assert report["scales_subnormal"] + report["scales_raised"] == len(coarse)


def _check_rerounded_weights(exported, coarse) -> None:
    """Where a weight channel's scale became subnormal, its int8 weights were re-rounded: within half a step of before."""
    graphs = {key: _initializers(exported.files[key]) for key in ("int8_qdq", "int8_qdq_fp16")}
    for name, channel in coarse:
        values = {}
        for key, (graph, constants) in graphs.items():
            node = next(n for n in graph.node if n.name == name)
            if node.input[0] not in constants:
                break  # an activation's scale: only its range grew
            values[key] = (constants[node.input[0]][channel].astype(np.float32), constants[node.input[1]][channel])
        if values:
            (old, old_scale), (new, new_scale) = values["int8_qdq"], values["int8_qdq_fp16"]
            assert np.abs(new * np.float32(new_scale) - old * old_scale).max() <= np.float32(new_scale) / 2 + 1e-9, name


def _rounded_through_fp16(path) -> bytes:
    """The FP16 model written with float32 operators, each FP16 tensor rounded through FP16 (a Cast there and back):
    its arithmetic, without ONNX Runtime's FP16 kernels."""
    from onnx import TensorProto, helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    halves = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    nodes = []
    for node in graph.node:
        rounds = []
        for index, name in enumerate(node.output):
            if name in halves:
                node.output[index] = f"{name}_raw"
                rounds += [helper.make_node("Cast", [f"{name}_raw"], [f"{name}_half"], to=TensorProto.FLOAT16),
                           helper.make_node("Cast", [f"{name}_half"], [name], to=TensorProto.FLOAT)]  # fmt: skip
        nodes += [node, *rounds]
    del graph.node[:], graph.value_info[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def test_fp16_qdq_model_runs_on_onnx_runtime_as_its_arithmetic_says(exported, camvid):
    """ONNX Runtime's graph rewrites mishandle FP16 Q/DQ scales, so edgeseg's backend runs this model without them;
    its logits then match the same model's float32 rounding (which ONNX Runtime runs with every rewrite) up to
    rounding: ONNX Runtime's FP16 kernels also round inside an operator, and a value on the other side of a Q step
    moves the next layers (on the reference model 99.5 % of the labels agree, logits within about 4 steps)."""
    import cv2

    images = [cv2.imread(str(p)) for p in sorted((camvid / "images" / "val").glob("*.jpg"))[:3]]
    rounded = ort.InferenceSession(_rounded_through_fp16(exported.files["int8_qdq_fp16"]), providers=["CPUExecutionProvider"])
    graph, constants = _initializers(exported.files["int8_qdq_fp16"])
    producers = {output: node for node in graph.node for output in node.output}
    last = producers[producers["logits"].input[0]]  # the DequantizeLinear before the final Cast to float32
    assert producers["logits"].op_type == "Cast" and last.op_type == "DequantizeLinear"
    step = float(constants[last.input[1]])
    with Segmenter.load(exported.files["int8_qdq_fp16"]) as half, Segmenter.load(exported.files["fp32"]) as fp32:
        levels = ort.GraphOptimizationLevel
        assert half.backend.session.get_session_options().graph_optimization_level == levels.ORT_DISABLE_ALL
        assert fp32.backend.session.get_session_options().graph_optimization_level == levels.ORT_ENABLE_ALL
        for image in images:
            half.preprocessor(image, 0)
            batch = half.preprocessor.buffer[:1].copy()
            logits, reference = half.backend.infer(batch), rounded.run(None, {"images": batch})[0]
            assert logits.dtype == np.float32 and logits.shape == reference.shape
            difference = np.abs(logits - reference) / step  # in steps of the logits' own quantization
            # this untrained model's logits are a few steps of a subnormal FP16 scale: 5 steps at most, 92 % within one
            assert difference.max() <= 8 and np.mean(difference <= 1.001) >= 0.9, (difference.max(), np.mean(difference <= 1))


def test_calibration_cache_matches_qdq_scales(exported):
    header, scales = read_calibration_cache(exported.files["calib_cache"])
    assert header == "TRT-8502-EntropyCalibration2"
    qdq = activation_scales(exported.files["int8_qdq"])
    shared = set(scales) & set(qdq)
    assert "images" in shared and len(shared) >= 0.9 * len(qdq)
    for name in shared:
        assert scales[name] == np.float32(qdq[name]), name
    ranges = json.loads(exported.files["calib_ranges"].read_text())["data"]
    assert set(scales) == set(ranges)
    for line in exported.files["calib_cache"].read_text().splitlines()[1:]:
        name, value = line.rsplit(": ", 1)
        assert len(value) == 8 and int(value, 16) >= 0


def test_int8_models_run_and_mostly_agree_with_fp32(exported, camvid):
    """An untrained model has near-flat logits, so a loose bound; the trained model's numbers are in benchmarks/."""
    import cv2

    images = [cv2.imread(str(p)) for p in sorted((camvid / "images" / "val").glob("*.jpg"))[:3]]
    with Segmenter.load(exported.files["fp32"]) as fp32:
        expected = [fp32.segment(image) for image in images]
    for key in ("int8_qdq", "int8_qdq_fp16", "int8", "fp16"):
        with Segmenter.load(exported.files[key]) as deployed:
            agreement = np.mean([(deployed.segment(i) == e).mean() for i, e in zip(images, expected)])
        assert agreement >= 0.75, (key, agreement)


def test_fidelity_and_manifest_reports(exported):
    fidelity = json.loads((exported.onnx_path.parent / "fidelity.json").read_text())
    models = {m["model"]: m for m in fidelity["models"]}
    assert set(models) == {"model.fp32.onnx", "model.fp16.onnx", "model.int8.qdq.onnx", "model.int8.qdq.fp16.onnx",
                           "model.int8.onnx"}  # fmt: skip
    assert models["model.fp32.onnx"]["pixel_agreement"] > 0.999 and models["model.int8.onnx"]["num_images"] == 4
    manifest = json.loads((exported.onnx_path.parent / "export.json").read_text())
    assert manifest["calibration"]["images"] == 32 and len(manifest["calibration"]["manifest_sha256"]) == 64
    assert manifest["calibration"]["trt_cache_header"] == "TRT-8502-EntropyCalibration2"
    assert set(manifest["seconds"]) >= {"fp32", "parity", "fp16", "int8", "int8_qdq_fp16", "fidelity", "total"}
    requires = manifest["files"]["int8_qdq_fp16"]["requires"]
    assert requires == {"onnxruntime": ">=1.17", "tensorrt": ">=10.0", "tensorrt_int8_source": "qdq", "strongly_typed": True}


def test_trt_version_codes():
    assert trt_version_code("8.5.2") == "8502" and trt_version_code("8.6.1") == "8601"
    assert trt_version_code("10.3.0") == "100300" and trt_version_code("10") == "100000"
    with pytest.raises(EdgesegError, match="--trt-version"):
        trt_version_code("ten")


def test_entropy_threshold_clips_a_long_tail_but_not_a_compact_range():
    edges = np.linspace(0, 10, 2049)
    compact = np.histogram(np.random.default_rng(0).uniform(0, 10, 200_000), bins=edges)[0]
    assert entropy_threshold(compact, edges) > 9.5
    bulk = np.abs(np.random.default_rng(1).normal(0, 0.5, 200_000))
    tailed = np.histogram(np.concatenate([bulk, [9.9]]), bins=edges)[0]
    threshold = entropy_threshold(tailed, edges)
    assert 1.0 < threshold < 5.0


def test_coverage_selection_prefers_images_with_rare_classes():
    counts = np.array([[1000, 0], [1000, 0], [900, 100], [1000, 0], [950, 50]])
    picks = select_by_coverage(counts, 2)
    assert sorted(picks) == [2, 4] and select_by_coverage(counts, 2) == picks


def test_calibration_manifest_never_touches_the_evaluation_split(camvid, manifest):
    content = json.loads(manifest.read_text())
    val_names = {p.name for p in (camvid / "images" / "val").iterdir()}
    train_names = {p.name for p in (camvid / "images" / "train").iterdir()}
    chosen = [entry["path"] for entry in content["images"]]
    assert len(chosen) == 32 and all(p.startswith("images/train/") for p in chosen)
    assert {p.rsplit("/", 1)[1] for p in chosen} <= train_names and not {p.rsplit("/", 1)[1] for p in chosen} & val_names
    assert len(load_calibration_set(manifest.parent)) == 32
    done = run_cli("calib-data", "--data", f"camvid:{camvid}", "--split", "val", "--out", manifest.parent / "x")
    assert_one_line_error(done, "--split val", "--split train")


def test_calibration_input_errors(camvid, manifest, tmp_path):
    with pytest.raises(EdgesegError, match="at least 32"):
        load_calibration_set(str(camvid / "images" / "val" / "0016E5_07*.jpg"))
    with pytest.raises(EdgesegError, match="no such manifest"):
        load_calibration_set(tmp_path / "missing")
    tampered = tmp_path / "manifest.json"
    content = json.loads(manifest.read_text())
    content["root"] = str(camvid.resolve())
    content["images"][0]["sha256"] = "0" * 64
    tampered.write_text(json.dumps(content))
    with pytest.raises(EdgesegError, match="has changed"):
        load_calibration_set(tampered)


def test_export_int8_errors_leave_nothing(small_checkpoint, manifest, tmp_path):
    out = tmp_path / "e"
    base = ("export", small_checkpoint, "--out", out, "--no-verify")
    assert_one_line_error(run_cli(*base, "--precision", "int8"), "--calib")
    assert_one_line_error(run_cli(*base, "--precision", "int8", "--calib", tmp_path), "--calib", "32")
    assert_one_line_error(run_cli(*base, "--profile", "no-such-target"), "--profile", "jetson-orin-nano-int8")
    # fails after the FP32 model is written: nothing of it may be left behind
    done = run_cli(*base, "--precision", "int8", "--calib", manifest.parent, "--keep-fp", "NoSuchOp", "--calib-images", "32")
    assert_one_line_error(done, "--keep-fp NoSuchOp", "Conv")
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_profiles_load_and_flags_override(small_checkpoint, tmp_path):
    from edgeseg.export.profiles import load_profile, profile_names

    assert {"jetson-orin-nano-int8", "jetson-xavier-nx-fp16", "desktop-gpu-fp16", "cpu-int8"} <= set(profile_names())
    for name in profile_names():
        assert load_profile(name)["precisions"][0] == "fp32"
    bad = tmp_path / "bad.toml"
    bad.write_text('precisions = ["fp16"]\nwarp_speed = 9\n')
    with pytest.raises(EdgesegError, match="unknown setting warp_speed"):
        load_profile(str(bad))
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "p", "--no-verify", "--profile", "desktop-gpu-fp16",
                   "--img-size", "96", "128", "--dynamic-batch", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(tmp_path / "p" / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 96, 128]


def test_eval_with_reference_reports_fidelity(exported, small_checkpoint, camvid, tmp_path):
    report_path = tmp_path / "fidelity.json"
    done = run_cli("eval", exported.files["int8"], "--reference", small_checkpoint, "--data", f"camvid:{camvid}",
                   "--limit", "3", "--worst", "2", "--json", report_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pixel agreement" in done.stdout and "mIoU vs reference" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["num_images"] == 3 and 0.5 < report["pixel_agreement"] <= 1.0
    assert set(report["class_iou_delta"]) == set(report["model_metrics"]["per_class"])
    assert len(report["worst_images"]) == 2 and all(p.endswith(".jpg") for p in report["worst_images"])
    panel = __import__("cv2").imread(report["worst_images"][0])
    assert panel.shape == (360, 4 * 480, 3)


def test_sensitivity_keeps_the_most_sensitive_layers_in_float(exported, camvid, tmp_path):
    from edgeseg.export.sensitivity import SearchLimits, keep_sensitive_layers

    limits = SearchLimits(slice_images=3, ranking_images=2, max_layers=2, max_candidates=4)
    report = keep_sensitive_layers(exported.files["fp32"], exported.files["calib_ranges"], f"camvid:{camvid}",
                                   max_drop_points=-100.0, already_kept=[], work_dir=tmp_path, limits=limits)  # fmt: skip
    assert report["slice"].endswith("train, last 3 images (2 for ranking)") and len(report["layers"]) == 4
    gains = [layer["miou_vs_fp32_gain_alone"] for layer in report["layers"]]
    assert gains == sorted(gains, reverse=True)
    assert report["kept_in_float"] == [layer["node"] for layer in report["layers"][:2]]
    assert report["met"] is False and not list(tmp_path.iterdir())


def test_engine_without_tensorrt_is_one_line_naming_the_extra(small_checkpoint, tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    except ImportError:
        pass
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify", "--precision", "fp16", "--engine")
    assert_one_line_error(done, "--engine", "edgeseg[trt]")
    assert not (tmp_path / "e").exists()


def test_amax_ranges_feed_set_dynamic_range(exported):
    from edgeseg.deploy.build import read_amax_ranges

    amax = read_amax_ranges(exported.files["calib_ranges"])
    _, scales = read_calibration_cache(exported.files["calib_cache"])
    assert set(amax) == set(scales)
    assert amax["images"] == pytest.approx(127 * scales["images"], rel=1e-5)


def _dense_conv_depths(graph, constants) -> dict[str, int]:
    """Weight name -> reduction depth (Cin x kH x kW) of every group-1 Conv fed by a weight DequantizeLinear."""
    producers = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants}
    depths = {}
    for conv in (n for n in graph.node if n.op_type == "Conv" and n.input[1] in producers):
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        weight = producers[conv.input[1]].input[0]
        if group == 1:
            depths[weight] = int(np.prod(constants[weight].shape[1:]))
    return depths


def test_amx_rewrite_moves_only_deep_dense_convs_and_changes_no_output(exported, camvid):
    import cv2

    from edgeseg.runtime.backends.amx import MIN_DEPTH, route_convs_to_amx

    path = exported.files["int8"]
    graph, before = _initializers(path)
    model = onnx.load(str(path))
    moved = route_convs_to_amx(model)
    after = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    deep = {w for w, depth in _dense_conv_depths(graph, before).items() if depth >= MIN_DEPTH}
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    weights_changed = {name for name in changed if before[name].ndim == 4}
    assert moved == len(deep) > 0 and weights_changed == deep and len(changed) == 2 * moved  # weight + its zero-point
    for node in (n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in deep):
        weight, zero = node.input[0], node.input[2]
        assert (after[zero] == -1).all()
        np.testing.assert_array_equal(after[weight].astype(int) + 1, before[weight].astype(int))

    image = cv2.imread(str(sorted((camvid / "images" / "val").glob("*.jpg"))[0]))
    with Segmenter.load(path) as segmenter:
        segmenter.prepare([image])
        batch = segmenter.preprocessor.buffer[:1].copy()
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": batch})[0]
    rewritten = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(rewritten.run(None, {"images": batch})[0], original)


def test_amx_is_read_from_the_cpu_flags(tmp_path):
    from edgeseg.runtime.backends.amx import has_amx_int8

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n")
    assert has_amx_int8(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni\n")
    assert not has_amx_int8(cpuinfo) and not has_amx_int8(tmp_path / "missing")


def test_onnxruntime_backend_options_amx_and_spin(exported):
    """Depends on the CPU, and says so: amx=True rewrites the model only where /proc/cpuinfo has amx_int8."""
    from edgeseg.runtime.backends.amx import has_amx_int8

    batch = np.random.default_rng(0).random((1, 3, *read_meta(exported.files["int8"])[0].input_size), np.float32)
    with Segmenter.load(exported.files["int8"], spin=False, amx=True) as tuned, Segmenter.load(exported.files["int8"]) as plain:
        assert (tuned.backend.name, tuned.backend.variant) == ("onnxruntime", "amx" if has_amx_int8() else "")
        assert (plain.backend.name, plain.backend.variant) == ("onnxruntime", "")
        options = tuned.backend.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        np.testing.assert_array_equal(tuned.backend.infer(batch), plain.backend.infer(batch))


def test_the_amx_rewrite_is_opt_in_and_a_variant_not_a_new_backend_name(exported, monkeypatch):
    """On an AMX-INT8 Xeon, CI failed: bench named the INT8 row's backend "onnxruntime+amx". Here the CPU flag is
    stood in for (the rewrite itself runs on any CPU; only the kernel ONNX Runtime picks differs), so this holds,
    and checks the same thing, on x86 with or without AMX or VNNI and on ARM."""
    from edgeseg.deploy.bench import BenchOptions, benchmark_models, format_table
    from edgeseg.runtime.backends import onnxruntime_backend

    monkeypatch.setattr(onnxruntime_backend, "has_amx_int8", lambda: True)
    monkeypatch.delenv("EDGESEG_ORT_AMX", raising=False)
    path = exported.files["int8"]
    with Segmenter.load(path) as default, Segmenter.load(path, amx=True) as asked:
        assert default.backend.name == asked.backend.name == "onnxruntime"  # the name is the backend's, whatever runs
        assert (default.backend.variant, asked.backend.variant) == ("", "amx")  # off unless asked for
    [plain] = benchmark_models([path], BenchOptions(backend="onnxruntime", iters=1, warmup=0))
    monkeypatch.setenv("EDGESEG_ORT_AMX", "1")  # the CLI's way to ask for it
    [rewritten] = benchmark_models([path], BenchOptions(backend="onnxruntime", iters=1, warmup=0))
    assert (plain.backend, plain.variant, rewritten.backend, rewritten.variant) == ("onnxruntime", "", "onnxruntime", "amx")
    header, _, *rows = format_table([plain, rewritten]).splitlines()
    assert header.split()[:3] == ["model", "backend", "variant"] and [r.split()[1:3] for r in rows] == [
        ["onnxruntime", "-"], ["onnxruntime", "amx"]]


_CALIBRATE_ONCE = """
import sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from edgeseg.export.quantize import CalibrationSettings, calibrate, write_calibration_cache
model, out = Path(sys.argv[1]), Path(sys.argv[2])
_, channels, height, width = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
rng = np.random.default_rng(0)
batches = [rng.random((1, channels, height, width), dtype=np.float32) for _ in range(4)]
ranges = calibrate(model, iter(batches), CalibrationSettings(method=sys.argv[3]), out / "calib.json")
write_calibration_cache(ranges, {}, "10.3.0", out / "calib.cache")
"""


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_calibration_files_are_the_same_bytes_whatever_python_hashes(exported, method, tmp_path):
    """ONNX Runtime hands the calibrated tensors over in a set's order, which PYTHONHASHSEED changes: the bundle's
    ranges and cache are written in name order, so one export's files are byte for byte another's."""
    written = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _CALIBRATE_ONCE, str(exported.files["fp32"]), str(out), method],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        written.append(((out / "calib.json").read_bytes(), (out / "calib.cache").read_bytes()))
    assert written[0] == written[1]
