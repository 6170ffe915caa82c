"""``edgeseg train``: single process, or many under ``torchrun`` (DistributedDataParallel).

Every random choice of an epoch derives from (seed, epoch, sample index): the sample
order from DistributedSampler's seeded permutation, the augmentation from a generator
seeded per sample. So ``--resume`` continues exactly, with any number of loader workers.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgeseg import __version__
from edgeseg.model.checkpoint import checkpoint_dict, read_checkpoint, save_checkpoint
from edgeseg.data import SegmentationData, resolve_dataset, train_augment
from edgeseg.data.dataset import CLASS_WEIGHTINGS
from edgeseg.data.layouts import check_train_val_splits, fingerprint
from edgeseg.data.transforms import MAX_JITTER
from edgeseg.core.errors import EdgesegError
from edgeseg.evaluate.scoring import evaluate
from edgeseg.core.fileio import atomic_path, prepare_output_dir
from edgeseg.model.losses import LOSSES, make_loss
from edgeseg.core.meta import HEADS, Preprocess, ModelMeta
from edgeseg.model.network import DeepLabV3Plus, build_model, load_backbone
from edgeseg.runtime import Segmenter
from edgeseg.model.torch_backend import TorchBackend

OPTIMIZERS = ("sgd", "adamw")
CLASS_WEIGHTS = CLASS_WEIGHTINGS
MAX_SCALE = 4.0  # --scale-range upper bound: beyond it a 360x480 frame outgrows any sensible crop
RECIPE_FIELDS = (
    "train_split", "val_split", "img_size", "crop_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
    "warmup_epochs", "output_stride", "loss", "class_weights", "scale_range", "color_jitter", "ema",
    "label_smoothing", "ohem", "amp", "seed", "head",
)  # fmt: skip
LOG_FIELDS = ("epoch", "train_loss", "val_miou", "val_pixel_accuracy", "lr", "seconds", "images_per_second")


@dataclass
class TrainConfig:
    data: str
    out: str
    img_size: tuple[int, int] = (360, 480)
    crop_size: tuple[int, int] | None = None  # training crop; defaults to img_size
    epochs: int = 100
    batch_size: int = 8
    lr: float | None = None  # None: 0.01 for SGD, 5e-4 for AdamW
    optimizer: str = "sgd"
    weight_decay: float | None = None  # None: 1e-4 for SGD, 1e-2 for AdamW
    warmup_epochs: float = 1.0
    output_stride: int = 16
    head: str = "seed"  # "separable": depthwise separable ASPP and decoder (edgeseg.model.network)
    loss: str = "ce"
    class_weights: str = "median-freq"
    train_split: str = "train"
    val_split: str = "val"
    scale_range: tuple[float, float] = (0.5, 2.0)  # random scale of each training image
    color_jitter: float = 1.0  # strength of brightness/contrast/saturation/hue jitter; 0 turns it off
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 turns it off
    label_smoothing: float = 0.0
    ohem: bool = False  # online hard example mining in the cross-entropy
    device: str = "cpu"
    amp: bool = False
    workers: int = 2
    resume: str | None = None
    init: str | None = None
    seed: int = 0
    val_every: int = 1
    train_limit: int | None = None  # first N training images (smoke runs and tests)
    val_limit: int | None = None
    stop_after: int | None = None  # end this invocation after that epoch; --resume continues the schedule
    exist_ok: bool = False
    command: str = field(default_factory=lambda: shlex.join(["edgeseg", *sys.argv[1:]]))

    def __post_init__(self) -> None:
        self.img_size = tuple(self.img_size)
        self.crop_size = tuple(self.crop_size) if self.crop_size else None
        self.scale_range = tuple(float(v) for v in self.scale_range)
        _check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("--loss", self.loss, LOSSES)
        _check_choice("--class-weights", self.class_weights, CLASS_WEIGHTS)
        _check_choice("--output-stride", self.output_stride, (8, 16))
        _check_choice("--head", self.head, HEADS)
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value < 1:
                raise EdgesegError(f"{flag} {value}: must be at least 1")
        if any(v < 32 or v % 8 for v in self.img_size):
            raise EdgesegError(f"--img-size {self.img_size[0]} {self.img_size[1]}: use multiples of 8, at least 32")
        if self.amp and not self.device.startswith("cuda"):
            raise EdgesegError("--amp: mixed precision needs --device cuda; drop --amp on the CPU")
        self._check_recipe()

    def _check_recipe(self) -> None:
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[-1] <= MAX_SCALE:
            raise EdgesegError(
                f"--scale-range {' '.join(f'{v:g}' for v in self.scale_range)}: give MIN MAX with "
                f"0 < MIN <= MAX <= {MAX_SCALE:g}, e.g. 0.5 2.0"
            )
        if not 0 <= self.color_jitter <= MAX_JITTER:
            raise EdgesegError(f"--color-jitter {self.color_jitter:g}: give a strength from 0 (off) to {MAX_JITTER:g}")
        if not 0 <= self.ema < 1:
            raise EdgesegError(f"--ema {self.ema:g}: give a decay in (0, 1), e.g. 0.999, or 0 to turn EMA off")
        if not 0 <= self.label_smoothing < 1:
            raise EdgesegError(f"--label-smoothing {self.label_smoothing:g}: give a value in [0, 1), e.g. 0.1")
        if self.loss == "focal" and (self.label_smoothing or self.ohem):
            raise EdgesegError("--loss focal: --label-smoothing and --ohem shape cross-entropy; use --loss ce or ce+dice")
        if self.train_split == self.val_split:
            raise EdgesegError(
                f"--val-split {self.val_split}: is also --train-split; validate on a split the model does not train on"
            )

    def recipe(self) -> dict[str, Any]:
        """What decides the trained weights (not where files go): recorded in the checkpoint's metadata."""
        config = asdict(self)
        return {key: list(config[key]) if isinstance(config[key], tuple) else config[key] for key in RECIPE_FIELDS}


