"""The TensorRT stage: engine manifests and their checks everywhere; real engine builds where TensorRT and a GPU are."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from edgeseg.runtime.trt.manifest import (
    FACT_KEYS,
    BuiltEngine,
    check_engine_manifest,
    engine_manifest,
    l4t_release,
    manifest_mismatches,
    manifest_path,
    system_facts,
)
from edgeseg.core.errors import EdgesegError

ORIN = {"tensorrt_version": "8.5.2.2", "gpu_name": "Orin", "compute_capability": "8.7", "cuda_driver": "11.4",
        "cuda_runtime": "11.4"}
H100 = {"tensorrt_version": "10.3.0.26", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


# --- manifests, everywhere --------------------------------------------------------------
def test_same_system_has_no_mismatch():
    assert manifest_mismatches(ORIN, dict(ORIN)) == []
    assert manifest_mismatches(ORIN, {**ORIN, "tensorrt_version": "8.5.2.9"}) == []  # the build number does not matter
    assert manifest_mismatches(H100, {**H100, "gpu_name": "H100 80GB HBM3"}) == []  # with or without the vendor


def test_other_tensorrt_version_is_a_mismatch_naming_both():
    problems = manifest_mismatches(ORIN, {**ORIN, "tensorrt_version": "8.6.1.6"})
    assert len(problems) == 1 and "8.5.2" in problems[0] and "8.6.1" in problems[0]


def test_other_compute_capability_is_a_mismatch():
    problems = manifest_mismatches(ORIN, {**ORIN, "compute_capability": "7.2", "gpu_name": "Xavier"})
    assert any("sm_87" in p and "sm_72" in p for p in problems), problems
    assert any("Xavier" in p for p in problems), problems


def test_unknown_facts_are_not_mismatches():
    assert manifest_mismatches(ORIN, {key: None for key in FACT_KEYS}) == []


def test_missing_manifest_is_one_line_error(tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(EdgesegError) as err:
        check_engine_manifest(engine, facts=ORIN)
    assert "model.fp16.engine.json" in _one_line(err) and "edgeseg build" in str(err.value)


def test_mismatching_manifest_names_both_systems(tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not really an engine")
    manifest_path(engine).write_text(json.dumps({**ORIN, "precision": "fp16"}))
    with pytest.raises(EdgesegError) as err:
        check_engine_manifest(engine, facts=H100)
    line = _one_line(err)
    assert line.startswith("model.fp16.engine was built for TensorRT 8.5.2 on Orin (sm_87)"), line
    assert "this system has TensorRT 10.3.0 on NVIDIA H100 80GB HBM3 (sm_90)" in line
    assert "edgeseg build BUNDLE" in line
    assert check_engine_manifest(engine, facts=ORIN)["precision"] == "fp16"  # the same system loads it


def test_damaged_manifest_is_one_line_error(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    manifest_path(engine).write_text("{ not json")
    with pytest.raises(EdgesegError) as err:
        check_engine_manifest(engine, facts=ORIN)
    assert "model.engine.json" in _one_line(err)


def test_engine_manifest_fields():
    engine = BuiltEngine(
        precision="int8", int8_source="cache", inputs=[{"name": "images", "shape": [-1, 3, 96, 128], "dtype": "float"}],
        outputs=[{"name": "logits", "shape": [-1, 11, 96, 128], "dtype": "float"}], batch_range=(1, 4, 8),
        build_flags={"workspace_mib": 1024}, build_seconds=12.345,
    )  # fmt: skip
    manifest = engine_manifest(facts=ORIN, onnx_path=Path("out/model.fp32.onnx"), onnx_sha256="ab" * 32,
                               onnx_metadata={"edgeseg": "{}"}, engine=engine,
                               extra={"calibration_manifest_sha256": "cd" * 32})  # fmt: skip
    assert manifest["tensorrt_version"] == "8.5.2.2" and manifest["compute_capability"] == "8.7"
    assert manifest["onnx"] == "model.fp32.onnx" and manifest["batch_range"] == [1, 4, 8]
    assert manifest["calibration_manifest_sha256"] == "cd" * 32 and manifest["build_seconds"] == 12.35
    assert manifest["created"].endswith("+00:00")
    json.dumps(manifest, allow_nan=False)


def test_system_facts_has_the_documented_keys():
    facts = system_facts()
    assert set(facts) == set(FACT_KEYS)
    if not _tensorrt_importable():
        assert facts["tensorrt_version"] is None


def test_jetson_release_and_board_are_read(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: x\n")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert l4t_release(release) == "R35.4.1"
    facts = system_facts(tegra_release=release, board_path=model)
    assert facts["l4t_release"] == "R35.4.1" and facts["board"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert l4t_release(tmp_path / "absent") is None



# --- version window, typing per version, dtypes, DLA: pure, everywhere ----------------------------
def test_version_window():
    from edgeseg.runtime.trt import window_problem

    for inside in ("8.5.2.2", "8.6.1.6", "10.3.0.26", "10.13.0.35", "11.1.0"):
        assert window_problem(inside) is None, inside
    old = window_problem("8.4.1.5")
    assert "8.4.1.5" in old and "8.5" in old and "JetPack 5.1" in old and "\n" not in old
    new = window_problem("12.0.1")
    assert "12.0.1" in new and "tensorrt>=8.5,<12" in new
    assert "unreadable" in window_problem("dev")


def test_version_helpers():
    from edgeseg.runtime.trt import has_strongly_typed_flag, is_strongly_typed_only, version_tuple
    from edgeseg.runtime.trt.support import has_progress_monitor, needs_explicit_batch

    assert version_tuple("10.3.0.26") == (10, 3) and version_tuple("8.5.2") == (8, 5) and version_tuple("x") == ()
    assert [is_strongly_typed_only(v) for v in ("8.6.1", "10.13.0", "11.0.0")] == [False, False, True]
    assert [has_strongly_typed_flag(v) for v in ("8.6.1", "10.0.1", "11.1")] == [False, True, True]
    assert [needs_explicit_batch(v) for v in ("8.5.2", "10.3.0")] == [True, False]
    assert [has_progress_monitor(v) for v in ("8.6.1", "10.0.1")] == [False, True]


@pytest.mark.parametrize(
    "version, precision, source, expected",
    [
        ("8.5.2.2", "fp16", None, ("fp32", False, ("FP16",), "fp32")),
        ("8.5.2.2", "int8", "qdq", ("int8", False, ("FP16", "INT8"), "int8_qdq")),  # FP16 outside the Q/DQ pairs
        ("8.6.1.6", "int8", "qdq", ("int8", False, ("FP16", "INT8"), "int8_qdq")),
        ("8.5.2.2", "int8", "cache", ("fp32", False, ("FP16", "INT8"), "fp32")),
        ("10.3.0", "fp16", None, ("fp16", True, (), "fp16")),
        ("10.3.0", "int8", "qdq", ("int8", True, (), "int8_qdq_fp16")),  # strongly typed: FP16 float layers
        ("10.13.0", "int8", "qdq", ("int8", True, (), "int8_qdq_fp16")),
        ("10.3.0", "int8", "ranges", ("fp32", False, ("FP16", "INT8"), "fp32")),
        ("10.3.0", "fp32", None, ("fp32", False, (), "fp32")),
        ("11.1.0", "fp16", None, ("fp16", True, (), "fp16")),
        ("11.1.0", "int8", "qdq", ("int8", True, (), "int8_qdq_fp16")),
        ("11.4.1", "int8", "qdq", ("int8", True, (), "int8_qdq_fp16")),
        ("11.1.0", "fp32", None, ("fp32", True, (), "fp32")),
    ],
)  # fmt: skip
def test_plan_build_per_version(version, precision, source, expected):
    from edgeseg.deploy.build import plan_build

    plan = plan_build(version, precision, source)
    assert (plan.source_precision, plan.strongly_typed, plan.builder_flags, plan.source_key) == expected
    assert plan.int8_source == (source if precision == "int8" else None)


def test_plan_build_from_a_given_onnx():
    from edgeseg.deploy.build import plan_build

    weak = plan_build("10.3.0", "fp16", onnx_precision="fp32")  # an FP32 model: the FP16 flag, weakly typed
    assert (weak.strongly_typed, weak.builder_flags) == (False, ("FP16",))
    with pytest.raises(EdgesegError) as err:
        plan_build("11.1.0", "fp16", onnx_precision="fp32", onnx_name="model.fp32.onnx")
    line = _one_line(err)
    assert line.startswith("model.fp32.onnx: ") and "strongly typed" in line and "fp16" in line


@pytest.mark.parametrize("source", ["cache", "ranges"])
def test_weakly_typed_int8_sources_on_tensorrt_11_are_one_line(source):
    from edgeseg.deploy.build import plan_build

    with pytest.raises(EdgesegError) as err:
        plan_build("11.1.0", "int8", source)
    line = _one_line(err)
    assert line.startswith(f"--int8-source {source}: TensorRT 11.1.0") and "--int8-source qdq" in line
    assert plan_build("10.3.0", "int8", source).builder_flags == ("FP16", "INT8")  # 10.x still takes them


def test_unknown_precision_and_source_are_one_line():
    from edgeseg.deploy.build import plan_build

    with pytest.raises(EdgesegError, match="--precision int4"):
        plan_build("10.3.0", "int4")
    with pytest.raises(EdgesegError, match="--int8-source calib"):
        plan_build("10.3.0", "int8", "calib")


def test_int8_sources_are_defined_once():
    import edgeseg.deploy.build
    import edgeseg.export.exporter

    assert edgeseg.export.exporter.INT8_SOURCES is edgeseg.deploy.build.INT8_SOURCES == ("qdq", "cache", "ranges")


def test_dtype_map_is_edgesegs_own():
    from edgeseg.runtime.trt import numpy_dtype

    class Named:  # how pybind11 enums look: a .name
        def __init__(self, name: str) -> None:
            self.name = name

    assert numpy_dtype(Named("FLOAT")) == np.float32 and numpy_dtype(Named("HALF")) == np.float16
    assert numpy_dtype("DataType.INT32") == np.int32 and numpy_dtype("DataType.UINT8") == np.uint8
    assert numpy_dtype(Named("BOOL")) == np.bool_ and numpy_dtype(Named("INT8")) == np.int8
    with pytest.raises(EdgesegError) as err:
        numpy_dtype(Named("BF16"))
    assert "BF16" in _one_line(err)


def test_cuda_driver_and_runtime_are_recorded_as_what_they_are(tmp_path):
    """cuda_driver: cuDriverGetVersion (nvidia-smi's "CUDA Version"); cuda_runtime: cudaRuntimeGetVersion of libcudart."""
    import ctypes

    from edgeseg.runtime.trt.cuda import _loaded_cudart, cuda_runtime_version, cuda_version_text

    assert [cuda_version_text(v) for v in (11040, 12060, 13000)] == ["11.4", "12.6", "13.0"]
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 12 /usr/local/cuda-12.6/lib64/libcudart.so.12.6.77\n7f02-7f03 r-xp 0 0 0 /lib/libc.so.6\n")
    assert _loaded_cudart(maps) == ["/usr/local/cuda-12.6/lib64/libcudart.so.12.6.77"] and _loaded_cudart(tmp_path / "x") == []
    try:  # the runtime library itself, where the loader finds one (no GPU needed): its own answer
        library, expected = ctypes.CDLL("libcudart.so"), ctypes.c_int()
        assert library.cudaRuntimeGetVersion(ctypes.byref(expected)) == 0
        assert cuda_runtime_version() == cuda_version_text(expected.value)
    except OSError:
        assert cuda_runtime_version(maps=tmp_path / "x") in (None, *[f"{m}.{n}" for m in (11, 12, 13) for n in range(10)])
    facts = system_facts()
    assert "cuda_version" not in facts and {"cuda_driver", "cuda_runtime"} <= set(facts)


class _TimingCacheConfig:
    """The two IBuilderConfig calls _use_timing_cache makes, answering as TensorRT does: create_timing_cache gives
    None for bytes it cannot read (NVIDIA's samples check for nullptr), set_timing_cache False for another device's."""

    def __init__(self, fresh_ok: bool = True) -> None:
        self.fresh_ok, self.caches = fresh_ok, []

    def create_timing_cache(self, blob: bytes):
        return ("cache", blob) if (blob == b"" and self.fresh_ok) or blob == b"good" else None

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert cache is not None and ignore_mismatch is False
        self.caches.append(cache)
        return True


def test_an_unreadable_timing_cache_starts_a_new_one_and_a_failed_new_one_is_one_line(tmp_path, capsys):
    from edgeseg.deploy.build import _use_timing_cache

    saved = tmp_path / "trt.cache"
    saved.write_bytes(b"good")
    config = _TimingCacheConfig()
    assert _use_timing_cache(config, saved) is True and config.caches == [("cache", b"good")]
    saved.write_bytes(b"damaged")
    config = _TimingCacheConfig()
    assert _use_timing_cache(config, saved) is False and config.caches == [("cache", b"")]
    assert "starting a new timing cache" in capsys.readouterr().out
    with pytest.raises(EdgesegError) as err:
        _use_timing_cache(_TimingCacheConfig(fresh_ok=False), saved)
    assert _one_line(err).startswith(f"--timing-cache {saved}: TensorRT could not make a timing cache")


def test_no_execution_context_is_one_line(tmp_path):
    """create_execution_context gives None when the context's memory cannot be had (NVIDIA/TensorRT#3017)."""
    from edgeseg.runtime.backends.tensorrt_backend import execution_context

    class NoMemory:  # an engine as TensorRT returns one whose context cannot be allocated
        def create_execution_context(self):
            return None

    with pytest.raises(EdgesegError) as err:
        execution_context(NoMemory(), tmp_path / "model.int8.engine")
    line = _one_line(err)
    assert line.startswith(f"{tmp_path / 'model.int8.engine'}: TensorRT could not create an execution context")
    assert "GPU memory" in line


def test_dla_checks():
    from edgeseg.runtime.trt import dla_problem

    assert dla_problem(None, 0) is None and dla_problem(1, 2) is None
    assert "no DLA" in dla_problem(0, 0) and "Orin Nano" in dla_problem(0, 0)
    problem = dla_problem(2, 2)
    assert "2 DLA core(s)" in problem and "0 to 1" in problem and "\n" not in problem


def test_device_for_an_engine():
    from edgeseg.runtime.backends.tensorrt_backend import gpu_index

    assert gpu_index(None) == 0 and gpu_index("cuda") == 0 and gpu_index("cuda:1") == 1
    with pytest.raises(EdgesegError) as err:
        gpu_index("cpu")
    assert _one_line(err).startswith("--device cpu: a TensorRT engine runs on an NVIDIA GPU")
    with pytest.raises(EdgesegError, match="cuda:N"):
        gpu_index("cuda:x")


def test_system_facts_for_another_gpu_index():
    facts = system_facts(device_index=7)  # no GPU 7 here (nor anywhere this runs): no GPU facts, no error
    assert facts["gpu_name"] is None and facts["compute_capability"] is None


def test_calibrated_ranges_read_without_onnxruntime(tmp_path):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    from edgeseg.deploy.build import read_amax_ranges

    data = {"conv1": TensorData(lowest=np.array(-3.5, np.float32), highest=np.array(2.0, np.float32)),
            "relu": TensorData(lowest=np.array(0.0, np.float32), highest=np.array(6.25, np.float32))}  # fmt: skip
    path = tmp_path / "model.calib.json"
    save_tensors_data(TensorsData(CalibrationMethod.Percentile, data), path)
    assert read_amax_ranges(path) == {"conv1": 3.5, "relu": 6.25}
    plain = tmp_path / "ranges.json"
    plain.write_text(json.dumps({"conv1": 1.5}))
    assert read_amax_ranges(plain) == {"conv1": 1.5}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(EdgesegError, match="no calibrated ranges"):
        read_amax_ranges(tmp_path / "bad.json")


# --- the --argmax output for TensorRT: Cast(UINT8) becomes Cast(INT32), without the onnx package ---------
@pytest.fixture(scope="module")
def argmax_onnx(small_checkpoint, tmp_path_factory):
    from edgeseg.export.exporter import export_onnx

    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("argmax") / "out", verify=False, argmax=True).onnx_path


