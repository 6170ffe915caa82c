"""Real short training runs on CamVid crops: loss goes down, resume is exact, DDP keeps ranks equal."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from edgeseg.model.checkpoint import load_model, read_checkpoint
from edgeseg.train.trainer import TrainConfig, train


def _config(camvid, out, **overrides) -> TrainConfig:
    options = dict(
        data=f"camvid:{camvid}", out=str(out), img_size=(96, 128), crop_size=(96, 128), epochs=3, batch_size=2,
        lr=0.01, warmup_epochs=0.1, workers=0, train_limit=20, val_limit=3, class_weights="none", seed=3,
    )  # fmt: skip
    options.update(overrides)
    return TrainConfig(**options)


def _log(out):
    with open(out / "log.csv") as handle:
        return list(csv.DictReader(handle))


def test_thirty_iterations_lower_the_loss(camvid, tmp_path):
    best = train(_config(camvid, tmp_path / "run"))  # 3 epochs x 10 iterations
    rows = _log(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[2] < losses[1] < losses[0] and losses[2] < 0.95 * losses[0], losses
    model, meta = load_model(best)
    assert meta.classes[0] == "Sky" and meta.ignore_index == 11 and meta.input_size == (96, 128)
    provenance = meta.provenance
    assert provenance["epochs"] >= 1 and len(provenance["dataset_fingerprint"]) == 64
    assert 0.0 <= provenance["best_val_miou"] <= 1.0
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_resume_continues_exactly(camvid, tmp_path):
    small = dict(epochs=2, train_limit=6, val_limit=1, crop_size=(64, 64), img_size=(64, 64))
    train(_config(camvid, tmp_path / "straight", **small))
    train(_config(camvid, tmp_path / "split", stop_after=1, **small))
    assert [int(r["epoch"]) for r in _log(tmp_path / "split")] == [1]
    train(_config(camvid, tmp_path / "split", resume=str(tmp_path / "split" / "last.pt"), **small))

    straight = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = read_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [r["train_loss"] for r in _log(tmp_path / "straight")] == [r["train_loss"] for r in _log(tmp_path / "split")]


DDP_WORKER = """
import hashlib, sys, torch
from edgeseg.train.trainer import Distributed, Trainer, TrainConfig
config = TrainConfig(data=sys.argv[1], out=sys.argv[2], img_size=(64, 64), crop_size=(64, 64), epochs=2,
                     batch_size=4, lr=0.01, workers=0, train_limit=8, val_limit=1, class_weights="none", seed=1)
ddp = Distributed.from_env("cpu")
trainer = Trainer(config, ddp)
trainer.run()
digest = hashlib.sha256()
for key, value in trainer.model.module.state_dict().items():
    digest.update(key.encode()); digest.update(value.detach().contiguous().numpy().tobytes())
