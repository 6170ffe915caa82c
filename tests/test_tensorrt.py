"""The TensorRT stage: engine manifests and their checks everywhere; real engine builds where TensorRT and a GPU are."""

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from edgeseg.engine_manifest import (
    FACT_KEYS,
    check_engine_manifest,
    engine_manifest,
    l4t_release,
    manifest_mismatches,
    manifest_path,
    system_facts,
)
from edgeseg.errors import EdgesegError

ORIN = {"tensorrt_version": "8.5.2.2", "gpu_name": "Orin", "compute_capability": "8.7", "cuda_version": "11.4"}
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
    assert "model.fp16.engine.json" in _one_line(err) and "edgeseg export --engine" in str(err.value)


def test_mismatching_manifest_names_both_systems(tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not really an engine")
    manifest_path(engine).write_text(json.dumps({**ORIN, "precision": "fp16"}))
    with pytest.raises(EdgesegError) as err:
        check_engine_manifest(engine, facts=H100)
    line = _one_line(err)
    assert line.startswith("model.fp16.engine was built for TensorRT 8.5.2 on Orin (sm_87)"), line
    assert "this system has TensorRT 10.3.0 on NVIDIA H100 80GB HBM3 (sm_90)" in line
    assert "edgeseg export MODEL --engine" in line
    assert check_engine_manifest(engine, facts=ORIN)["precision"] == "fp16"  # the same system loads it


def test_damaged_manifest_is_one_line_error(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    manifest_path(engine).write_text("{ not json")
    with pytest.raises(EdgesegError) as err:
        check_engine_manifest(engine, facts=ORIN)
    assert "model.engine.json" in _one_line(err)


def test_engine_manifest_fields():
    manifest = engine_manifest(
        facts=ORIN, onnx_path="out/model.fp32.onnx", onnx_sha256="ab" * 32, precision="int8", int8_source="cache",
        inputs=[{"name": "images", "shape": [-1, 3, 96, 128], "dtype": "float"}],
        outputs=[{"name": "logits", "shape": [-1, 11, 96, 128], "dtype": "float"}], batch_range=(1, 4, 8),
        build_flags={"workspace_mib": 1024}, build_seconds=12.345, onnx_metadata={"edgeseg": "{}"},
        extra={"calibration_manifest_sha256": "cd" * 32},
    )  # fmt: skip
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


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_require_tensorrt_names_the_trt_extra():
    from edgeseg.build import require_tensorrt

    with pytest.raises(EdgesegError) as err:
        require_tensorrt("--engine")
    line = _one_line(err)
    assert line.startswith("--engine: ") and "edgeseg[trt]" in line


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_eval_engine_without_tensorrt_is_one_line_error(tmp_path, camvid):
    engine = tmp_path / "some.engine"
    engine.write_bytes(b"not really an engine")
    done = run_cli("eval", engine, "--data", f"camvid:{camvid}", "--limit", "1")
    assert_one_line_error(done, "some.engine", "edgeseg[trt]")


@pytest.fixture(scope="module")
def small_onnx(small_checkpoint, tmp_path_factory):
    from edgeseg.export import export_onnx

    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("onnx") / "onnx", verify=False).onnx_path


@pytest.fixture(scope="module")
def dynamic_onnx(small_checkpoint, tmp_path_factory):
    from edgeseg.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "dynamic"
    return export_onnx(small_checkpoint, out, verify=False, dynamic_batch=4).onnx_path


def test_metadata_read_without_onnx_matches_onnx(small_onnx):
    import onnx

    from edgeseg.onnx_meta import read_metadata_props
    from edgeseg.onnx_meta import parse_meta

    expected = {p.key: p.value for p in onnx.load(str(small_onnx)).metadata_props}
    props = read_metadata_props(small_onnx.read_bytes())
    assert props == expected and "edgeseg" in props
    meta, extras = parse_meta(props, small_onnx)
    assert meta.num_classes == 11 and meta.input_size == (96, 128) and extras["output_kind"] == "logits"


# --- real engines, where TensorRT and a GPU are -------------------------------------------
@pytest.fixture(scope="module")
def trt_here():
    from edgeseg.build import require_tensorrt

    try:
        return require_tensorrt()
    except EdgesegError:
        pytest.skip("TensorRT and a CUDA GPU are needed")


@pytest.fixture(scope="module")
def fp16_engine(trt_here, small_onnx, tmp_path_factory):
    from edgeseg.build import build_engine

    engine = tmp_path_factory.mktemp("engine") / "small.fp16.engine"
    return build_engine(small_onnx, engine, "fp16", workspace_mib=512, manifest_extra={"calibration_manifest_sha256": None})


def _val_images(camvid, count: int) -> list[np.ndarray]:
    from edgeseg.data import SegmentationData, resolve_dataset

    data = SegmentationData(resolve_dataset(f"camvid:{camvid}"), "val")
    return [data.read_image(i) for i in range(count)]


@pytest.mark.tensorrt
def test_fp16_engine_agrees_with_onnxruntime(fp16_engine, small_onnx, camvid):
    from edgeseg.runtime import Segmenter

    images = _val_images(camvid, 4)
    with Segmenter.load(small_onnx) as ort, Segmenter.load(fp16_engine, device="cuda") as trt:
        assert trt.backend.name == "tensorrt" and trt.meta == ort.meta
        agreement = np.mean([(trt.segment(im) == ort.segment(im)).mean() for im in images])
        assert set(trt.backend.stage_times) == {"h2d_ms", "compute_ms", "d2h_ms"}
    assert agreement >= 0.99, agreement


@pytest.mark.tensorrt
def test_engine_manifest_is_written(fp16_engine, small_onnx):
    from edgeseg.fileio import file_sha256

    manifest = json.loads(manifest_path(fp16_engine).read_text())
    for key in (*FACT_KEYS, "edgeseg_version", "precision", "inputs", "outputs", "build_flags", "build_seconds", "created"):
        assert key in manifest, key
    assert manifest["precision"] == "fp16" and manifest["onnx_sha256"] == file_sha256(small_onnx)
    assert manifest["inputs"][0]["name"] == "images" and manifest["batch_range"] is None
    assert manifest["tensorrt_version"] and manifest["compute_capability"] and "edgeseg" in manifest["onnx_metadata"]
    assert check_engine_manifest(fp16_engine)["onnx_sha256"] == manifest["onnx_sha256"]


@pytest.mark.tensorrt
def test_dynamic_batch_engine_and_timing_cache(trt_here, dynamic_onnx, tmp_path):
    from edgeseg.build import build_engine
    from edgeseg.runtime.backends.tensorrt_backend import TensorRTBackend

    cache = tmp_path / "timing.cache"
    first = build_engine(dynamic_onnx, tmp_path / "a.fp16.engine", "fp16", timing_cache=cache, batch_range=(1, 2, 4))
    assert cache.is_file() and cache.stat().st_size > 0
    second = build_engine(dynamic_onnx, tmp_path / "b.fp16.engine", "fp16", timing_cache=cache, batch_range=(1, 2, 4))
    flags = [json.loads(manifest_path(p).read_text())["build_flags"] for p in (first, second)]
    assert (flags[0]["timing_cache_loaded"], flags[1]["timing_cache_loaded"]) == (False, True)

    batch = np.random.default_rng(0).random((4, 3, 96, 128), dtype=np.float32)
    with TensorRTBackend.load(second, device="cuda") as backend:
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