def test_argmax_output_becomes_int32_for_tensorrt(argmax_onnx, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgeseg.deploy.build import int32_labels_model

    original = argmax_onnx.read_bytes()
    patched = int32_labels_model(original)
    assert patched is not None and len(patched) == len(original)
    model = onnx.load_from_string(patched)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    cast = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.INT32
    batch = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for m in (original, patched)]
    labels, ids = (session.run(None, {session.get_inputs()[0].name: batch})[0] for session in run)
    assert labels.dtype == np.uint8 and ids.dtype == np.int32 and (labels == ids).all()


def test_logits_model_is_left_alone(small_onnx):
    from edgeseg.deploy.build import int32_labels_model

    assert int32_labels_model(small_onnx.read_bytes()) is None


# --- `edgeseg build` without TensorRT, and with a damaged bundle: one line ------------------------------
@pytest.fixture(scope="module")
def fp16_bundle(small_checkpoint, tmp_path_factory):
    from edgeseg.export.exporter import export_onnx

    out = tmp_path_factory.mktemp("bundle") / "export"
    export_onnx(small_checkpoint, out, verify=False, precisions=("fp32", "fp16"))
    return out


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_build_without_tensorrt_is_one_line(fp16_bundle):
    done = run_cli("build", fp16_bundle)
    assert_one_line_error(done, "edgeseg build: TensorRT not found", "pip install 'edgeseg[trt]'")
    done = run_cli("build", fp16_bundle / "model.fp16.onnx", "--precision", "fp16")
    assert_one_line_error(done, "TensorRT not found")


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_require_tensorrt_names_the_trt_extra():
    from edgeseg.runtime.trt import require_tensorrt

    with pytest.raises(EdgesegError) as err:
        require_tensorrt("--engine")
    line = _one_line(err)
    assert line.startswith("--engine: TensorRT not found") and "edgeseg[trt]" in line