def _check_choice(flag: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise EdgesegError(f"{flag} {value}: choose one of {', '.join(map(str, choices))}")


class AugmentedSplit(Dataset):
    """Training samples as tensors; augmentation seeded by (seed, epoch, index)."""

    def __init__(
        self,
        data: SegmentationData,
        crop_hw: tuple[int, int],
        preprocess: Preprocess,
        seed: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        jitter: float = 1.0,
    ) -> None:
        self.data, self.crop_hw, self.seed, self.epoch = data, crop_hw, seed, 0
        self.scale_range, self.jitter = scale_range, jitter
        std = np.asarray(preprocess.std, np.float32)
        self.gain = (preprocess.scale / std).reshape(3, 1, 1).astype(np.float32)
        self.offset = (-np.asarray(preprocess.mean, np.float32) / std).reshape(3, 1, 1).astype(np.float32)
        self.bgr = preprocess.channel_order == "BGR"

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, label = self.data.read(index)
        image, label = train_augment(
            image, label, self.crop_hw, rng, self.data.spec.ignore_index, self.scale_range, jitter=self.jitter
        )
        if self.bgr:
            image = image[:, :, ::-1]
        chw = image.transpose(2, 0, 1).astype(np.float32) * self.gain + self.offset
        return torch.from_numpy(np.ascontiguousarray(chw)), torch.from_numpy(label.astype(np.int64))


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics (each rank's last forward updated its own)."""
        if self.world_size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig) -> Path:
    """Train and return the path of ``best.pt``."""
    ddp = Distributed.from_env(config.device)
    created = _missing_folders(Path(config.out)) if ddp.is_main else []
    try:
        return Trainer(config, ddp).run()
    except BaseException:
        for folder in created:  # a failed run leaves no empty --out (nor parents) it made; a saved epoch stays
            _rmdir_if_empty(folder)
        raise
    finally:
        ddp.close()


class Trainer:
    def __init__(self, config: TrainConfig, ddp: Distributed) -> None:
        self.config, self.ddp = config, ddp
        self.out = Path(config.out)
        self.spec = resolve_dataset(config.data)  # the data and its splits are checked before --out is touched
        self.split_note = check_train_val_splits(self.spec, config.train_split, config.val_split)
        resume_state = self._read_resume()
        if ddp.is_main:
            prepare_output_dir(self.out, config.exist_ok or resume_state is not None, "--out")
        self.device = self._device()
        torch.manual_seed(config.seed)
        self.train_data = _limited(SegmentationData(self.spec, config.train_split), config.train_limit)
        self.val_data = (
            _limited(SegmentationData(self.spec, config.val_split), config.val_limit) if ddp.is_main else None
        )
        self.meta = self._meta()
        self.model = self._model()
        self.ema = WeightAverage(_unwrap(self.model), config.ema) if config.ema else None
        self.loader = self._loader()
        self.iters_per_epoch = len(self.loader)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.loss_fn = make_loss(
            config.loss, self.spec.ignore_index, self._class_weights(), config.label_smoothing, config.ohem
        )
        self.start_epoch, self.best_miou, self.history = 1, -1.0, []
        if resume_state is not None:
            self._restore(resume_state)

    # --- set-up -----------------------------------------------------------------
    def _device(self) -> torch.device:
        device = self.config.device
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EdgesegError(f"--device {device}: PyTorch sees no CUDA GPU here; use --device cpu")
            if self.ddp.world_size > 1:
                device = f"cuda:{self.ddp.local_rank}"
                torch.cuda.set_device(device)
        elif device != "cpu":
            raise EdgesegError(f"--device {device}: choose cpu or cuda (cuda:N)")
        return torch.device(device)

    def _meta(self) -> ModelMeta:
        return ModelMeta(
            num_classes=self.spec.num_classes,
            classes=tuple(self.spec.classes),
            palette=tuple(self.spec.palette),
            ignore_index=self.spec.ignore_index,
            input_size=self.config.img_size,
            output_stride=self.config.output_stride,
            head=self.config.head,
            preprocess=Preprocess(),
        )

    def _model(self) -> torch.nn.Module:
        model = build_model(self.spec.num_classes, self.config.output_stride, head=self.config.head)
        if self.config.init:
            _init_from(model, self.config.init)
        model.to(self.device)
        if self.ddp.world_size > 1:
            # SyncBatchNorm runs on GPUs only; on CPU (gloo) DDP broadcasts rank 0's BN buffers instead.
            if self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def _loader(self) -> DataLoader:
        crop = self.config.crop_size or self.config.img_size
        cfg = self.config
        self.train_set = AugmentedSplit(
            self.train_data, crop, self.meta.preprocess, cfg.seed, cfg.scale_range, cfg.color_jitter
        )
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=self.ddp.world_size, rank=self.ddp.rank, shuffle=True, seed=self.config.seed
        )
        per_rank = max(1, self.config.batch_size // self.ddp.world_size)
        return DataLoader(
            self.train_set,
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            drop_last=False,
        )

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            lr, wd = cfg.lr or 0.01, 1e-4 if cfg.weight_decay is None else cfg.weight_decay
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
        lr, wd = cfg.lr or 5e-4, 1e-2 if cfg.weight_decay is None else cfg.weight_decay
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then poly decay (power 0.9) to zero at the last iteration."""
        total = self.config.epochs * self.iters_per_epoch
        warmup = min(int(self.config.warmup_epochs * self.iters_per_epoch), total // 2)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - progress) ** 0.9

    def _class_weights(self) -> torch.Tensor | None:
        weights = self.train_data.class_weights(self.config.class_weights)
        return None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def _read_resume(self) -> dict[str, Any] | None:
        if not self.config.resume:
            return None
        data = read_checkpoint(self.config.resume)
        if "train_state" not in data:
            raise EdgesegError(
                f"--resume {self.config.resume}: holds no training state; resume from the run's last.pt "
                "(use --init to start a new run from these weights)"
            )
        meta = data.get("meta")
        head = meta.get("head", "seed") if isinstance(meta, dict) else "seed"
        if head != self.config.head:
            raise EdgesegError(
                f"--resume {self.config.resume}: the run trained head {head}, not --head {self.config.head}; "
                f"resume with --head {head} (or start a new run)"
            )
        return data

    def _restore(self, data: dict[str, Any]) -> None:
        state = data["train_state"]
        _unwrap(self.model).load_state_dict(data["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_miou = float(state["best_miou"])
        self.history = list(state["history"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise EdgesegError(
                    f"--resume {self.config.resume}: the run had no --ema; resume it without --ema (or start a new run)"
                )
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])

    # --- loop -------------------------------------------------------------------
    def run(self) -> Path:
        if self.split_note and self.ddp.is_main:  # once set-up has passed, so that an error stays one line
            print(self.split_note, file=sys.stderr, flush=True)
        if self.start_epoch > self.config.epochs and self.ddp.is_main:
            print(f"nothing to do: {self.config.resume} already finished epoch {self.start_epoch - 1} of {self.config.epochs}")
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            started = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - started, 2),
            }
            row["images_per_second"] = round(len(self.train_data) / row["seconds"], 3)
            self._end_epoch(epoch, row)
            if self.config.stop_after is not None and epoch >= self.config.stop_after:
                break
        return self.out / "best.pt"

    def _train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.sampler.set_epoch(epoch)
        self.train_set.epoch = epoch
        total, count = 0.0, 0
        with _progress(self.ddp.is_main, f"epoch {epoch}/{self.config.epochs}", self.iters_per_epoch) as bar:
            for images, labels in self.loader:
                loss = self._step(images, labels)
                total, count = total + loss, count + 1
                bar.advance(loss=total / count, lr=self.optimizer.param_groups[0]["lr"])
        return _mean_across_ranks(total / max(count, 1), self.ddp, self.device)

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.config.amp):
            logits = self.model(images)
            loss = self.loss_fn(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(_unwrap(self.model))
        return float(loss.detach())

    def _end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.ddp.broadcast_buffers(self.model)
        if self.ddp.is_main:
            validate = epoch % self.config.val_every == 0 or epoch == self.config.epochs
            if validate:
                result = self._validate()
                row["val_miou"] = round(float(result.metrics.miou), 5)
                row["val_pixel_accuracy"] = round(float(result.metrics.pixel_accuracy), 5)
            self.history.append(row)
            improved = validate and row["val_miou"] > self.best_miou
            if improved:
                self.best_miou = row["val_miou"]
                best = self.model if self.ema is None else self.ema.model  # the weights that were validated
                save_checkpoint(checkpoint_dict(best, self._final_meta(epoch), half=True), self.out / "best.pt")
            save_checkpoint(checkpoint_dict(self.model, self._final_meta(epoch), self._train_state(epoch)), self.out / "last.pt")
            _write_log(self.history, self.out)
            print(_epoch_line(row, improved), flush=True)
        self.ddp.barrier()

    def _validate(self):
        """Scores the EMA weights when --ema is on, else the model's own."""
        model = _unwrap(self.model) if self.ema is None else self.ema.model
        model.eval()
        segmenter = Segmenter(TorchBackend(model, self.meta, str(self.device)))
        result = evaluate(segmenter, self.val_data)
        _unwrap(self.model).train()
        return result

    def _final_meta(self, epoch: int) -> ModelMeta:
        provenance = {
            "edgeseg_version": __version__,
            "torch_version": str(torch.__version__),
            "command": self.config.command,
            "dataset": self.spec.name,
            "dataset_fingerprint": fingerprint(self.spec, self.config.train_split),
            "train_split": self.config.train_split,
            "val_split": self.config.val_split,
            "train_images": len(self.train_data),
            "epochs": epoch,
            "best_val_miou": self.best_miou,
            "recipe": self.config.recipe(),
            "weights": "ema" if self.ema is not None else "model",
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return replace(self.meta, provenance=provenance)

    def _train_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_miou": self.best_miou,
            "history": self.history,
            "ema": None if self.ema is None else self.ema.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
        }


class WeightAverage:
    """Exponential moving average of a model's weights, for validation and best.pt; BatchNorm buffers are copied.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's ExponentialMovingAverage
    with num_updates), so the first averages are not held back by the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        source = dict(model.named_parameters())
        for name, average in self.model.named_parameters():
            average.lerp_(source[name].detach(), 1.0 - decay)
        buffers = dict(model.named_buffers())
        for name, buffer in self.model.named_buffers():
            buffer.copy_(buffers[name])

    def state_dict(self) -> dict[str, Any]:
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {"model": state, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def _init_from(model: DeepLabV3Plus, path: str) -> None:
    """--init: weights only, from a full edgeseg/seed checkpoint or an ImageNet MobileNetV2 backbone."""
    data = read_checkpoint(path)
    state = data["model"] if "model" in data and isinstance(data["model"], dict) else data
    state = state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state
    own = model.state_dict()
    full = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(full) > len(own) // 2:
        own.update({k: v.float() if v.is_floating_point() else v for k, v in full.items()})
        model.load_state_dict(own)
        return
    if load_backbone(model, state) == 0:
        raise EdgesegError(
            f"--init {path}: no tensor matches this model or a MobileNetV2 backbone (features.N...); "
            "pass an edgeseg/seed checkpoint or an ImageNet MobileNetV2 state_dict"
        )


def _missing_folders(out: Path) -> list[Path]:
    """``out`` and the folders above it that do not exist yet, deepest first."""
    out = out.absolute()
    return [p for p in (out, *out.parents) if not p.exists()]


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _limited(data: SegmentationData, limit: int | None) -> SegmentationData:
    if limit is not None:
        data.pairs = data.pairs[:limit]
    return data


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _mean_across_ranks(value: float, ddp: Distributed, device: torch.device) -> float:
    if ddp.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ddp.world_size


def _write_log(history: list[dict[str, Any]], out: Path) -> None:
    from edgeseg.evaluate.plots import save_training_curves

    with atomic_path(out / "log.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    save_training_curves(history, out / "curves.png")


def _epoch_line(row: dict[str, Any], improved: bool) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}", f"lr {row['lr']:.2e}"]
    if "val_miou" in row:
        parts.append(f"val mIoU {100 * row['val_miou']:.2f}%" + (" (best)" if improved else ""))
    parts.append(f"{row['images_per_second']:.2f} img/s")
    return " | ".join(parts)


class _progress:
    """A rich progress bar (loss, lr, it/s, ETA) on the main rank; silent elsewhere."""

    def __init__(self, enabled: bool, title: str, total: int) -> None:
        # Logs and CI get the one line per epoch only; a bar needs a terminal.
        self.enabled, self.title, self.total = enabled and sys.stdout.isatty(), title, total

    def __enter__(self) -> "_progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e} {task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, loss=math.nan, lr=0.0, rate="")
            self._started = time.perf_counter()
            self._done = 0
        return self

    def advance(self, loss: float, lr: float) -> None:
        if self.enabled:
            self._done += 1
            rate = self._done / max(time.perf_counter() - self._started, 1e-9)
            self._bar.update(self._task, advance=1, loss=loss, lr=lr, rate=f"{rate:.2f} it/s")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()
