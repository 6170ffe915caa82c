"""The separable DeepLabv3+ head (issue 13): layout, shapes, MACs, metadata, and a trained one through every stage."""

import json
from dataclasses import replace

import onnx
import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, run_cli
from edgeseg.deploy.bench import BenchOptions, benchmark_models, format_table
from edgeseg.export.calibration import make_calibration_manifest
from edgeseg.model.checkpoint import checkpoint_dict, load_model, read_checkpoint, save_checkpoint
from edgeseg.model.complexity import layer_macs, measure
from edgeseg.core.errors import EdgesegError
from edgeseg.export.exporter import export_onnx
from edgeseg.core.meta import HEADS, ModelMeta, default_class_names, default_palette, meta_from_dict
from edgeseg.model.network import SeparableConv, build_model
from edgeseg.core.onnx_meta import read_meta
from edgeseg.train.trainer import TrainConfig, train
from seed_weights import KEYS_FILE, read_seed_layout

C = 11
META = ModelMeta(num_classes=C, classes=default_class_names(C), palette=default_palette(C), ignore_index=255,
                 input_size=(64, 96))  # fmt: skip
REPLACED = ("aspp.branch2.", "aspp.branch3.", "aspp.branch4.", "cat_conv.")


def _shapes(model: nn.Module) -> dict:
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _separable_shapes(prefix: str, inp: int, oup: int) -> dict:
    shapes = {f"{prefix}.depthwise.weight": (inp, 1, 3, 3), f"{prefix}.pointwise.weight": (oup, inp, 1, 1)}
    for bn, channels in (("depthwise_bn", inp), ("pointwise_bn", oup)):
        shapes.update({f"{prefix}.{bn}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{prefix}.{bn}.num_batches_tracked"] = ()
    return shapes


# --- the architecture ---------------------------------------------------------------------------------------------
def test_seed_is_the_default_and_unchanged():
    assert HEADS[0] == "seed"
    torch.manual_seed(0)
    default = build_model(C).state_dict()
    torch.manual_seed(0)
    seed = build_model(C, head="seed").state_dict()
    assert list(default) == list(seed) and all(torch.equal(default[k], seed[k]) for k in default)
    if KEYS_FILE.exists():
        assert [(k, tuple(t.shape)) for k, t in build_model(21, head="seed").state_dict().items()] == [
            (key, shape) for key, _, shape in read_seed_layout()]  # fmt: skip


@pytest.mark.parametrize("output_stride,dilations", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_separable_state_dict_layout(output_stride, dilations):
    model = build_model(C, output_stride, head="separable")
    ours, seeds = _shapes(model), _shapes(build_model(C, output_stride))
    kept = {k: v for k, v in seeds.items() if not k.startswith(REPLACED)}
    assert {k: v for k, v in ours.items() if not k.startswith(REPLACED)} == kept  # backbone, 1x1s, classifier
    expected = {}
    for branch in ("branch2", "branch3", "branch4"):
        expected.update(_separable_shapes(f"aspp.{branch}", 320, 256))
    expected.update(_separable_shapes("cat_conv.sep1", 304, 256))
    expected.update(_separable_shapes("cat_conv.sep2", 256, 256))
    assert {k: v for k, v in ours.items() if k.startswith(REPLACED)} == expected
    for branch, dilation in zip((model.aspp.branch2, model.aspp.branch3, model.aspp.branch4), dilations):
        assert isinstance(branch, SeparableConv)
        depthwise, pointwise = branch.depthwise, branch.pointwise
        assert depthwise.groups == 320 and depthwise.dilation == depthwise.padding == (dilation, dilation)
        assert depthwise.bias is None and pointwise.bias is None and pointwise.kernel_size == (1, 1)
        assert [type(m).__name__ for m in branch] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"]
    assert [type(m).__name__ for m in model.cat_conv] == ["SeparableConv", "Dropout", "SeparableConv", "Dropout"]
    assert model.cat_conv.sep1.depthwise.padding == (1, 1) and model.cat_conv.sep1.depthwise.groups == 304


@pytest.mark.parametrize("output_stride", [16, 8])
def test_separable_shapes_train_and_eval(output_stride):
    model = build_model(C, output_stride, head="separable")
    x = torch.rand(2, 3, 64, 96)
    model(x).mean().backward()  # training mode, batch 2
    assert model.cat_conv.sep2.pointwise.weight.grad is not None
    with torch.no_grad():
        assert model.eval()(x).shape == (2, C, 64, 96)
        assert model.train()(x[:1]).shape == (1, C, 64, 96)  # the image-pooling batch-of-one fix still holds


def test_unknown_head_is_refused_by_the_model():
    with pytest.raises(ValueError, match="head must be one of"):
        build_model(C, head="dense")


# --- MACs and parameters ------------------------------------------------------------------------------------------
def test_counter_on_a_network_counted_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),
                        nn.Flatten(), nn.Linear(800, 5))  # fmt: skip
    net.train()
    before = net[1].running_mean.clone()
    counted = layer_macs(net, (10, 10))
    assert counted == {"0": 100 * 8 * 3 * 9, "2": 100 * 8 * 9, "4": 800 * 5}
    assert net.training and torch.equal(net[1].running_mean, before)  # no statistics changed, mode restored
    assert measure(net, (10, 10)).params == (3 * 8 * 9 + 8) + (8 + 8) + (8 * 9 + 8) + (800 * 5 + 5)