def test_build_on_an_altered_bundle_names_the_file(fp16_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "copied"
    shutil.copytree(fp16_bundle, bundle)
    with open(bundle / "model.fp16.onnx", "ab") as onnx_file:
        onnx_file.write(b"\0")
    done = run_cli("build", bundle, "--precision", "fp16")
    assert_one_line_error(done, "model.fp16.onnx: sha256 differs from export.json", "re-copy the bundle")
    done = run_cli("build", bundle / "model.fp16.onnx")
    assert_one_line_error(done, "model.fp16.onnx: sha256 differs")
    (bundle / "model.fp32.onnx").unlink()
    assert_one_line_error(run_cli("build", bundle, "--precision", "fp16"), "model.fp32.onnx: missing from the bundle")


def test_build_flag_errors_are_one_line(fp16_bundle, tmp_path):
    assert_one_line_error(run_cli("build", fp16_bundle, "--precision", "fp8"), "--precision fp8")
    assert_one_line_error(run_cli("build", fp16_bundle, "--precision", "int8", "--int8-source", "calib"),
                          "--int8-source calib")  # fmt: skip
    assert_one_line_error(run_cli("build", tmp_path / "nothing"), "nothing: no such bundle")


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_eval_engine_without_tensorrt_is_one_line_error(tmp_path, camvid):
    engine = tmp_path / "some.engine"
    engine.write_bytes(b"not really an engine")
    done = run_cli("eval", engine, "--data", f"camvid:{camvid}", "--limit", "1")
    assert_one_line_error(done, "some.engine", "edgeseg[trt]")


def test_engine_with_device_cpu_is_one_line_error(tmp_path, camvid):
    engine = tmp_path / "some.engine"
    engine.write_bytes(b"not really an engine")
    done = run_cli("eval", engine, "--data", f"camvid:{camvid}", "--limit", "1", "--device", "cpu")
    assert_one_line_error(done, "--device cpu: a TensorRT engine runs on an NVIDIA GPU")


@pytest.fixture(scope="module")
def small_onnx(small_checkpoint, tmp_path_factory):
    from edgeseg.export.exporter import export_onnx

    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("onnx") / "onnx", verify=False).onnx_path


