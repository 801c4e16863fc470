"""The trainer: no Dagster here. A config + a prepared folder -> a run folder with checkpoints, log, metrics, plots.

Run folder (every name from config stays inside it):
    metrics.jsonl        structured records: progress (~10 % of an epoch), one per epoch, the final one (records.py)
    train_log.txt        output.log_file: the seed's line format, for people and old tools
    last.pt best.pt      written atomically every epoch / on improvement; epoch_NNNN.pt every save_every
    metrics.json config.json   final numbers (val_mse, baseline_val_mse, val_pearson, ...) and the config used
    outputs/             output.dir: loss_curves.png, predictions.png, val_predictions.npy

The run is setup -> restore (resume or init weights) -> epochs -> evaluate -> finalize.

Everything the hot loop touches lives on the device: bit-packed structures are indexed a whole batch at a time,
unpacked and mapped to [-1, 1] there; the symmetry images (symmetry.py: half-period shifts, 90-degree turns) are
made there too, from the packed rows, with their permuted targets. A killed run resumes from last.pt exactly
(model, optimizer, scheduler, RNG states and the shuffling generator are all in it).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import checkpoints, distributed, records, trainlog
from .data import Prepared, PrepareSettings, load_prepared, preprocess
from .errors import ConfigError, DataError, TrainingDiverged
from .fieldmetrics import field_metrics
from .losses import get_loss, pearson_per_spectrum
from .models import MODELS, count_parameters, get_model
from .npyio import save_atomic, write_text_atomic
from .paths import default_prepared_dir
from .symmetry import SHIFTS, Augmentation, shift_packed, symmetry_summary, turned_images
from .trainlog import log_line  # noqa: F401 - the seed line format, re-exported for callers

BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # np.packbits is big-endian within a byte
load_checkpoint = checkpoints.load  # the public names callers (inference, tests) use


# ---------------------------------------------------------------------------------------------------- split

def structure_keys(packed: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per structure, equal for all its images under the symmetry group (half-period shifts,
    180- and 90-degree turns: symmetry.py), so every image of a structure shares a split even when one appears
    as its own row, whatever augmentation a run uses: the minimum over the images of a vectorised hash (a linear
    form of the 64-bit words + mixing). A shift only permutes the words, so the four shifted images of a turned
    structure cost one (n, 256) @ (256, 4) product against the shifted weights (<S p, w> = <p, S w>, S = S^-1)."""
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=packed.shape[1] // 8, dtype=np.uint64) | np.uint64(1)
    shifted = np.stack([shift_packed(weights.view(np.uint8), x, y).view(np.uint64) for x, y in SHIFTS], axis=1)
    keys = np.full(len(packed), np.iinfo(np.uint64).max, dtype=np.uint64)
    for turned in turned_images(packed):
        with np.errstate(over="ignore"):
            linear = np.ascontiguousarray(turned).view(np.uint64) @ shifted  # (n, 4), wraps mod 2^64
        np.minimum(keys, _mix(linear).min(axis=1), out=keys)
    return _mix(keys)  # the minimum of 16 hashes sits low: mix it again so the key is uniform for the split


