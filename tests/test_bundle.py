"""The deployment bundle and `edgeseg verify`: a real export, real ONNX Runtime and PyTorch runs, real CLI subprocesses."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli, run_without, site_without
from edgeseg.deploy.bundle import DEFAULT_THRESHOLDS, evenly_spaced, load_bundle
from edgeseg.core.errors import EdgesegError
from edgeseg.export.exporter import export_onnx
from edgeseg.core.fileio import file_sha256
from edgeseg.runtime import Segmenter
from edgeseg.deploy.verify import failure_line, run_verify

VERIFY_IMAGES = 4
# The untrained fixture model has near-tied logits: its INT8 forms agree with PyTorch on ~87-91 % of pixels and
# FP16 on ~99.9 %, so the test bundle carries its own thresholds (--verify-threshold), as a user's export may.
THRESHOLDS = {**DEFAULT_THRESHOLDS, "fp16": 0.995, "int8": 0.85}


@pytest.fixture(scope="module")
def bundle_dir(int8_bundle):
    """conftest's bundle (VERIFY_IMAGES verify images, thresholds fp16=0.995, int8=0.85), shared with test_report.py."""
    return int8_bundle


@pytest.fixture()
def bundle_copy(bundle_dir, tmp_path):
    """A copy to damage."""
    return shutil.copytree(bundle_dir, tmp_path / "copy")


@pytest.fixture(scope="module")
def other_size_bundle(small_checkpoint, tmp_path_factory):
    """The same checkpoint exported at 64x96 without --data: no verify set."""
    out = tmp_path_factory.mktemp("other") / "export"
    export_onnx(small_checkpoint, out, img_size=(64, 96), verify=False)
    return out


def _manifest(folder):
    return json.loads((folder / "export.json").read_text())


def test_export_json_is_a_bundle_manifest(bundle_dir):
    manifest = _manifest(bundle_dir)
    assert manifest["bundle_format"] == 1 and manifest["input_size"] == [96, 128]
    assert manifest["output_kind"] == "logits" and manifest["num_classes"] == 11 and len(manifest["classes"]) == 11
    assert {p: t["min_agreement"] for p, t in manifest["thresholds"].items()} == THRESHOLDS
    assert manifest["build"] == {"precisions": ["fp16", "int8"], "int8_source": "qdq", "workspace_mib": 1024,
                                 "dla_core": None, "batch": 1, "dynamic_batch": 0}  # fmt: skip
    files = manifest["files"]
    assert files["fp16"]["requires"] == {"onnxruntime": ">=1.17"}
    assert files["int8_qdq"]["requires"]["tensorrt_int8_source"] == "qdq"
    assert files["calib_cache"]["requires"] == {"tensorrt": "==8.5.2", "weakly_typed": True}
    assert files["calib_ranges"]["requires"] == {"tensorrt": ">=8.5,<11", "weakly_typed": True}
    for entry in files.values():
        assert file_sha256(bundle_dir / entry["name"]) == entry["sha256"]
    assert manifest["verify"]["images"] == VERIFY_IMAGES
    assert file_sha256(bundle_dir / "verify" / "manifest.json") == manifest["verify"]["manifest_sha256"]


def test_verify_set_is_evenly_spaced_val_images_with_their_bytes(bundle_dir, camvid):
    val = sorted((camvid / "images" / "val").glob("*.jpg"))
    chosen = [val[i] for i in evenly_spaced(VERIFY_IMAGES, len(val))]
    assert evenly_spaced(VERIFY_IMAGES, len(val)) == [0, 33, 67, 100] and evenly_spaced(5, 3) == [0, 1, 2]
    verify = load_bundle(bundle_dir).verify_set()
    assert (verify.dataset, verify.split, verify.input_size) == ("camvid", "val", (96, 128))
    assert [item.image.name for item in verify.items] == [p.name for p in chosen]
    for item, source in zip(verify.items, chosen):
        assert item.image.read_bytes() == source.read_bytes()
    listed = json.loads((bundle_dir / "verify" / "manifest.json").read_text())
    assert listed["reference"] == {"checkpoint": "small.pt", "sha256": _manifest(bundle_dir)["checkpoint_sha256"]}


