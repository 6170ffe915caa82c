"""The OpenVINO backend on a real exported model: labels against ONNX Runtime's, the CLI's bench, eval, verify
and run with --backend openvino, and its one-line errors. Skipped as a whole where OpenVINO is not installed."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgeseg[openvino]')")

from conftest import ROOT, assert_one_line_error, run_cli  # noqa: E402
from edgeseg.export.calibration import make_calibration_manifest  # noqa: E402
from edgeseg.core.errors import EdgesegError  # noqa: E402
from edgeseg.export.exporter import export_onnx  # noqa: E402
from edgeseg.runtime import Segmenter, open_backend  # noqa: E402
from edgeseg.runtime.backends.openvino_backend import OpenVinoBackend, cpu_has_bf16  # noqa: E402

IMAGES = 4


@pytest.fixture(scope="module")
def bundle(small_checkpoint, camvid, tmp_path_factory) -> Path:
    """FP32, FP16 and both INT8 forms of the small model, with the bundle's verify/ set."""
    calib = make_calibration_manifest(f"camvid:{camvid}", "train", 32, tmp_path_factory.mktemp("calib") / "camvid-32")
    out = tmp_path_factory.mktemp("openvino") / "export"
    export_onnx(small_checkpoint, out, data=f"camvid:{camvid}", num_verify=2, fidelity_images=2, verify_images=IMAGES,
                precisions=("fp32", "fp16", "int8"), calib=str(calib.parent), calib_images=8,
                verify_thresholds=("fp16=0.99", "int8=0.8"))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def val_images(camvid) -> list:
    return [cv2.imread(str(p)) for p in sorted((camvid / "images" / "val").glob("*.jpg"))[:IMAGES]]


def labels_of(model: Path, images: list, backend: str, **options) -> list:
    with Segmenter(open_backend(model, backend=backend, threads=1, **options)) as segmenter:
        return segmenter.segment(images)


def agreement(first: list, second: list) -> float:
    return float(np.mean([np.mean(a == b) for a, b in zip(first, second)]))


def test_fp32_labels_agree_with_onnxruntime(bundle, val_images):
    model = bundle / "model.fp32.onnx"
    with open_backend(model, backend="openvino", threads=1) as ov_backend, open_backend(model, threads=1) as ort_backend:
        assert (ov_backend.name, ort_backend.name) == ("openvino", "onnxruntime")  # auto keeps .onnx on ONNX Runtime
        assert ov_backend.meta == ort_backend.meta and ov_backend.output_kind == "logits"
        assert ov_backend.fixed_batch == 1 and ov_backend.max_batch == 1
        batch = np.random.default_rng(0).random((1, 3, *ov_backend.meta.input_size), dtype=np.float32)
        ov_logits, ort_logits = ov_backend.infer(batch), ort_backend.infer(batch)
        assert ov_logits.shape == ort_logits.shape and ov_logits.dtype == np.float32
        assert np.abs(ov_logits - ort_logits).max() < 1e-2
        again = ov_backend.infer(batch)
        assert again is not ov_logits and np.array_equal(again, ov_logits)  # fresh arrays, not a reused buffer
    ov_labels, ort_labels = labels_of(model, val_images, "openvino"), labels_of(model, val_images, "onnxruntime")
    assert ov_labels[0].shape == val_images[0].shape[:2]
    assert agreement(ov_labels, ort_labels) >= 0.999


def test_labels_come_from_the_graph_without_its_last_upsample(bundle, val_images):
    from edgeseg.runtime.labels import argmax, to_labels

    model = bundle / "model.fp32.onnx"
    with Segmenter(open_backend(model, backend="openvino", threads=1)) as segmenter:
        backend = segmenter.backend
        assert backend.early_request is not None and backend.request is None  # the whole graph: not compiled yet
        for image in val_images[:3]:
            segmenter.prepare([image])
            small, whole = segmenter.run(1, for_labels=True)[0], segmenter.run(1)[0]
            assert small.shape[1:] == tuple(s // 4 for s in backend.meta.input_size)
            assert whole.shape[1:] == backend.meta.input_size
            # the untrained fixture's logits nearly tie everywhere: float rounding may flip a few pixels
            assert np.mean(to_labels(small, backend.meta.input_size) == argmax(whole)) >= 0.999
    plain = open_backend(model, backend="openvino", threads=1, early_exit=False)
    assert plain.early_request is None and plain.request is not None


@pytest.mark.parametrize("name", ["model.fp16.onnx", "model.int8.onnx", "model.int8.qdq.onnx"])
def test_every_exported_form_runs(bundle, val_images, name):
    ov_labels = labels_of(bundle / name, val_images, "openvino")
    ort_labels = labels_of(bundle / name, val_images, "onnxruntime")
    # the untrained fixture model has near-tied logits, so INT8 rounding differences flip some pixels
    assert agreement(ov_labels, ort_labels) >= (0.99 if "fp16" in name else 0.9)


def test_bf16_where_the_cpu_has_it(bundle, val_images):
    import openvino as ov

    model = bundle / "model.fp32.onnx"
    if not cpu_has_bf16(ov.Core()):
        with pytest.raises(EdgesegError, match="precision bf16: this CPU has no bf16"):
            OpenVinoBackend.load(model, precision="bf16")
        return
    backend = OpenVinoBackend.load(model, threads=1, precision="bf16")
    hint = "INFERENCE_PRECISION_HINT"
    assert (backend.name, backend.variant) == ("openvino", "bf16")
    assert backend.early_request.get_compiled_model().get_property(hint) == ov.Type.bf16
    f32 = OpenVinoBackend.load(model, threads=1)  # f32 asked for explicitly: OpenVINO's own default here is bf16
    f32.infer(np.zeros((1, 3, *f32.meta.input_size), np.float32))  # compiles the whole graph too
    for request in (f32.early_request, f32.request):
        assert request.get_compiled_model().get_property(hint) == ov.Type.f32
    bf16_labels = labels_of(model, val_images, "openvino", precision="bf16")
    assert agreement(bf16_labels, labels_of(model, val_images, "onnxruntime")) >= 0.9


def test_bad_options_are_one_line_errors(bundle, small_checkpoint, tmp_path):
    model = bundle / "model.fp32.onnx"
    with pytest.raises(EdgesegError, match="precision 'fp64': the openvino backend takes f32 or bf16"):
        open_backend(model, backend="openvino", precision="fp64")
    with pytest.raises(EdgesegError, match="--threads 0"):
        OpenVinoBackend.load(model, threads=0)
    with pytest.raises(EdgesegError, match="no such model file"):
        open_backend(tmp_path / "absent.onnx", backend="openvino")
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 2])
    with pytest.raises(EdgesegError) as caught:
        open_backend(damaged, backend="openvino")
    assert "\n" not in str(caught.value)
    assert_one_line_error(run_cli("bench", model, "--backend", "openvino", "--device", "cuda", "--iters", "1"),
                          "--device cuda", "the openvino backend runs on the CPU")  # fmt: skip
    assert_one_line_error(run_cli("bench", small_checkpoint, "--backend", "openvino", "--iters", "1"),
                          "the openvino backend opens .onnx models")  # fmt: skip
    assert_one_line_error(run_cli("bench", model, "--backend", "onnxruntime,openvnio", "--iters", "1"),
                          "--backend onnxruntime,openvnio", "unknown openvnio")  # fmt: skip