@pytest.mark.parametrize("size", [(360, 480), (512, 512)])
def test_separable_head_at_most_a_quarter_of_the_seed_heads_macs(size):
    seed, separable = (measure(build_model(C, head=head), size) for head in ("seed", "separable"))
    assert separable.head_macs <= 0.25 * seed.head_macs, separable.head_macs / seed.head_macs
    assert separable.macs < seed.macs and separable.params < seed.params
    assert seed.macs - seed.head_macs == separable.macs - separable.head_macs  # the same backbone
    assert seed.params - seed.head_params == separable.params - separable.head_params


def test_seed_macs_match_the_issues_count():
    """26.3 GMACs at 512x512 for the seed's 21-class model, as measured independently in issue 13."""
    assert measure(build_model(21), (512, 512)).macs / 1e9 == pytest.approx(26.3, abs=0.05)


# --- metadata and checkpoints -------------------------------------------------------------------------------------
def test_meta_head_round_trip_and_default():
    data = META.to_dict()
    assert data["head"] == "seed"
    del data["head"]
    assert ModelMeta.from_dict(data).head == "seed"  # files written before the separable head
    separable = ModelMeta.from_dict({**META.to_dict(), "head": "separable", "macs": 123, "params": 45})
    again = ModelMeta.from_dict(json.loads(json.dumps(separable.to_dict())))
    assert again == separable and (again.head, again.macs, again.params) == ("separable", 123, 45)
    assert ModelMeta.from_dict({**META.to_dict(), "macs": 9}) == META  # a counted fact, not part of ==


@pytest.mark.parametrize("field,value,fragment", [
    ("head", "dense", 'head "dense" must be one of seed, separable'),
    ("head", None, "head null must be one of seed, separable"),
    ("macs", -1, "macs -1 must be an integer"),
    ("params", "many", 'params "many" must be an integer'),
])  # fmt: skip
def test_bad_head_or_counts_are_one_line(field, value, fragment):
    with pytest.raises(EdgesegError) as info:
        meta_from_dict({**META.to_dict(), field: value}, "m.pt", "write it again")
    text = str(info.value)
    assert "\n" not in text and text.startswith("m.pt: model metadata ") and fragment in text, text


def test_separable_checkpoint_round_trip(tmp_path):
    model = build_model(C, head="separable").eval()
    meta = replace(META, head="separable")
    loaded, loaded_meta = load_model(save_checkpoint(checkpoint_dict(model, meta), tmp_path / "s.pt"))
    assert loaded_meta.head == "separable" and loaded.head == "separable"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("weights,recorded", [("separable", "seed"), ("seed", "separable")])
def test_weights_of_the_other_head_are_one_line(tmp_path, weights, recorded):
    meta = replace(META, head=recorded)
    path = save_checkpoint(checkpoint_dict(build_model(C, head=weights), meta), tmp_path / "m.pt")
    with pytest.raises(EdgesegError) as info:
        load_model(path)
    text = str(info.value)
    assert "\n" not in text and f"the weights are a {weights} head's but its metadata says head {recorded}" in text