@pytest.fixture(scope="module")
def dynamic_onnx(small_checkpoint, tmp_path_factory):
    from edgeseg.export.exporter import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "dynamic"
    return export_onnx(small_checkpoint, out, verify=False, dynamic_batch=4).onnx_path


def test_metadata_read_without_onnx_matches_onnx(small_onnx):
    import onnx

    from edgeseg.core.onnx_meta import parse_meta, read_metadata_props

    expected = {p.key: p.value for p in onnx.load(str(small_onnx)).metadata_props}
    props = read_metadata_props(small_onnx.read_bytes())
    assert props == expected and "edgeseg" in props
    meta, extras = parse_meta(props, small_onnx)
    assert meta.num_classes == 11 and meta.input_size == (96, 128) and extras["output_kind"] == "logits"


# --- real engines, where TensorRT and a GPU are ---------------------------------------------------------
@pytest.fixture(scope="module")
def trt_version():
    from edgeseg.runtime.trt import require_tensorrt

    try:
        return require_tensorrt()
    except EdgesegError as err:
        pytest.skip(f"TensorRT and a CUDA GPU are needed ({err})")


@pytest.fixture(scope="module")
def int8_bundle(trt_version, small_checkpoint, camvid, tmp_path_factory):
    """A whole bundle (FP16, INT8 with cache and ranges, the verify set), exported for the TensorRT here."""
    from edgeseg.export.exporter import export_onnx

    out = tmp_path_factory.mktemp("trt") / "bundle"
    export_onnx(small_checkpoint, out, precisions=("fp32", "fp16", "int8"), calib=str(camvid / "images" / "train"),
                calib_images=8, data=f"camvid:{camvid}", num_verify=2, fidelity_images=4, verify_images=4,
                trt_version=".".join(trt_version.split(".")[:3]))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def fp16_engine(int8_bundle):
    from edgeseg.deploy.build import BuildOptions, build_bundle

    (engine,) = build_bundle(int8_bundle, BuildOptions(precisions=["fp16"], workspace_mib=512))
    return engine