def _mix(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit finalizer (xor-shift-multiply)."""
    x = x.copy()
    with np.errstate(over="ignore"):
        for shift, mult in ((31, 0x9E3779B97F4A7C15), (29, 0xBF58476D1CE4E5B9), (32, 0x94D049BB133111EB)):
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
    return x


def split_rows(packed: np.ndarray, train_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) into the original rows, by structure hash: stable across runs and dataset growth."""
    u = (structure_keys(packed) >> np.uint64(11)).astype(np.float64) / float(2**53)
    val = u >= train_ratio
    return np.nonzero(~val)[0], np.nonzero(val)[0]


# ---------------------------------------------------------------------------------------------------- data on device

class DeviceData:
    """Originals and (optionally) rotated twins stacked on the device: rows [0, M) and [M, 2M). A sample index
    v = row + rows * e names a stored row under symmetry element e (symmetry.Augmentation): the structure is
    shifted packed and its target permuted in the same batched step; e = 0 is the stored row itself."""

    def __init__(self, prepared: Prepared, device: torch.device, with_rotated: bool,
                 augmentation: Augmentation | None = None):
        packed = [prepared.structures.packed]
        targets = [prepared.bayer]
        if with_rotated:
            if prepared.rotated_structures is None:
                raise DataError("prepared data has no rotated set (materialize rotated_bayer / run crrecon preprocess)")
            packed.append(prepared.rotated_structures.packed)
            targets.append(prepared.rotated_bayer)
        self.m = len(prepared)
        self.packed = torch.as_tensor(np.concatenate(packed), device=device)  # (M or 2M, 2048) uint8
        self.targets = torch.as_tensor(np.concatenate(targets), device=device)  # (.., 2, 2, 30) float32
        self.rows = len(self.packed)
        self.augmentation = augmentation or Augmentation(shifts=False, turn90=False)
        self.shifts = BIT_SHIFTS.to(device)

    def samples(self, rows: np.ndarray) -> np.ndarray:
        """Every sample index of the given stored rows under every element of the augmentation."""
        return (np.asarray(rows)[None, :] + self.rows * np.arange(self.augmentation.n_elements)[:, None]).ravel()

    def _split(self, idx: torch.Tensor):
        return idx % self.rows, self.augmentation.decode(idx // self.rows)

    def inputs(self, idx: torch.Tensor, pm1: bool = True) -> torch.Tensor:
        """(B,) sample indices -> (B, 1, 128, 128) float in [-1, 1] (or {0, 1})."""
        rows, (x_shift, y_shift, turn) = self._split(idx)
        packed = self.augmentation.packed(self.packed[rows], x_shift, y_shift)
        bits = (packed.unsqueeze(-1) >> self.shifts) & 1  # (B, 2048, 8)
        x = self.augmentation.images(bits.view(-1, 1, 128, 128), turn).float()
        return x * 2 - 1 if pm1 else x

    def target(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) sample indices -> (B, 2, 2, L) targets, permuted as each sample's element moves the pixels."""
        rows, elements = self._split(idx)
        return self.augmentation.targets(self.targets[rows], *elements)


def unpack_to_inputs(structures: np.ndarray, device: torch.device, pm1: bool = True) -> torch.Tensor:
    """Raw structures (N, [1,] 128, 128) {0,1} or {0,255} -> model inputs on device."""
    x = torch.as_tensor(np.asarray(structures).reshape(-1, 1, 128, 128) != 0, device=device).float()
    return x * 2 - 1 if pm1 else x


# ---------------------------------------------------------------------------------------------------- helpers

def resolve_device(device: str = "auto") -> torch.device:
    """auto | cpu | cuda[:i]; a device this machine does not have is a one-line ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device}: not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise ConfigError(f"--device {device}: no such CUDA GPU on this machine ({count} visible)")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device}: only auto, cpu and cuda[:N] are supported")
    return dev


def build_model(config: dict) -> torch.nn.Module:
    """The registered model with its params; its out_len is data.out_len unless the params name it."""
    name, params = config["model"]["name"], dict(config["model"].get("params", {}))
    if name in MODELS and "out_len" in inspect.signature(MODELS[name]).parameters:
        params.setdefault("out_len", int(config["data"]["out_len"]))
    return get_model(name, **params)


@dataclass
class Schedule:
    """Learning-rate factor per optimizer step: linear warmup from 1e-3 over `warmup` steps, then a half cosine
    to 0 at step `total` (and 0 after it: never climbing back). A resume with another training.epochs continues
    on the schedule a run of the new length has (`extended`): same warmup, the cosine stretched (or shrunk) to end
    at the new last step, so the lr reaches 0 there; at the resume step the lr moves to that curve."""

    total: int
    warmup: int

    @classmethod
    def fresh(cls, total: int, warmup_ratio: float) -> "Schedule":
        return cls(total, max(1, int(round(total * warmup_ratio))))

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return 1e-3 + (1 - 1e-3) * step / self.warmup
        span = max(1, self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(step - self.warmup, span) / span))

    def extended(self, total: int) -> "Schedule":
        return Schedule(total, min(self.warmup, total))

    def scheduler(self, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)


# ---------------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_batches(model, data: DeviceData, idx: torch.Tensor, batch_size: int, pm1: bool, autocast) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(idx), batch_size):
        with autocast():
            out.append(model(data.inputs(idx[start:start + batch_size], pm1)).float())
    return torch.cat(out) if out else torch.empty(0, 2, 2, data.targets.shape[-1], device=data.packed.device)


def regression_metrics(pred: torch.Tensor, target: torch.Tensor, mean_spectrum: torch.Tensor) -> dict:
    return {
        "val_mse": float(torch.mean((pred - target) ** 2)),
        "baseline_val_mse": float(torch.mean((mean_spectrum - target) ** 2)),
        "val_pearson": float(pearson_per_spectrum(pred, target).mean()),
        "val_mae": float(torch.mean(torch.abs(pred - target))),
    }


# ---------------------------------------------------------------------------------------------------- training

@dataclass
class Run:
    """Everything setup builds and the epochs update."""

    config: dict
    run_dir: Path
    dev: torch.device
    ranks: distributed.DistContext
    prepared: Prepared
    data: DeviceData
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    model: torch.nn.Module
    net: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    shuffler: torch.Generator
    mean_spectrum: torch.Tensor
    steps_per_epoch: int
    use_bf16: bool
    start_epoch: int = 1
    best_val: float = float("inf")
    history: list = field(default_factory=list)
    init: dict = field(default_factory=dict)  # init_from / init_skipped when the weights came from a checkpoint

    @property
    def epochs(self) -> int:
        return int(self.config["training"]["epochs"])

    @property
    def batch_size(self) -> int:
        return int(self.config["data"]["batch_size"])

    @property
    def pm1(self) -> bool:
        return bool(self.config["data"]["map_to_pm1"])

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def path(self, key: str) -> Path:
        """Files named by config, inside the run folder (config.py refuses absolute paths and '..')."""
        return self.run_dir / self.config["output"][key]

    def state(self, epoch: int) -> dict:
        state = {"format": checkpoints.CHECKPOINT_FORMAT, "config": self.config, "epoch": epoch,
                 "best_val": self.best_val, "history": self.history, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "schedule": vars(self.schedule).copy(), "shuffler": self.shuffler.get_state(),
                 "torch_rng": torch.get_rng_state(), "n_params": count_parameters(self.model)}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state


def train(config: dict, prepared: Prepared, run_dir: str | Path, device: str = "auto", resume: str | None = None,
          on_record: records.RecordCallback | None = None, log: Callable[[str], None] = print) -> dict:
    """Train per `config` on `prepared`; returns the final metrics (also in run_dir/metrics.json). Every record
    (progress, epoch, final) goes to run_dir/metrics.jsonl and to `on_record` (rank 0 only under torchrun)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    requested = resolve_device(device)
    ranks = distributed.from_env(requested)  # torchrun: one process per GPU; otherwise a single process
    try:
        run = _setup(config, prepared, run_dir, ranks.device(requested), ranks)
        say = log if ranks.is_main else (lambda msg: None)
        _restore(run, resume, say)
        with records.MetricsLog(run_dir / records.FILENAME, on_record, enabled=ranks.is_main) as metrics_log:
            _train_epochs(run, metrics_log)
            metrics, val_pred = _evaluate(run)
            if ranks.is_main:
                _finalize(run, metrics, val_pred, metrics_log)
        return metrics
    finally:
        ranks.close()


def _setup(config: dict, prepared: Prepared, run_dir: Path, dev: torch.device, ranks: distributed.DistContext) -> Run:
    d, t = config["data"], config["training"]
    torch.manual_seed(int(config["seed"]))
    if prepared.bayer.shape[-1] != int(d["out_len"]):
        raise DataError(f"prepared data has {prepared.bayer.shape[-1]} spectral bins, data.out_len is {d['out_len']}")
    train_rows, val_rows = split_rows(prepared.structures.packed, float(d["train_ratio"]))
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise DataError(f"dataset of {len(prepared)} rows is too small for train_ratio={d['train_ratio']}")
    augment = bool(d["augment_180"])
    data = DeviceData(prepared, dev, with_rotated=augment,
                      augmentation=Augmentation(shifts=d["augment_shifts"], turn90=d["augment_90"]))
    stored = np.concatenate([train_rows, train_rows + data.m]) if augment else train_rows
    train_idx = torch.as_tensor(data.samples(stored), device=dev)
    tail = len(train_idx) % int(d["batch_size"])
    if 0 < tail < ranks.world:  # every rank must take part in every step: drop a tail too short to share
        train_idx = train_idx[: len(train_idx) - tail]

    model = build_model(config).to(dev)
    # the baseline predicts the training originals' mean spectrum per pixel (the distribution the validation rows
    # come from); every image's target is a permutation of its row's, so the overall std is the originals' too
    train_targets = data.targets[torch.as_tensor(train_rows, device=dev)]
    mean_spectrum = train_targets.mean(0)
    model.scale.set_stats(mean_spectrum, train_targets.std())
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = model
    if ranks.world > 1:  # gradients averaged across ranks; `model` stays the plain module (checkpoints, evaluation)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]),
                                  **({"fused": True} if dev.type == "cuda" else {}))
    steps_per_epoch = math.ceil(len(train_idx) / int(d["batch_size"]))
    schedule = Schedule.fresh(int(t["epochs"]) * steps_per_epoch, float(t["warmup_ratio"]))
    return Run(config=config, run_dir=run_dir, dev=dev, ranks=ranks, prepared=prepared, data=data,
               train_idx=train_idx, val_idx=torch.as_tensor(val_rows, device=dev), model=model, net=net,
               loss_fn=get_loss(config["loss"]["name"], **config["loss"]["params"]), optimizer=optimizer,
               schedule=schedule, scheduler=schedule.scheduler(optimizer),
               shuffler=torch.Generator(device="cpu").manual_seed(int(config["seed"])), mean_spectrum=mean_spectrum,
               steps_per_epoch=steps_per_epoch,
               use_bf16=bool(t["use_amp"]) and dev.type == "cuda" and torch.cuda.is_bf16_supported())


def _restore(run: Run, resume: str | None, log: Callable[[str], None]) -> None:
    """Resume a run exactly (or with a schedule rebuilt for a new training.epochs), or start from init weights."""
    path = checkpoints.latest(run.run_dir) if resume == "auto" else (Path(resume) if resume else None)
    init_from = run.config["training"]["init_from"]
    if path is not None:
        state = checkpoints.load(path, run.dev)
        changed = checkpoints.check_resumable(state, run.config, path)
        checkpoints.check_same_architecture(run.model, state, run.config, path)
        run.model.load_state_dict(state["model"])
        done = int(state["epoch"])
        saved = Schedule(**state["schedule"])
        run.schedule = saved.extended(run.schedule.total) if "training.epochs" in changed else saved
        run.scheduler = run.schedule.scheduler(run.optimizer)  # before the optimizer state: it sets the lr at step 0
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if "training.epochs" in changed:  # continue on the schedule of a run of the new length
            base = run.scheduler.base_lrs
            for group, lr in zip(run.optimizer.param_groups, base):
                group["lr"] = lr * run.schedule.factor(run.scheduler.last_epoch)
            log(f"training.epochs {state['config']['training']['epochs']} -> {run.epochs}: schedule rebuilt, lr "
                f"{run.optimizer.param_groups[0]['lr']:.3g} now, 0 after the last step of epoch {run.epochs}")
        run.shuffler.set_state(state["shuffler"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if run.dev.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())
        run.start_epoch, run.best_val, run.history = done + 1, float(state["best_val"]), list(state["history"])
        if run.ranks.is_main:  # lines and records of epochs after the checkpoint are redone: forget them
            trainlog.drop_epochs_after(run.path("log_file"), done)
            records.drop_epochs_after(run.run_dir / records.FILENAME, done)
        log(f"resumed from {path} at epoch {done}/{run.epochs}")
    elif init_from:
        _init_weights(run, init_from, log)
    n = len(run.train_idx)
    log(f"model {run.config['model']['name']}: {count_parameters(run.model):,} parameters on {run.dev}"
        f"{f' x {run.ranks.world} ranks' if run.ranks.world > 1 else ''}; {n} training samples "
        f"({symmetry_summary(run.config['data'])}), {len(run.val_idx)} validation")
    log("training set: " + ", ".join(f"shard {k} {v['version']} ({v['rows']} rows)" for k, v in run.prepared.training_set().items()))


def _init_weights(run: Run, init_from: str, log: Callable[[str], None]) -> None:
    """Start from another run's weights (fine-tuning): tensors of another shape are skipped and listed (log and
    metrics), and the output scale is set back to THIS training split's statistics: they describe the data, not
    what was learned, and a checkpoint pretrained on another physics model has another mean spectrum."""
    if init_from == "pretrained_model":
        raise ConfigError("training.init_from: 'pretrained_model' names the Dagster asset; outside Dagster give "
                          "its checkpoint path (the materialization's `checkpoint` metadata)")
    init_path = Path(init_from)
    own_stats = {k: v.clone() for k, v in run.model.scale.state_dict().items()}  # set in _setup from this split
    skipped = checkpoints.load_weights(run.model, checkpoints.load(init_path, run.dev), run.config, init_path)
    run.model.scale.load_state_dict(own_stats)
    run.init = {"init_from": str(init_path.resolve()), "init_skipped": skipped}
    log(f"weights from {init_path} (fresh optimizer, epoch 1; output scale from this training set)"
        + (f"; {len(skipped)} tensors of another shape skipped: {', '.join(skipped)}" if skipped else ""))


def _run_epoch(run: Run, epoch: int, clock: records.Clock, metrics_log: records.MetricsLog) -> tuple[float, int]:
    """One pass over the training split; returns (mean training loss over all ranks, samples seen)."""
    run.net.train()
    t = run.config["training"]
    order = run.train_idx[torch.randperm(len(run.train_idx), generator=run.shuffler).to(run.dev)]
    total, count = torch.zeros((), device=run.dev), 0
    pacer = records.ProgressPacer(run.steps_per_epoch)  # ~every 10 % of the epoch or every 30 s
    for b, start in enumerate(range(0, len(order), run.batch_size), 1):
        idx = run.ranks.share(order[start:start + run.batch_size])
        x, y = run.data.inputs(idx, run.pm1), run.data.target(idx)
        with run.autocast():
            loss = run.loss_fn(run.net(x).float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(t["grad_clip"]))
        run.optimizer.step()
        run.scheduler.step()
        total += loss.detach() * len(idx)
        count += len(idx)
        if pacer.due(b):  # the epoch record covers the end of the epoch
            metrics_log.emit({"kind": "progress", "epoch": epoch, "epochs": run.epochs, "batch": b,
                              "batches": run.steps_per_epoch} | clock.stamp(epoch, b / run.steps_per_epoch))
    train_loss = float(run.ranks.sum(total)) / float(run.ranks.sum(torch.tensor(float(count), device=run.dev)))
    return train_loss, len(order)


def _train_epochs(run: Run, metrics_log: records.MetricsLog) -> None:
    clock = records.Clock(run.start_epoch, run.epochs)
    save_every = int(run.config["training"]["save_every"])
    with open(run.path("log_file"), "a") if run.ranks.is_main else open(os.devnull, "w") as log_file:
        for epoch in range(run.start_epoch, run.epochs + 1):
            t0 = time.perf_counter()
            train_loss, samples = _run_epoch(run, epoch, clock, metrics_log)
            val_pred = predict_batches(run.model, run.data, run.val_idx, run.batch_size, run.pm1, run.autocast)
            val_loss = float(run.loss_fn(val_pred, run.data.target(run.val_idx)))
            seconds = time.perf_counter() - t0
            improved = val_loss < run.best_val
            run.best_val = min(run.best_val, val_loss)
            lr = run.scheduler.get_last_lr()[0]
            record = {"kind": "epoch", "epoch": epoch, "epochs": run.epochs, "train_loss": train_loss,
                      "val_loss": val_loss, "best_val": run.best_val, "lr": lr, "samples_per_s": samples / seconds,
                      "seconds": seconds} | clock.stamp(epoch, 1.0)
            run.history.append({k: v for k, v in record.items() if k not in ("kind", "progress")})
            if run.ranks.is_main:
                log_file.write(trainlog.log_line(epoch, run.epochs, train_loss, val_loss, run.best_val, lr) + "\n")
                log_file.flush()
                os.fsync(log_file.fileno())
                metrics_log.emit(record)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):  # same numbers on every rank
                last = checkpoints.latest(run.run_dir)
                raise TrainingDiverged(f"training diverged at epoch {epoch}/{run.epochs}: train_loss={train_loss:.4g}, "
                                       f"val_loss={val_loss:.4g} (lower training.lr or training.grad_clip; "
                                       f"{f'last good checkpoint {last}' if last else 'no checkpoint was written'})")
            if run.ranks.is_main:
                state = run.state(epoch)
                if improved:
                    checkpoints.save_atomic(state, run.run_dir / "best.pt")
                if save_every and epoch % save_every == 0:
                    checkpoints.save_atomic(state, run.run_dir / f"epoch_{epoch:04d}.pt")
                checkpoints.save_atomic(state, run.run_dir / "last.pt")  # last: a kill after this line loses nothing
            run.ranks.barrier()


def _evaluate(run: Run) -> tuple[dict, torch.Tensor]:
    """The final metrics with the best weights (best.pt; the last weights when no epoch improved)."""
    best_path = run.run_dir / "best.pt"
    best = checkpoints.load(best_path, run.dev) if best_path.exists() else run.state(run.epochs)
    run.model.load_state_dict(best["model"])
    val_pred = predict_batches(run.model, run.data, run.val_idx, run.batch_size, run.pm1, run.autocast)
    val_true = run.data.target(run.val_idx)
    metrics = regression_metrics(val_pred, val_true, run.mean_spectrum)
    metrics |= field_metrics(val_pred, val_true, run.prepared.wavelengths_nm)
    history = run.history
    metrics |= {
        "epochs_completed": len({h["epoch"] for h in history}),
        "best_epoch": int(best.get("epoch", run.epochs)),
        "best_val": float(run.best_val),
        "best_checkpoint": str((best_path if best_path.exists() else run.run_dir / "last.pt").resolve()),
        "n_params": count_parameters(run.model),
        "device": str(run.dev) + (f" x {run.ranks.world} ranks" if run.ranks.world > 1 else ""),
        "train_samples": len(run.train_idx),
        "val_samples": len(run.val_idx),
        "samples_per_s": float(np.median([h["samples_per_s"] for h in history])) if history else 0.0,
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])) if history else 0.0,
        "model": run.config["model"]["name"],
        "loss": run.config["loss"]["name"],
        "run_dir": str(run.run_dir.resolve()),
        "log": str(run.path("log_file").resolve()),
        "training_set": run.prepared.training_set(),
        "metrics_log": str((run.run_dir / records.FILENAME).resolve()),
        "loss_curves": str((run.path("dir") / "loss_curves.png").resolve()),
        "predictions": str((run.path("dir") / "predictions.png").resolve()),
    } | run.init
    return metrics, val_pred