open(f"{sys.argv[2]}/rank{ddp.rank}.sha256", "w").write(digest.hexdigest())
ddp.close()
"""


@pytest.mark.slow
def test_two_process_gloo_ddp_trains_and_ranks_agree(camvid, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(script), f"camvid:{camvid}", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "rank0.sha256").read_text() == (out / "rank1.sha256").read_text()
    assert [int(r["epoch"]) for r in _log(out)] == [1, 2]
    assert (out / "best.pt").exists()


# --- the recipe's options ---------------------------------------------------------------
RECIPE = dict(
    train_split="train-heldout", val_split="heldout", class_weights="log", scale_range=(0.75, 1.25),
    color_jitter=0.5, ema=0.9, label_smoothing=0.1, ohem=True,
)  # fmt: skip


def test_recipe_options_train_and_are_recorded(camvid, tmp_path):
    small = dict(epochs=1, train_limit=4, val_limit=1, crop_size=(64, 64), img_size=(64, 64), **RECIPE)
    best = train(_config(camvid, tmp_path / "run", **small))
    provenance = read_checkpoint(best)["meta"]["provenance"]
    recipe = provenance["recipe"]
    assert {k: recipe[k] for k in RECIPE} == {**RECIPE, "scale_range": [0.75, 1.25]}
    assert (provenance["train_split"], provenance["val_split"], provenance["weights"]) == ("train-heldout", "heldout", "ema")
    assert provenance["train_images"] == 4
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    raw, ema = last["model"], last["train_state"]["ema"]["model"]
    assert last["train_state"]["ema"]["updates"] == 2  # 4 images, batch 2
    weights = [k for k in raw if raw[k].is_floating_point() and "running" not in k]
    assert any(not torch.equal(raw[k], ema[k]) for k in weights)  # the average lags the trained weights
    buffers = [k for k in raw if "running_mean" in k]
    assert buffers and all(torch.equal(raw[k], ema[k]) for k in buffers)  # BatchNorm statistics are copied
    saved = read_checkpoint(best)["model"]
    assert all(torch.equal(saved[k], ema[k].half()) for k in weights)  # best.pt holds the validated EMA weights


def test_resume_with_ema_continues_exactly(camvid, tmp_path):
    small = dict(epochs=2, train_limit=4, val_limit=1, crop_size=(64, 64), img_size=(64, 64), **RECIPE)
    train(_config(camvid, tmp_path / "straight", **small))
    train(_config(camvid, tmp_path / "split", stop_after=1, **small))
    train(_config(camvid, tmp_path / "split", resume=str(tmp_path / "split" / "last.pt"), **small))
    straight, resumed = (read_checkpoint(tmp_path / run / "last.pt") for run in ("straight", "split"))
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    ema_a, ema_b = straight["train_state"]["ema"], resumed["train_state"]["ema"]
    assert ema_a["updates"] == ema_b["updates"] == 4
    for key in ema_a["model"]:
        assert torch.equal(ema_a["model"][key], ema_b["model"][key]), key


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--class-weights", "inverse"], "--class-weights inverse: choose one of none, median-freq, sqrt-median-freq, log"),
        (["--scale-range", "2", "1"], "--scale-range 2 1: give MIN MAX with 0 < MIN <= MAX"),
        (["--scale-range", "0", "1"], "--scale-range 0 1:"),
        (["--color-jitter", "-1"], "--color-jitter"),
        (["--ema", "1"], "--ema 1: give a decay in (0, 1)"),
        (["--label-smoothing", "1.5"], "--label-smoothing 1.5: give a value in [0, 1)"),
        (["--loss", "focal", "--ohem"], "--loss focal: --label-smoothing and --ohem shape cross-entropy"),
        (["--train-split", "heldout", "--val-split", "heldout"], "--val-split heldout: is also --train-split"),
        (["--val-split", "test"], "no folder"),
    ],
)  # fmt: skip
def test_bad_recipe_is_one_line(camvid, tmp_path, args, expected):
    from conftest import assert_one_line_error, run_cli

    out = tmp_path / "run"
    done = run_cli("train", "--data", f"camvid:{camvid}", "--out", out, "--workers", "0", *args)
    assert_one_line_error(done, expected)
    assert not out.exists()


def test_ohem_keeps_the_hard_pixels():
    from edgeseg.model.losses import make_loss, ohem_cross_entropy

    target = torch.zeros(1, 4, 8, dtype=torch.long)
    logits = torch.zeros(1, 2, 4, 8)
    logits[:, 0] = 5.0  # every pixel confidently right (p ~ 0.99) ...
    logits[0, 0, 0, :2] = -5.0  # ... but two, confidently wrong
    hard = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0, 0, :2].mean()
    assert torch.isclose(ohem_cross_entropy(logits, target, 255), hard)  # at least 1/16 of 32 = 2 pixels kept
    everything = torch.nn.functional.cross_entropy(logits, target)
    assert ohem_cross_entropy(logits, target, 255, threshold=1.01).item() == pytest.approx(everything.item())
    target[0, 0, :2] = 255  # the hard pixels ignored: the hardest 2 of the rest remain
    assert make_loss("ce", 255, ohem=True)(logits, target) < 0.01


def test_label_smoothing_raises_the_loss_of_a_confident_prediction():
    from edgeseg.model.losses import make_loss

    target = torch.randint(0, 3, (1, 6, 6))
    confident = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    plain, smoothed = make_loss("ce", 255)(confident, target), make_loss("ce", 255, label_smoothing=0.1)(confident, target)
    assert plain < 1e-6 < smoothed
    with pytest.raises(ValueError):
        make_loss("focal", 255, label_smoothing=0.1)