def _val_images(camvid, count: int) -> list:
    from edgeseg.data import SegmentationData, resolve_dataset

    data = SegmentationData(resolve_dataset(f"camvid:{camvid}"), "val")
    return [data.read_image(i) for i in range(count)]


@pytest.mark.tensorrt
def test_fp16_engine_agrees_with_onnxruntime(fp16_engine, int8_bundle, camvid):
    from edgeseg.runtime import Segmenter

    images = _val_images(camvid, 4)
    with Segmenter.load(int8_bundle / "model.fp32.onnx") as ort, Segmenter.load(fp16_engine, device="cuda") as trt:
        assert trt.backend.name == "tensorrt" and trt.meta == ort.meta
        agreement = np.mean([(trt.segment(im) == ort.segment(im)).mean() for im in images])
        assert set(trt.backend.stage_times) == {"h2d_ms", "compute_ms", "d2h_ms"}
    assert agreement >= 0.99, agreement


@pytest.mark.tensorrt
def test_engine_manifest_is_written(fp16_engine, int8_bundle, trt_version):
    from edgeseg.deploy.build import plan_build
    from edgeseg.core.fileio import file_sha256

    manifest = json.loads(manifest_path(fp16_engine).read_text())
    for key in (*FACT_KEYS, "edgeseg_version", "precision", "inputs", "outputs", "build_flags", "build_seconds", "created"):
        assert key in manifest, key
    source = int8_bundle / manifest["onnx"]
    assert manifest["precision"] == "fp16" and manifest["onnx_sha256"] == file_sha256(source)
    assert manifest["build_flags"]["strongly_typed"] == plan_build(trt_version, "fp16").strongly_typed
    assert manifest["inputs"][0]["name"] == "images" and manifest["batch_range"] is None
    assert manifest["tensorrt_version"] and manifest["compute_capability"] and "edgeseg" in manifest["onnx_metadata"]
    assert check_engine_manifest(fp16_engine)["onnx_sha256"] == manifest["onnx_sha256"]