def test_reference_labels_are_the_checkpoints_own_predictions(bundle_dir, small_checkpoint):
    """Image 0 is reused from the fidelity step, the others are computed: both must equal Segmenter.segment."""
    with Segmenter.load(small_checkpoint) as reference:
        for item in load_bundle(bundle_dir).verify_set().items:
            stored = cv2.imread(str(item.reference), cv2.IMREAD_UNCHANGED)
            assert stored.dtype == np.uint8 and stored.shape == (360, 480)
            assert np.array_equal(stored, reference.segment(cv2.imread(str(item.image))))


@pytest.mark.parametrize("name", ["model.fp16.onnx", "model.int8.onnx"])
def test_cli_verify_onnx_passes_and_writes_json(bundle_dir, tmp_path, name):
    report_path = tmp_path / "verify.json"
    done = run_cli("verify", bundle_dir / name, "--json", report_path, "--threads", "1")
    assert done.returncode == 0, done.stderr[-1500:]
    assert "PASSED" in done.stdout and "pixel agreement" in done.stdout
    report = json.loads(report_path.read_text())
    precision = name.split(".")[1]
    assert report["passed"] is True and report["precision"] == precision and report["num_images"] == VERIFY_IMAGES
    assert report["threshold"] == THRESHOLDS[precision] and report["threshold_from"] == "bundle"
    assert THRESHOLDS[precision] <= report["agreement"] < 1.0
    assert len(report["worst_images"]) == 3 and set(report["class_iou_vs_reference"]) == set(_manifest(bundle_dir)["classes"])


def test_cli_verify_a_bundle_folder_verifies_every_model_in_it(bundle_dir, tmp_path):
    """A bundle folder is what a user passes first: every model export.json lists (and the engines built there) is
    verified, and --json is one object: {bundle, passed, models: [one report each]}."""
    report_path = tmp_path / "bundle.json"
    done = run_cli("verify", bundle_dir, "--json", report_path, "--threads", "1")
    assert done.returncode == 0, done.stderr[-1500:]
    names = ["model.fp32.onnx", "model.fp16.onnx", "model.int8.qdq.onnx", "model.int8.qdq.fp16.onnx", "model.int8.onnx"]
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("PASSED ")] == names
    report = json.loads(report_path.read_text())
    assert report["bundle"] == str(bundle_dir) and report["passed"] is True
    assert [m["model"] for m in report["models"]] == names and all(m["num_images"] == VERIFY_IMAGES for m in report["models"])
    failed = run_cli("verify", bundle_dir, "--min-agreement", "1", "--backend", "onnxruntime")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert [line.split()[2] for line in failed.stderr.splitlines()] == names[1:], failed.stderr  # FP32 agrees on every pixel
    assert_one_line_error(run_cli("verify", bundle_dir, "--backend", "tensorrt"), f"{bundle_dir}: holds no model", "--backend")
    assert_one_line_error(run_cli("verify", bundle_dir, "--bundle", bundle_dir), "pass the folder once")
    without_ort = run_without(site_without(tmp_path, "onnxruntime"), "verify", bundle_dir)  # a board with TensorRT only
    assert_one_line_error(without_ort, "model.fp32.onnx, model.fp16.onnx", "need onnxruntime", "--backend tensorrt")


def test_verify_refuses_a_json_folder_before_it_runs(bundle_dir, tmp_path):
    """Not PASSED and then a traceback: the --json that cannot be written is refused before any model runs."""
    folder = tmp_path / "reports"
    folder.mkdir()
    done = run_cli("verify", bundle_dir / "model.fp16.onnx", "--json", folder)
    assert_one_line_error(done, f"--json {folder}", "is a folder")
    assert done.stdout == "" and list(folder.iterdir()) == []


def test_cli_verify_the_fp16_float_qdq_model_on_the_cpu(bundle_dir, tmp_path):
    """The model strongly typed INT8 engines are built from runs through ONNX Runtime here, checked against export.json."""
    report_path = tmp_path / "verify.json"
    done = run_cli("verify", bundle_dir / "model.int8.qdq.fp16.onnx", "--json", report_path, "--min-agreement", "0.5")
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stderr[-1500:]
    report = json.loads(report_path.read_text())
    assert (report["model"], report["precision"], report["backend"]) == ("model.int8.qdq.fp16.onnx", "int8", "onnxruntime")
    assert report["model_sha256"] == _manifest(bundle_dir)["files"]["int8_qdq_fp16"]["sha256"] and report["agreement"] > 0.5


def test_cli_verify_a_checkpoint_through_pytorch(bundle_dir, small_checkpoint, tmp_path):
    done = run_cli("verify", small_checkpoint, "--bundle", bundle_dir, "--json", tmp_path / "pt.json")
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads((tmp_path / "pt.json").read_text())
    assert report["precision"] == "fp32" and report["backend"] == "torch" and report["agreement"] == 1.0