def test_cli_bench_compares_two_backends_on_one_file(bundle, tmp_path):
    report = tmp_path / "bench.json"
    done = run_cli("bench", bundle / "model.fp32.onnx", bundle / "model.int8.onnx", "--backend", "onnxruntime,openvino",
                   "--threads", "1", "--iters", "2", "--warmup", "1", "--json", report)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    rows = json.loads(report.read_text())["results"]
    assert [(Path(r["model"]).name, r["backend"]) for r in rows] == [
        ("model.fp32.onnx", "onnxruntime"), ("model.fp32.onnx", "openvino"),
        ("model.int8.onnx", "onnxruntime"), ("model.int8.onnx", "openvino")]  # fmt: skip
    assert all(r["threads"] == 1 and r["latency_ms"]["mean"] > 0 for r in rows)
    assert all(r["variant"] == "" for r in rows), "no variant unless asked for (ONNX Runtime's AMX rewrite is opt-in)"


def test_cli_eval_scores_like_onnxruntime(bundle, camvid, tmp_path):
    scores = {}
    for backend in ("onnxruntime", "openvino"):
        done = run_cli("eval", bundle / "model.fp32.onnx", "--data", f"camvid:{camvid}", "--limit", "3",
                       "--backend", backend, "--json", tmp_path / backend / "eval.json")  # fmt: skip
        assert done.returncode == 0, done.stderr[-1500:]  # a folder each: the plots beside --json are not replaced
        scores[backend] = json.loads((tmp_path / backend / "eval.json").read_text())
    assert scores["openvino"]["num_images"] == 3
    assert abs(scores["openvino"]["miou"] - scores["onnxruntime"]["miou"]) < 0.002


def test_cli_verify_against_the_bundle(bundle, tmp_path):
    report_path = tmp_path / "verify.json"
    done = run_cli("verify", bundle / "model.fp32.onnx", "--backend", "openvino", "--threads", "1", "--json", report_path)
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads(report_path.read_text())
    assert report["backend"] == "openvino" and report["passed"] is True and report["num_images"] == IMAGES
    assert report["agreement"] >= 0.999


def test_cli_run_writes_a_video(bundle, camvid_clip, tmp_path):
    out, stats = tmp_path / "out.mp4", tmp_path / "run.json"
    done = run_cli("run", bundle / "model.fp32.onnx", "--source", camvid_clip, "--out", out, "--backend", "openvino",
                   "--threads", "1", "--max-frames", "3", "--json", stats)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    assert json.loads(stats.read_text())["processed"] == 3
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_doctor_names_openvino():
    import openvino

    done = run_cli("doctor")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("OpenVINO "))
    assert line.split()[1] == "ok" and openvino.__version__.split("-")[0] in line and "CPU bf16" in line


def test_without_openvino_it_is_one_line_naming_the_extra(bundle, tmp_path):
    site = Path(np.__file__).parents[1]
    trimmed = tmp_path / "site"
    trimmed.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if not (name.startswith("openvino") or name.endswith(".pth") or name.startswith("__editable__")):
            (trimmed / entry.name).symlink_to(entry)
    env = {"PYTHONPATH": f"{ROOT}:{trimmed}", "PATH": "/usr/bin:/bin"}

    def edgeseg(*args):
        command = [sys.executable, "-S", "-m", "edgeseg", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)

    done = edgeseg("bench", bundle / "model.fp32.onnx", "--backend", "openvino", "--iters", "1")
    assert_one_line_error(done, "OpenVINO is not installed", "pip install 'edgeseg[openvino]'")
    doctor = edgeseg("doctor")
    line = next(line for line in doctor.stdout.splitlines() if line.startswith("OpenVINO "))
    assert line.split()[1] == "info" and "fix: optional" in line and "edgeseg[openvino]" in line
