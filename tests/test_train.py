"""Real short training runs on CamVid crops: loss goes down, resume is exact, DDP keeps ranks equal."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from edgeseg.checkpoint import load_model, read_checkpoint
from edgeseg.train import TrainConfig, train


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
from edgeseg.train import Distributed, Trainer, TrainConfig
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