def test_threshold_miss_exits_1_with_one_line(bundle_dir, bundle_copy, tmp_path):
    done = run_cli("verify", bundle_dir / "model.fp16.onnx", "--min-agreement", "1")  # FP16 agrees on ~99.9 %
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("verify: FAILED model.fp16.onnx")
    # the bundle's own threshold is the one applied: raise it above what INT8 reaches
    assert run_cli("verify", bundle_copy / "model.int8.onnx", "--json", tmp_path / "a.json").returncode == 0
    assert json.loads((tmp_path / "a.json").read_text())["agreement"] < 1.0
    manifest = _manifest(bundle_copy)
    manifest["thresholds"]["int8"]["min_agreement"] = 1.0
    (bundle_copy / "export.json").write_text(json.dumps(manifest))
    done = run_cli("verify", bundle_copy / "model.int8.onnx")
    assert done.returncode == 1 and "verify: FAILED model.int8.onnx (int8)" in done.stderr and "Traceback" not in done.stderr


def test_another_checkpoint_misses_the_threshold(bundle_dir, camvid, tmp_path):
    """A model that is not the reference (other weights, same size and classes) fails for real."""
    report = run_verify(_checkpoint(camvid, tmp_path / "other.pt", seed=1, num_classes=11), bundle_dir)
    assert not report.passed and report.precision == "fp32" and report.pixel_agreement < 0.9
    assert failure_line(report).startswith("verify: FAILED other.pt (fp32): pixel agreement")


def test_tampered_reference_is_one_line(bundle_copy):
    reference = sorted((bundle_copy / "verify" / "reference").iterdir())[1]
    labels = cv2.imread(str(reference), cv2.IMREAD_UNCHANGED)
    labels[0, 0] = (labels[0, 0] + 1) % 11
    cv2.imwrite(str(reference), labels)
    assert_one_line_error(run_cli("verify", bundle_copy / "model.fp16.onnx"), reference.name, "sha256 differs", "re-copy the bundle")


def test_missing_verify_image_is_one_line(bundle_copy):
    image = sorted((bundle_copy / "verify" / "images").iterdir())[2]
    image.unlink()
    assert_one_line_error(run_cli("verify", bundle_copy / "model.int8.onnx"), image.name, "missing", "re-copy the bundle")


def test_altered_model_in_the_bundle_is_one_line(bundle_copy):
    model = bundle_copy / "model.int8.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    assert_one_line_error(run_cli("verify", model), "model.int8.onnx", "sha256 differs", "re-copy the bundle or re-export")
    with pytest.raises(EdgesegError, match="model.int8.onnx: sha256 differs"):
        load_bundle(bundle_copy).check_file("int8")
    (bundle_copy / "model.fp16.onnx").unlink()
    with pytest.raises(EdgesegError, match="model.fp16.onnx: missing from the bundle; re-copy the bundle"):
        load_bundle(bundle_copy).check_file("model.fp16.onnx")


def test_model_of_another_input_size_is_one_line(bundle_dir, other_size_bundle):
    assert _manifest(other_size_bundle)["verify"] is None and not (other_size_bundle / "verify").exists()
    done = run_cli("verify", other_size_bundle / "model.fp32.onnx", "--bundle", bundle_dir)
    assert_one_line_error(done, "input 64x96", "96x128", "--img-size 96 128")
    assert_one_line_error(run_cli("verify", other_size_bundle / "model.fp32.onnx"), "no verify set", "--data")


def test_model_with_another_class_count_is_an_error(bundle_dir, camvid, tmp_path):
    checkpoint = _checkpoint(camvid, tmp_path / "five.pt", seed=0, num_classes=5)
    with pytest.raises(EdgesegError, match="five.pt: predicts 5 classes but the bundle .* has 11"):
        run_verify(checkpoint, bundle_dir)


def test_model_outside_any_bundle_and_bad_options(bundle_dir, small_checkpoint, tmp_path):
    assert_one_line_error(run_cli("verify", small_checkpoint), "export.json", "--bundle")
    assert_one_line_error(run_cli("verify", tmp_path / "none.onnx"), "none.onnx", "no such model")
    assert_one_line_error(run_cli("verify", bundle_dir / "model.fp16.onnx", "--min-agreement", "99.9"), "--min-agreement")