def test_unknown_head_at_the_cli(camvid, tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", out, "--head", "dense", "--workers", "0")
    assert_one_line_error(done, "--head dense: choose one of seed, separable")
    assert not out.exists()
    path = tmp_path / "m.pt"
    torch.save({**checkpoint_dict(build_model(C), META), "meta": {**META.to_dict(), "head": "dense"}}, path)
    assert_one_line_error(run_cli("eval", path, "--data", f"camvid:{camvid}"), "m.pt", 'head "dense"')


# --- a trained separable model through train, export (FP32 + INT8, parity), eval, run and bench ---------------------
@pytest.fixture(scope="module")
def trained(camvid, tmp_path_factory):
    out = tmp_path_factory.mktemp("separable") / "run"
    config = TrainConfig(data=f"camvid:{camvid}", out=str(out), img_size=(96, 128), epochs=1, batch_size=2, lr=0.01,
                         warmup_epochs=0.1, workers=0, train_limit=4, val_limit=2, class_weights="none", head="separable")  # fmt: skip
    return train(config)


@pytest.fixture(scope="module")
def exported(trained, camvid, tmp_path_factory):
    folder = tmp_path_factory.mktemp("separable_export")
    manifest = make_calibration_manifest(f"camvid:{camvid}", "train", 32, folder / "calib" / "camvid-32")
    return export_onnx(trained, folder / "out", data=f"camvid:{camvid}", num_verify=3, fidelity_images=3,
                       verify_images=2, precisions=("fp32", "int8"), calib=str(manifest.parent), calib_images=8)  # fmt: skip


def test_training_records_the_head(trained, camvid, tmp_path):
    model, meta = load_model(trained)
    assert meta.head == "separable" and isinstance(model.aspp.branch3, SeparableConv)
    assert meta.provenance["recipe"]["head"] == "separable"
    out = tmp_path / "resumed"
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", out, "--resume", trained.parent / "last.pt",
                   "--head", "seed", "--workers", "0")  # fmt: skip
    assert_one_line_error(done, "--resume", "the run trained head separable, not --head seed")
    assert not out.exists()


def test_export_records_macs_and_passes_parity(exported, trained):
    model, _ = load_model(trained)
    counted = measure(model, (96, 128))
    manifest = json.loads((exported.onnx_path.parent / "export.json").read_text())
    assert exported.parity["passed"] is True and manifest["parity_passed"] is True
    assert (manifest["complexity"]["macs"], manifest["complexity"]["params"]) == (counted.macs, counted.params)
    assert manifest["complexity"]["head"] == "separable" and manifest["complexity"]["head_macs"] == counted.head_macs
    for key in ("fp32", "int8_qdq", "int8"):
        meta, _ = read_meta(exported.files[key])
        assert (meta.head, meta.macs, meta.params) == ("separable", counted.macs, counted.params), key
    groups = {a.i for n in onnx.load(str(exported.onnx_path)).graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"}  # fmt: skip
    assert {304, 320} <= groups  # the decoder's and the ASPP's depthwise convolutions are in the graph


def test_int8_model_evals_and_runs(exported, camvid, camvid_clip, tmp_path):
    int8 = exported.files["int8"]
    done = run_cli("eval", int8, "--data", f"camvid:{camvid}", "--limit", "2", "--json", tmp_path / "eval.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["num_images"] == 2
    done = run_cli("run", int8, "--source", camvid_clip, "--out", tmp_path / "frames", "--no-show", "--max-frames", "3",
                   "--json", tmp_path / "run.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run.json").read_text())["processed"] == 3
    fidelity = json.loads((exported.onnx_path.parent / "fidelity.json").read_text())
    assert [m["model"] for m in fidelity["models"]] == ["model.fp32.onnx", "model.int8.qdq.onnx", "model.int8.qdq.fp16.onnx", "model.int8.onnx"]


def test_bench_shows_gmacs_from_the_model_file(exported, trained):
    models = [exported.onnx_path, exported.files["int8"], trained]
    rows = benchmark_models(models, BenchOptions(iters=2, warmup=0, threads=1))
    gmacs = read_meta(exported.onnx_path)[0].macs / 1e9
    assert [r.gmacs for r in rows] == [gmacs, gmacs, None]  # the checkpoint's metadata has no count
    table = format_table(rows)
    assert "GMACs" in table.splitlines()[0] and f"{gmacs:.2f}" in table.splitlines()[2]
    assert read_checkpoint(trained)["meta"]["macs"] is None