def _finalize(run: Run, metrics: dict, val_pred: torch.Tensor, metrics_log: records.MetricsLog) -> None:
    """Figures, sample predictions, metrics.json / config.json and the final record (rank 0)."""
    from .plots import plot_loss_curves, plot_predictions  # matplotlib only when a run finishes

    out = run.path("dir")
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(out / "val_predictions.npy", val_pred[:64].cpu().numpy())
    plot_loss_curves(run.history, metrics["loss_curves"])
    sample = run.val_idx[:4]
    plot_predictions(run.data.inputs(sample, False)[:, 0].cpu().numpy(), run.data.targets[sample].cpu().numpy(),
                     val_pred[:4].cpu().numpy(), run.prepared.wavelengths_nm, metrics["predictions"])
    write_text_atomic(run.run_dir / "config.json", json.dumps(run.config, indent=2) + "\n")
    write_text_atomic(run.run_dir / "metrics.json", json.dumps(records.json_safe(metrics), indent=2) + "\n")
    metrics_log.emit({"kind": "final"} | metrics)


def train_from_config(config: dict, out_dir: str | Path, raw_dir: str | Path | None = None,
                      prepared_dir: str | Path | None = None, resume: str | None = None, device: str = "auto",
                      on_record: records.RecordCallback | None = None, log: Callable[[str], None] | None = None,
                      versions: dict | None = None) -> dict:
    """The CLI's entry (and each torchrun rank's): prepare the data if given raw shards, then train on the LATEST
    version of each prepared shard, or on exactly `versions` ({shard: version}, the lineage's choice)."""
    import sys

    out_dir = Path(out_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if raw_dir is not None:  # seconds even at full scale, and deterministic: a resumed run gets the same data
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("under torchrun, run `crrecon preprocess` first and pass --prepared (ranks would race)")
        prepared_dir = out_dir / "prepared"
        log(f"preprocessing {raw_dir} -> {prepared_dir}")
        preprocess(raw_dir, prepared_dir, PrepareSettings(n_bins=int(config["data"]["out_len"])))
    if prepared_dir is None:
        prepared_dir = default_prepared_dir()
    prepared = load_prepared(prepared_dir, versions)
    return train(config, prepared, out_dir, device=device, resume=resume, on_record=on_record, log=log)
