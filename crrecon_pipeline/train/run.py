"""A training run's state and its setup: what `setup_run` builds before the first batch (the split, the device
data, the model, optimizer, schedule and loss) and what the epochs update (the history, the best loss). `Run.state`
is exactly what a checkpoint holds, so a killed run resumes bit for bit (restore.py reads it back)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.data.symmetry import Augmentation
from crrecon_pipeline.errors import ConfigError, DataError
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.models import count_parameters
from crrecon_pipeline.train import checkpoints, distributed, freeze, step, trainlog
from crrecon_pipeline.train.batches import DeviceData
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.records import EpochRecord, ResumeChange
from crrecon_pipeline.train.schedule import Schedule
from crrecon_pipeline.train.setup import build_model
from crrecon_pipeline.train.split import all_rows_train, oversampled, split_rows


@dataclass
class Run:
    """The parts of a run (read as typed attributes by the step, the sample views and the recipe's stages) and
    the few numbers the epochs change."""

    config: RunConfig
    run_dir: Path
    dev: torch.device
    ranks: distributed.DistContext
    prepared: Prepared
    data: DeviceData
    train_idx: torch.Tensor  # (N_train,) sample indices on the device: originals and their symmetry images
    val_idx: torch.Tensor  # (N_val,) original rows only
    model: torch.nn.Module  # the plain module: checkpoints and evaluation
    net: torch.nn.Module  # what the step runs: the model, or DDP / torch.compile around it
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    shuffler: torch.Generator
    mean_spectrum: torch.Tensor  # (2, 2, L): the baseline predictor
    train_targets: torch.Tensor  # (N_train_rows, 2, 2, L): what a unit-free loss calibrates on (build_loss)
    steps_per_epoch: int
    use_bf16: bool
    frozen: dict  # trainable_params / frozen_params / frozen_groups (freeze.apply_freeze)
    start_epoch: int = 1
    best_val: float = float("inf")
    history: list[EpochRecord] = field(default_factory=list)
    init_from: str | None = None  # the checkpoint whose weights started the run
    init_skipped: list[str] = field(default_factory=list)
    resume_changes: list[ResumeChange] = field(default_factory=list)  # every resume's, oldest first
    stopped_at: int | None = None  # the last epoch run when early stopping ended the run
    compare_from: int = 0  # epochs up to this one had other loss weights: best / early stopping ignore them
    shuffler_before: torch.Tensor | None = None  # the shuffler's state before this epoch's order was drawn
    partial: dict | None = None  # a checkpoint stopped mid-epoch: where, and the epoch's sums so far (loop.py)
    stopped: str | None = None  # a stop after the epoch (crrecon control): the stop record's line

    @property
    def epochs(self) -> int:
        return self.config.training.epochs

    @property
    def batch_size(self) -> int:
        return self.config.data.batch_size

    @property
    def pm1(self) -> bool:
        return self.config.data.map_to_pm1

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    @property
    def log_file(self) -> Path:
        """output.log_file inside the run folder (config.py refuses absolute paths and '..', this a symlink out)."""
        return trainlog.confined_path(self.run_dir, self.config.output.log_file, "output.log_file")

    @property
    def output_dir(self) -> Path:
        """output.dir inside the run folder: figures and sample predictions."""
        return trainlog.confined_path(self.run_dir, self.config.output.dir, "output.dir")

    def state(self, epoch: int, partial: dict | None = None) -> dict:
        """The checkpoint after `epoch`: plain containers and tensors only (loaded with weights_only). Stopped
        mid-epoch (`partial`: epoch `epoch + 1`'s batches done and sums), it holds the shuffler's state from before
        that epoch's order was drawn, so the resume draws the same order and skips what was trained."""
        shuffler = self.shuffler_before if partial is not None else self.shuffler.get_state()
        state = {"format": checkpoints.CHECKPOINT_FORMAT, "config": self.config.to_dict(), "epoch": epoch,
                 "best_val": self.best_val, "history": [h.model_dump() for h in self.history],
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "schedule": vars(self.schedule).copy(),
                 "shuffler": shuffler, "torch_rng": torch.get_rng_state(),
                 "n_params": count_parameters(self.model), "training_set": self.prepared.training_set(),
                 "compare_from": self.compare_from, "resume_changes": [c.model_dump() for c in self.resume_changes]}
        loss_state = self.loss_fn.state_dict()  # e.g. adaptive_spectral's running averages: part of what trains
        if loss_state:
            state["loss_state"] = loss_state
        if partial is not None:
            state["partial"] = partial
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state


def _shard_of_row(prepared: Prepared) -> np.ndarray:
    """The shard index of every row: the versions in the order they were concatenated."""
    shard_of_row = np.repeat(list(prepared.versions), [v.rows for v in prepared.versions.values()])
    if len(shard_of_row) != len(prepared):
        raise DataError("data.oversample / data.train_all: the prepared data do not say which shard each row "
                        "comes from")
    return shard_of_row


def _split(config: RunConfig, prepared: Prepared, data: DeviceData, world: int) -> tuple[torch.Tensor, np.ndarray,
                                                                                         np.ndarray]:
    """(training sample indices on the device, training rows, validation rows): split by structure hash first,
    then the training rows' symmetry images; a tail too short to share among the ranks is dropped."""
    d = config.data
    train_rows, val_rows = split_rows(prepared.structures.packed, d.train_ratio)
    shard_of_row = _shard_of_row(prepared) if d.oversample or d.train_all else None
    if d.train_all:  # the design loop's new rows: all of them train; validation stays on the other shards' rows
        train_rows, val_rows = all_rows_train(train_rows, val_rows, shard_of_row, d.train_all)
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise DataError(f"dataset of {len(prepared)} rows is too small for train_ratio={d.train_ratio}")
    sampled = oversampled(train_rows, shard_of_row, d.oversample)
    stored = np.concatenate([sampled, sampled + data.m]) if d.augment_180 else sampled
    train_idx = torch.as_tensor(data.samples(stored), device=data.packed.device)
    tail = len(train_idx) % d.batch_size
    if 0 < tail < world:  # every rank must take part in every step
        train_idx = train_idx[: len(train_idx) - tail]
    return train_idx, train_rows, val_rows


def _model(config: RunConfig, train_targets: torch.Tensor, dev: torch.device) -> tuple[torch.nn.Module, dict]:
    """The model on `dev`, its output scale set to the training split's statistics, the frozen groups frozen."""
    model = build_model(config).to(dev)
    # the baseline predicts the training originals' mean spectrum per pixel (the distribution the validation rows
    # come from); every image's target is a permutation of its row's, so the overall std is the originals' too
    model.scale.set_stats(train_targets.mean(0), train_targets.std())
    if dev.type == "cuda" and config.training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = freeze.apply_freeze(model, config.training.freeze)
    if not frozen["trainable_params"]:
        raise ConfigError(f"training.freeze: {', '.join(config.training.freeze)} leaves no parameter of "
                          f"{config.model.name} to train")
    return model, frozen


def build_loss(config: RunConfig, train_targets: torch.Tensor, dev: torch.device,
               carry: torch.nn.Module | None = None) -> torch.nn.Module:
    """The loss of `config` on `dev`; a unit-free loss measures its terms for the mean-spectrum predictor. `carry`:
    the loss it replaces mid-run (crrecon control), whose state (running averages) moves over where it fits."""
    loss_fn = get_loss(config.loss.name, **config.loss.params).to(dev)
    if hasattr(loss_fn, "calibrate"):
        loss_fn.calibrate(train_targets)
    if carry is not None:
        own = loss_fn.state_dict()
        loss_fn.load_state_dict({k: v for k, v in carry.state_dict().items() if k in own and v.shape == own[k].shape},
                                strict=False)
    return loss_fn


def setup_run(config: RunConfig, prepared: Prepared, run_dir: Path, dev: torch.device,
              ranks: distributed.DistContext) -> Run:
    d, t = config.data, config.training
    torch.manual_seed(config.seed)
    if prepared.bayer.shape[-1] != d.out_len:
        raise DataError(f"prepared data has {prepared.bayer.shape[-1]} spectral bins, data.out_len is {d.out_len}")
    data = DeviceData(prepared, dev, with_rotated=d.augment_180,
                      augmentation=Augmentation(shifts=d.augment_shifts, turn90=d.augment_90))
    train_idx, train_rows, val_rows = _split(config, prepared, data, ranks.world)
    train_targets = data.targets[torch.as_tensor(train_rows, device=dev)]
    model, frozen = _model(config, train_targets, dev)
    net = model  # frozen before DDP: it registers only the parameters that require grad
    if ranks.world > 1:  # gradients averaged across ranks; `model` stays the plain module (checkpoints, evaluation)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    net = step.compiled(net, t)
    optimizer = torch.optim.AdamW(freeze.trainable_parameters(model), lr=t.lr, weight_decay=t.weight_decay,
                                  **({"fused": True} if dev.type == "cuda" else {}))
    steps_per_epoch = math.ceil(len(train_idx) / d.batch_size)
    schedule = Schedule.fresh(t.epochs * steps_per_epoch, t.warmup_ratio, t.min_lr_ratio)
    loss_fn = build_loss(config, train_targets, dev)
    return Run(config=config, run_dir=run_dir, dev=dev, ranks=ranks, prepared=prepared, data=data,
               train_idx=train_idx, val_idx=torch.as_tensor(val_rows, device=dev), model=model, net=net,
               loss_fn=loss_fn, optimizer=optimizer, schedule=schedule, scheduler=schedule.scheduler(optimizer),
               shuffler=torch.Generator(device="cpu").manual_seed(config.seed), mean_spectrum=train_targets.mean(0),
               train_targets=train_targets,
               steps_per_epoch=steps_per_epoch, frozen=frozen,
               use_bf16=t.use_amp and dev.type == "cuda" and torch.cuda.is_bf16_supported())