def test_bad_export_options_are_errors(small_checkpoint, tmp_path):
    assert_one_line_error(run_cli("export", small_checkpoint, "--out", tmp_path / "e", "--no-verify",
                                  "--verify-threshold", "int8=98"), "--verify-threshold int8=98", "e.g. int8=0.98")  # fmt: skip
    with pytest.raises(EdgesegError, match="--verify-threshold int4=0.9"):
        export_onnx(small_checkpoint, tmp_path / "e", verify=False, verify_thresholds=("int4=0.9",))
    with pytest.raises(EdgesegError, match="--verify-images 0"):
        export_onnx(small_checkpoint, tmp_path / "e", data="camvid:x", verify_images=0)
    assert not (tmp_path / "e").exists()


def test_strongly_typed_int8_builds_from_the_fp16_float_qdq_model(bundle_copy, capsys):
    """plan_build's source_key picks the file; a bundle from before that file existed builds from the plain Q/DQ model."""
    from edgeseg.deploy.build import _source_onnx, plan_build

    strong, weak = plan_build("10.3.0", "int8", "qdq"), plan_build("8.6.1", "int8", "qdq")
    bundle = load_bundle(bundle_copy)
    assert _source_onnx(bundle, strong).name == "model.int8.qdq.fp16.onnx"
    assert _source_onnx(bundle, weak).name == "model.int8.qdq.onnx" and capsys.readouterr().out == ""
    manifest = _manifest(bundle_copy)
    del manifest["files"]["int8_qdq_fp16"]  # as an earlier edgeseg wrote it
    (bundle_copy / "export.json").write_text(json.dumps(manifest))
    assert _source_onnx(load_bundle(bundle_copy), strong).name == "model.int8.qdq.onnx"
    note = capsys.readouterr().out.strip()
    assert note.startswith("note: ") and "float layers then run in FP32" in note and len(note.splitlines()) == 1
    with pytest.raises(EdgesegError, match="the bundle has no int8_qdq_fp16 model for a int8 engine"):
        load_bundle(bundle_copy).onnx_for("int8_qdq_fp16", "int8")


def test_load_bundle_errors(bundle_copy, tmp_path):
    bundle = load_bundle(bundle_copy / "model.fp16.onnx")  # a model file inside it finds the bundle too
    assert bundle.build_defaults["precisions"] == ["fp16", "int8"] and bundle.threshold("int8") == 0.85
    names = {key: bundle.onnx_for(key, "int8").name for key in ("int8_qdq", "int8_qdq_fp16", "fp16", "fp32")}
    assert names == {"int8_qdq": "model.int8.qdq.onnx", "int8_qdq_fp16": "model.int8.qdq.fp16.onnx",
                     "fp16": "model.fp16.onnx", "fp32": "model.fp32.onnx"}  # fmt: skip
    manifest_path = bundle_copy / "export.json"
    manifest = _manifest(bundle_copy)
    manifest_path.write_text(json.dumps({**manifest, "bundle_format": 7}))
    with pytest.raises(EdgesegError, match="bundle_format 7 is unknown"):
        load_bundle(bundle_copy)
    manifest_path.write_text('{"files": ')
    with pytest.raises(EdgesegError, match="export.json: damaged"):
        load_bundle(bundle_copy)
    manifest_path.unlink()
    with pytest.raises(EdgesegError, match="no export.json"):
        load_bundle(bundle_copy)
    assert_one_line_error(run_cli("verify", bundle_copy / "model.fp16.onnx", "--bundle", bundle_copy), "no export.json")


def test_bundle_and_verify_import_without_torch():
    from test_layering import BLOCK_TORCH

    code = BLOCK_TORCH + "import edgeseg.deploy.bundle, edgeseg.deploy.verify\nassert 'torch' not in sys.modules\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _checkpoint(camvid, path, seed, num_classes):
    import torch

    from edgeseg.model.checkpoint import checkpoint_dict, save_checkpoint
    from edgeseg.data import resolve_dataset
    from edgeseg.core.meta import ModelMeta
    from edgeseg.model.network import build_model

    spec = resolve_dataset(f"camvid:{camvid}")
    classes = spec.classes[:num_classes]
    meta = ModelMeta(num_classes=num_classes, classes=classes, palette=spec.palette[:num_classes],
                     ignore_index=spec.ignore_index, input_size=(96, 128))  # fmt: skip
    torch.manual_seed(seed)
    return save_checkpoint(checkpoint_dict(build_model(num_classes).eval(), meta), path)