@pytest.mark.tensorrt
@pytest.mark.parametrize("source", ["qdq", "cache", "ranges"])
def test_int8_engine_from_each_source_passes_verify(int8_bundle, trt_version, source, tmp_path):
    from edgeseg.deploy.build import BuildOptions, build_bundle
    from edgeseg.runtime.trt import is_strongly_typed_only

    if source != "qdq" and is_strongly_typed_only(trt_version):
        pytest.skip(f"TensorRT {trt_version} builds strongly typed networks only (no {source})")
    options = BuildOptions(precisions=["int8"], int8_source=source, workspace_mib=512, out=tmp_path)
    (engine,) = build_bundle(int8_bundle, options)
    assert engine == tmp_path / "model.int8.engine"
    assert json.loads(manifest_path(engine).read_text())["int8_source"] == source
    done = run_cli("verify", engine, "--bundle", int8_bundle, "--min-agreement", "0.9", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.tensorrt
def test_cache_and_ranges_on_tensorrt_11_are_one_line(int8_bundle, trt_version):
    from edgeseg.runtime.trt import is_strongly_typed_only

    if not is_strongly_typed_only(trt_version):
        pytest.skip(f"TensorRT {trt_version} still builds weakly typed networks")
    done = run_cli("build", int8_bundle, "--precision", "int8", "--int8-source", "cache")
    assert_one_line_error(done, "--int8-source cache", "--int8-source qdq")


@pytest.mark.tensorrt
def test_verify_on_the_fp16_engine(fp16_engine, int8_bundle):
    done = run_cli("verify", fp16_engine, "--bundle", int8_bundle, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.tensorrt
def test_dla(int8_bundle, trt_version, tmp_path):
    import tensorrt as trt

    cores = trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores
    if cores == 0:  # a desktop GPU or an Orin Nano: the build refuses in one line
        done = run_cli("build", int8_bundle, "--precision", "fp16", "--dla-core", "0", "--out", tmp_path)
        assert_one_line_error(done, "--dla-core 0: this device has no DLA")
        return
    from edgeseg.deploy.build import BuildOptions, build_bundle
    from edgeseg.runtime import Segmenter

    (engine,) = build_bundle(int8_bundle, BuildOptions(precisions=["fp16"], dla_core=0, out=tmp_path))
    assert json.loads(manifest_path(engine).read_text())["build_flags"]["dla_core"] == 0
    with Segmenter.load(engine, device="cuda") as segmenter:
        assert segmenter.backend.name == "tensorrt"
    done = run_cli("build", int8_bundle, "--precision", "fp16", "--dla-core", str(cores), "--out", tmp_path)
    assert_one_line_error(done, f"--dla-core {cores}: this device has {cores} DLA core(s)")


@pytest.mark.tensorrt
def test_argmax_engine_gives_uint8_labels(trt_version, argmax_onnx, tmp_path, camvid):
    from edgeseg.deploy.build import EngineOptions, build_engine
    from edgeseg.runtime import Segmenter

    engine = build_engine(argmax_onnx, tmp_path / "argmax.fp32.engine", "fp32", EngineOptions(workspace_mib=512))
    assert json.loads(manifest_path(engine).read_text())["build_flags"]["labels_int32"] is True
    image = _val_images(camvid, 1)[0]
    with Segmenter.load(argmax_onnx) as ort, Segmenter.load(engine, device="cuda") as trt:
        labels = trt.segment(image)
        assert labels.dtype == np.uint8 and (labels == ort.segment(image)).mean() >= 0.99


@pytest.mark.tensorrt
def test_dynamic_batch_engine_and_timing_cache(trt_version, dynamic_onnx, tmp_path):
    from edgeseg.deploy.build import EngineOptions, build_engine
    from edgeseg.runtime.backends.tensorrt_backend import TensorRTBackend

    cache = tmp_path / "timing.cache"
    options = EngineOptions(timing_cache=cache, batch_range=(1, 2, 4))
    first = build_engine(dynamic_onnx, tmp_path / "a.fp32.engine", "fp32", options)
    assert cache.is_file() and cache.stat().st_size > 0
    second = build_engine(dynamic_onnx, tmp_path / "b.fp32.engine", "fp32", options)
    flags = [json.loads(manifest_path(p).read_text())["build_flags"] for p in (first, second)]
    assert (flags[0]["timing_cache_loaded"], flags[1]["timing_cache_loaded"]) == (False, True)

    batch = np.random.default_rng(0).random((4, 3, 96, 128), dtype=np.float32)
    with TensorRTBackend.load(second, device="cuda:0") as backend:
        assert backend.max_batch == 4 and backend.dynamic
        whole = backend.infer(batch)
        assert whole.shape == (4, 11, 96, 128) and whole.dtype == np.float32
        one = backend.infer(batch[1:2])
        assert (one.argmax(1) == whole[1:2].argmax(1)).mean() >= 0.99
        with pytest.raises(EdgesegError, match="at most 4"):
            backend.infer(np.zeros((5, 3, 96, 128), np.float32))


@pytest.mark.tensorrt
def test_engine_from_another_system_is_refused(fp16_engine, tmp_path):
    from edgeseg.runtime import Segmenter

    engine = tmp_path / fp16_engine.name
    engine.write_bytes(fp16_engine.read_bytes())
    manifest = json.loads(manifest_path(fp16_engine).read_text())
    manifest_path(engine).write_text(json.dumps({**manifest, "tensorrt_version": "7.0.0.11"}))
    with pytest.raises(EdgesegError, match="built for TensorRT 7.0.0"):
        Segmenter.load(engine, device="cuda")


def test_dla_int8_takes_calibration_not_qdq_before_11():
    """DLA runs INT8 from calibration scales only, not Q/DQ nodes, before TensorRT 11 (NVIDIA/TensorRT#2222)."""
    from edgeseg.deploy.build import plan_build

    for version in ("8.5.2", "8.6.1", "10.3.0"):
        with pytest.raises(EdgesegError) as err:
            plan_build(version, "int8", "qdq", dla=True)
        assert _one_line(err).startswith("--dla-core with --int8-source qdq") and "--int8-source cache" in str(err.value)
    assert plan_build("10.3.0", "int8", "ranges", dla=True).source_key == "fp32"
    strong = plan_build("11.4.1", "int8", "qdq", dla=True)  # 11.4.1: strongly typed DLA on AGX Orin, JetPack 7.2.2
    assert (strong.strongly_typed, strong.source_key) == (True, "int8_qdq_fp16")


def test_dla_builds_stay_weakly_typed_before_11():
    from edgeseg.deploy.build import plan_build

    plan = plan_build("10.3.0", "fp16", dla=True)
    assert (plan.source_precision, plan.strongly_typed, plan.builder_flags) == ("fp32", False, ("FP16",))
    assert plan_build("8.5.2", "int8", "cache", dla=True).builder_flags == ("FP16", "INT8")


def test_build_imports_no_torch_onnx_or_onnxruntime(fp16_bundle):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import edgeseg.runtime.backends.tensorrt_backend\n"
        "assert 'edgeseg.deploy.build' not in sys.modules, 'the runtime imports the builder'\n"
        "from edgeseg.deploy.build import build_bundle\n"
        "from edgeseg.core.errors import EdgesegError\n"
        f"try:\n    build_bundle({str(fp16_bundle)!r})\nexcept EdgesegError:\n    pass\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_qdq_source_needs_a_qdq_model():
    from edgeseg.deploy.build import plan_build

    with pytest.raises(EdgesegError) as err:
        plan_build("8.5.2", "int8", "qdq", onnx_precision="fp32", onnx_name="model.fp32.onnx")
    assert _one_line(err).startswith("model.fp32.onnx: an fp32 model, no Q/DQ scales")
    assert plan_build("8.5.2", "int8", "qdq", onnx_precision="int8").builder_flags == ("FP16", "INT8")
