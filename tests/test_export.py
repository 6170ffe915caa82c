"""ONNX export on real ONNX Runtime sessions: metadata, parity, argmax, batch axes, errors."""

import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import assert_one_line_error, run_cli
from edgeseg.model.checkpoint import load_model
from edgeseg.core.errors import EdgesegError
from edgeseg.export.exporter import export_onnx
from edgeseg.core.onnx_meta import parse_meta, read_meta
from edgeseg.runtime import Segmenter


@pytest.fixture(scope="module")
def exported(small_checkpoint, camvid, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "logits"
    return export_onnx(small_checkpoint, out, data=f"camvid:{camvid}", num_verify=3, dynamic_batch=True)


def _val_images(camvid, count):
    return [cv2.imread(str(p)) for p in sorted((camvid / "images" / "val").glob("*.jpg"))[:count]]


def test_metadata_round_trip_through_onnx_and_onnxruntime(exported, small_checkpoint):
    _, meta = load_model(small_checkpoint)
    from_proto, extras = read_meta(exported.onnx_path)
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    from_ort, _ = parse_meta(session.get_modelmeta().custom_metadata_map, exported.onnx_path)
    assert from_proto == meta == from_ort
    assert extras["output_kind"] == "logits" and extras["precision"] == "fp32" and len(extras["source_sha256"]) == 64


def test_parity_report(exported):
    report = json.loads(exported.parity_path.read_text())
    assert report["passed"] is True and report["override_used"] is False
    assert report["num_images"] == 3 and report["argmax_agreement"] >= 0.999
    assert report["max_rel_logit_diff"] <= 1e-3
    assert sorted(p.name for p in exported.onnx_path.parent.iterdir()) == ["export.json", "model.fp32.onnx", "parity.json", "report.html",
                                                                          "verify"]


def test_resize_nodes_keep_align_corners(exported):
    graph = onnx.load(str(exported.onnx_path)).graph
    modes = [a.s.decode() for n in graph.node if n.op_type == "Resize" for a in n.attribute
             if a.name == "coordinate_transformation_mode"]  # fmt: skip
    assert modes and set(modes) == {"align_corners"}


def test_dynamic_batch_runs_batches_of_one_and_three(exported):
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        out = session.run(None, {"images": np.random.rand(batch, 3, 96, 128).astype(np.float32)})[0]
        assert out.shape == (batch, 11, 96, 128)


def test_onnx_labels_match_pytorch(exported, small_checkpoint, camvid):
    with Segmenter.load(small_checkpoint) as reference, Segmenter.load(exported.onnx_path) as deployed:
        for image in _val_images(camvid, 3):
            a, b = reference.segment(image), deployed.segment(image)
            assert a.shape == b.shape == (360, 480)
            assert (a == b).mean() >= 0.999


def test_argmax_in_graph_gives_uint8_labels(small_checkpoint, exported, tmp_path):
    result = export_onnx(small_checkpoint, tmp_path / "argmax", argmax=True, batch=2, verify=False)
    labels_session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    logits_session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((2, 3, 96, 128), dtype=np.float32)
    labels = labels_session.run(None, {"images": batch})[0]
    assert labels.dtype == np.uint8 and labels.shape == (2, 96, 128)
    assert np.array_equal(labels, logits_session.run(None, {"images": batch})[0].argmax(axis=1))
    with Segmenter.load(result.onnx_path) as deployed:
        assert deployed.segment(np.zeros((96, 128, 3), np.uint8)).shape == (96, 128)  # padded up to batch 2
        with pytest.raises(EdgesegError, match="exported for batch 2"):
            deployed.backend.infer(np.zeros((3, 3, 96, 128), np.float32))


def test_cli_export(small_checkpoint, camvid, tmp_path):
    done = run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--data", f"camvid:{camvid}", "--num-verify", "2")
    assert done.returncode == 0, done.stderr
    assert "PASSED" in done.stdout and (tmp_path / "e" / "model.fp32.onnx").is_file()


def test_cli_export_errors_leave_nothing(small_checkpoint, camvid, tmp_path):
    out = tmp_path / "e"
    assert_one_line_error(run_cli("export", small_checkpoint, "--out", out, "--img-size", "100", "128", "--no-verify"),
                          "--img-size", "multiples of 8")  # fmt: skip
    assert_one_line_error(run_cli("export", small_checkpoint, "--out", out), "--data", "--no-verify")
    assert_one_line_error(run_cli("export", small_checkpoint, "--out", out, "--precision", "int4", "--no-verify"),
                          "--precision int4")  # fmt: skip
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_non_edgeseg_inputs(tmp_path, camvid):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"junk")
    assert_one_line_error(run_cli("export", fake, "--out", tmp_path / "e", "--no-verify"), "fake.pt")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07junk")
    assert_one_line_error(run_cli("eval", broken, "--data", f"camvid:{camvid}"), "broken.onnx")


def test_the_output_upsampling_is_found_through_the_in_graph_argmax(small_checkpoint, exported, tmp_path):
    from edgeseg.export.quantize import output_upsampling

    argmax = export_onnx(small_checkpoint, tmp_path / "argmax", argmax=True, verify=False).onnx_path
    for path in (exported.onnx_path, argmax):
        graph = onnx.load(str(path)).graph
        (name,) = output_upsampling(path)
        names = [n.name for n in graph.node]
        assert graph.node[names.index(name)].op_type == "Resize"
        later = [n.op_type for n in graph.node[names.index(name) + 1 :]]  # nodes are in topological order
        assert set(later) <= {"ArgMax", "Cast", "Identity"}, later  # nothing but the argmax after it
