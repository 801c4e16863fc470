"""The trainer: a config + a prepared set -> a run folder with checkpoints, log, metrics and figures.

Run folder (every name from config stays inside it):
    metrics.jsonl        structured records: progress (~10 % of an epoch), one per epoch, the final one (records.py)
    train_log.txt        output.log_file: the research code's line format, for people and old tools
    last.pt best.pt      written atomically every epoch / on improvement; epoch_NNNN.pt every save_every
    metrics.json config.json   final numbers (val_mse, baseline_val_mse, val_pearson, ...) and the config used
    outputs/             output.dir: loss_curves.png, predictions.png / predictions_train.png (the fixed sample
                         structures, best weights), samples_val.png / samples_train.png (the live views),
                         val_predictions.npy
    tensorboard/         event files (output.tensorboard): tensorboard --logdir $CRRECON_HOME/runs

A run is setup -> restore (resume or init weights) -> epochs -> evaluate -> finalize, each a function below.
Everything the hot loop touches lives on the device (batches.py). A killed run resumes from last.pt exactly
(model, optimizer, scheduler, RNG states and the shuffling generator are all in it)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from crrecon_pipeline.data.npyio import save_atomic, write_text_atomic
from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.data.symmetry import Augmentation, symmetry_summary
from crrecon_pipeline.errors import ConfigError, DataError, TrainingDiverged
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.models import count_parameters
from crrecon_pipeline.train import checkpoints, distributed, early_stop, freeze, metric_log, records, step, trainlog
from crrecon_pipeline.train.batches import DeviceData
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.metric_log import TermAccumulator
from crrecon_pipeline.train.metrics import field_metrics, regression_metrics
from crrecon_pipeline.train.samples import SampleViews
from crrecon_pipeline.train.schedule import Schedule
from crrecon_pipeline.train.setup import build_model, resolve_device
from crrecon_pipeline.train.split import all_rows_train, oversampled, split_rows


@torch.no_grad()
def predict_batches(model, data: DeviceData, idx: torch.Tensor, batch_size: int, pm1: bool, autocast) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(idx), batch_size):
        with autocast():
            out.append(model(data.inputs(idx[start:start + batch_size], pm1)).float())
    return torch.cat(out) if out else torch.empty(0, 2, 2, data.targets.shape[-1], device=data.packed.device)


def _terms(loss_fn, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """The loss's weighted terms as numbers (they sum to the loss): one host read for all of them."""
    terms = loss_fn.terms(pred, target)
    return dict(zip(terms, torch.stack([v.detach().float() for v in terms.values()]).tolist()))


@dataclass
class Run:
    """Everything setup builds and the epochs update; `config` is the validated run config, read as typed
    attributes (stored in checkpoints and config.json as its plain dict)."""

    config: RunConfig
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
    frozen: dict = field(default_factory=dict)  # trainable_params / frozen_params / frozen_groups (train/freeze.py)
    resume_changes: list = field(default_factory=list)  # [{key, old, new, epoch}] of every resume with changes
    stopped_at: int | None = None  # the last epoch run when early stopping ended the run
    compare_from: int = 0  # epochs up to this one had other loss weights: best / early stopping ignore them

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

    def state(self, epoch: int) -> dict:
        state = {"format": checkpoints.CHECKPOINT_FORMAT, "config": self.config.to_dict(), "epoch": epoch,
                 "best_val": self.best_val, "history": self.history, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "schedule": vars(self.schedule).copy(), "shuffler": self.shuffler.get_state(),
                 "torch_rng": torch.get_rng_state(), "n_params": count_parameters(self.model),
                 "training_set": self.prepared.training_set(), "compare_from": self.compare_from,
                 "resume_changes": self.resume_changes}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state


def train(config: RunConfig, prepared: Prepared, run_dir: str | Path, device: str = "auto", resume: str | None = None,
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
        with metric_log.open_logger(run_dir, config, on_record, enabled=ranks.is_main) as metrics_log:
            latest = [c for c in run.resume_changes if c["epoch"] == run.start_epoch - 1]
            if latest:
                metrics_log.emit({"kind": "resume_changes", "epoch": run.start_epoch - 1, "changes": latest})
            _train_epochs(run, metrics_log)
            metrics, val_pred = _evaluate(run)
            if ranks.is_main:
                _finalize(run, metrics, val_pred, metrics_log)
        return metrics
    finally:
        ranks.close()


def _shard_of_row(prepared: Prepared) -> np.ndarray:
    """The shard index of every row: the versions in the order they were concatenated."""
    shard_of_row = np.repeat(list(prepared.versions), [v.rows for v in prepared.versions.values()])
    if len(shard_of_row) != len(prepared):
        raise DataError("data.oversample / data.train_all: the prepared data do not say which shard each row "
                        "comes from")
    return shard_of_row


def _setup(config: RunConfig, prepared: Prepared, run_dir: Path, dev: torch.device,
           ranks: distributed.DistContext) -> Run:
    d, t = config.data, config.training
    torch.manual_seed(config.seed)
    if prepared.bayer.shape[-1] != d.out_len:
        raise DataError(f"prepared data has {prepared.bayer.shape[-1]} spectral bins, data.out_len is {d.out_len}")
    train_rows, val_rows = split_rows(prepared.structures.packed, d.train_ratio)
    shard_of_row = _shard_of_row(prepared) if d.oversample or d.train_all else None
    if d.train_all:  # the design loop's new rows: all of them train; validation stays on the other shards' rows
        train_rows, val_rows = all_rows_train(train_rows, val_rows, shard_of_row, d.train_all)
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise DataError(f"dataset of {len(prepared)} rows is too small for train_ratio={d.train_ratio}")
    data = DeviceData(prepared, dev, with_rotated=d.augment_180,
                      augmentation=Augmentation(shifts=d.augment_shifts, turn90=d.augment_90))
    sampled = oversampled(train_rows, shard_of_row, d.oversample)
    stored = np.concatenate([sampled, sampled + data.m]) if d.augment_180 else sampled
    train_idx = torch.as_tensor(data.samples(stored), device=dev)
    tail = len(train_idx) % d.batch_size
    if 0 < tail < ranks.world:  # every rank must take part in every step: drop a tail too short to share
        train_idx = train_idx[: len(train_idx) - tail]

    model = build_model(config).to(dev)
    # the baseline predicts the training originals' mean spectrum per pixel (the distribution the validation rows
    # come from); every image's target is a permutation of its row's, so the overall std is the originals' too
    train_targets = data.targets[torch.as_tensor(train_rows, device=dev)]
    mean_spectrum = train_targets.mean(0)
    model.scale.set_stats(mean_spectrum, train_targets.std())
    if dev.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = freeze.apply_freeze(model, t.freeze)
    if not frozen["trainable_params"]:
        raise ConfigError(f"training.freeze: {', '.join(t.freeze)} leaves no parameter of {config.model.name} to train")
    net = model  # frozen before DDP: it registers only the parameters that require grad
    if ranks.world > 1:  # gradients averaged across ranks; `model` stays the plain module (checkpoints, evaluation)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    net = step.compiled(net, t)
    optimizer = torch.optim.AdamW(freeze.trainable_parameters(model), lr=t.lr, weight_decay=t.weight_decay,
                                  **({"fused": True} if dev.type == "cuda" else {}))
    steps_per_epoch = math.ceil(len(train_idx) / d.batch_size)
    schedule = Schedule.fresh(t.epochs * steps_per_epoch, t.warmup_ratio, t.min_lr_ratio)
    loss_fn = get_loss(config.loss.name, **config.loss.params).to(dev)
    if hasattr(loss_fn, "calibrate"):  # a unit-free loss measures its terms for the mean-spectrum predictor
        loss_fn.calibrate(train_targets)
    return Run(config=config, run_dir=run_dir, dev=dev, ranks=ranks, prepared=prepared, data=data,
               train_idx=train_idx, val_idx=torch.as_tensor(val_rows, device=dev), model=model, net=net,
               loss_fn=loss_fn, optimizer=optimizer,
               schedule=schedule, scheduler=schedule.scheduler(optimizer),
               shuffler=torch.Generator(device="cpu").manual_seed(config.seed), mean_spectrum=mean_spectrum,
               steps_per_epoch=steps_per_epoch, frozen=frozen,
               use_bf16=t.use_amp and dev.type == "cuda" and torch.cuda.is_bf16_supported())


def _restore(run: Run, resume: str | None, log: Callable[[str], None]) -> None:
    """Resume a run exactly (or with a schedule rebuilt for a new training.epochs), or start from init weights."""
    path = checkpoints.latest(run.run_dir) if resume == "auto" else (Path(resume) if resume else None)
    if path is None and run.config.training.resume_from:  # an earlier run's checkpoint, continued in this folder
        path = _resume_from_path(run.config.training.resume_from)
    init_from = run.config.training.init_from
    if path is not None:
        state = checkpoints.load(path, run.dev)
        changed = checkpoints.check_resumable(state, run.config, path)
        checkpoints.check_same_training_set(state, run.prepared.training_set(), path)
        checkpoints.check_same_architecture(run.model, state, run.config, path)
        run.model.load_state_dict(state["model"])
        done = int(state["epoch"])
        saved = Schedule(**state["schedule"])
        run.schedule = saved.extended(run.schedule.total) if "training.epochs" in changed else saved
        run.scheduler = run.schedule.scheduler(run.optimizer)  # before the optimizer state: it sets the lr at step 0
        if "training.freeze" in changed:  # other parameters train now: their AdamW moments start afresh
            log(f"training.freeze {state['config']['training'].get('freeze', [])} -> {list(run.config.training.freeze)}"
                f": optimizer state reset for the new set of trainable parameters")
        else:
            run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        new = [dict(c, epoch=done) for c in checkpoints.resume_changes(state, run.config, changed)]
        for change in new:
            log(f"resume: {change['key']} {change['old']!r} -> {change['new']!r}")
        run.resume_changes = list(state.get("resume_changes") or []) + new  # every resume's, oldest first
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
        run.compare_from = int(state.get("compare_from", 0))
        if any(k.startswith("loss.params") for k in changed):  # losses of other weights are not comparable
            run.best_val, run.compare_from = float("inf"), done
            log(f"loss.params changed: best checkpoint and early stopping count from epoch {done + 1}")
        if run.ranks.is_main:  # lines and records of epochs after the checkpoint are redone: forget them
            trainlog.drop_epochs_after(run.log_file, done)
            records.drop_epochs_after(run.run_dir / records.FILENAME, done)
        log(f"resumed from {path} at epoch {done}/{run.epochs}")
    elif init_from:
        _init_weights(run, init_from, log)
    n = len(run.train_idx)
    d = run.config.data
    images = symmetry_summary(turn180=d.augment_180, shifts=d.augment_shifts, turn90=d.augment_90)
    log(f"model {run.config.model.name}: {count_parameters(run.model):,} parameters on {run.dev}"
        f"{f' x {run.ranks.world} ranks' if run.ranks.world > 1 else ''} ({run.frozen['trainable_params']:,} "
        f"trainable, {run.frozen['frozen_params']:,} frozen); {n} training samples "
        f"({images}), {len(run.val_idx)} validation")
    log("training set: " + ", ".join(f"shard {k} {v['version']} ({v['rows']} rows)"
                                     for k, v in run.prepared.training_set().items()))


def _resume_from_path(resume_from: str) -> Path:
    if resume_from == "latest" or not resume_from.endswith(".pt"):
        raise ConfigError(f"training.resume_from: {resume_from!r} names a Dagster run; outside Dagster give the "
                          f"checkpoint path (its run folder's last.pt) or use --resume")
    return Path(resume_from)


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


def _run_epoch(run: Run, epoch: int, clock: records.Clock,
               metrics_log: metric_log.MetricLogger) -> tuple[float, int, dict]:
    """One pass over the training split; returns (mean training loss over all ranks, samples seen, the mean of
    each loss term over all ranks)."""
    run.net.train()
    freeze.hold_frozen(run.model)
    order = run.train_idx[torch.randperm(len(run.train_idx), generator=run.shuffler).to(run.dev)]
    total, count = torch.zeros((), device=run.dev), 0
    pacer = records.ProgressPacer(run.steps_per_epoch)  # ~every 10 % of the epoch or every 30 s
    terms = TermAccumulator()  # summed on the device; read (one host sync) only at progress records
    for b, start in enumerate(range(0, len(order), run.batch_size), 1):
        idx = run.ranks.share(order[start:start + run.batch_size])
        total += step.train_step(run, idx, terms)  # a device tensor: no host sync per batch (step.py)
        count += len(idx)
        if pacer.due(b):  # the epoch record covers the end of the epoch
            metrics_log.emit({"kind": "progress", "epoch": epoch, "epochs": run.epochs, "batch": b,
                              "batches": run.steps_per_epoch, "lr": run.scheduler.get_last_lr()[0]}
                             | terms.window() | clock.stamp(epoch, b / run.steps_per_epoch, b))
    train_loss = float(run.ranks.sum(total)) / float(run.ranks.sum(torch.tensor(float(count), device=run.dev)))
    return train_loss, len(order), terms.epoch_means(run.ranks.sum)


def _train_epochs(run: Run, metrics_log: metric_log.MetricLogger) -> None:
    clock = records.Clock(run.start_epoch, run.epochs, run.steps_per_epoch)
    views = SampleViews(run, predict_batches) if run.ranks.is_main else None
    save_every = run.config.training.save_every
    with open(run.log_file, "a") if run.ranks.is_main else open(os.devnull, "w") as log_file:
        for epoch in range(run.start_epoch, run.epochs + 1):
            compared = [h for h in run.history if h["epoch"] > run.compare_from]
            if early_stop.exhausted(compared, run.config.training.early_stopping):
                run.stopped_at = epoch - 1
                break
            t0 = time.perf_counter()
            train_loss, samples, train_terms = _run_epoch(run, epoch, clock, metrics_log)
            val_pred = predict_batches(run.model, run.data, run.val_idx, run.batch_size, run.pm1, run.autocast)
            val_terms = _terms(run.loss_fn, val_pred, run.data.target(run.val_idx))
            val_loss = sum(val_terms.values())
            seconds = time.perf_counter() - t0
            improved = val_loss < run.best_val
            run.best_val = min(run.best_val, val_loss)
            lr = run.scheduler.get_last_lr()[0]
            record = {"kind": "epoch", "epoch": epoch, "epochs": run.epochs, "train_loss": train_loss,
                      "val_loss": val_loss, "best_val": run.best_val, "lr": lr, "samples_per_s": samples / seconds,
                      "seconds": seconds, "train_terms": train_terms, "val_terms": val_terms,
                      "val_mse_per_pixel": float(torch.mean((val_pred - run.data.target(run.val_idx)) ** 2))}
            record |= clock.stamp(epoch, 1.0, run.steps_per_epoch)
            run.history.append({k: v for k, v in record.items() if k not in ("kind", "progress")})
            if run.ranks.is_main:
                record["sample_figures"] = views.update(epoch)
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
    metrics["val_terms"] = _terms(run.loss_fn, val_pred, val_true)  # the best weights' loss, term by term
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
        "model": run.config.model.name,
        "loss": run.config.loss.name,
        "run_dir": str(run.run_dir.resolve()),
        "log": str(run.log_file.resolve()),
        "training_set": run.prepared.training_set(),
        "metrics_log": str((run.run_dir / records.FILENAME).resolve()),
        **({"tensorboard": str((run.run_dir / metric_log.TENSORBOARD_DIR).resolve())}
           if run.config.output.tensorboard else {}),
        "loss_curves": str((run.output_dir / "loss_curves.png").resolve()),
        "predictions": str((run.output_dir / "predictions.png").resolve()),
        "stopped_early": run.stopped_at is not None,
        "stopped_at_epoch": run.stopped_at,
        "resume_changes": run.resume_changes,
        "predictions_train": str((run.output_dir / "predictions_train.png").resolve()),
    } | run.init | run.frozen
    return metrics, val_pred


def _finalize(run: Run, metrics: dict, val_pred: torch.Tensor, metrics_log: metric_log.MetricLogger) -> None:
    """Figures, sample predictions, metrics.json / config.json and the final record (rank 0)."""
    from crrecon_pipeline.plots import plot_loss_curves

    out = run.output_dir
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(out / "val_predictions.npy", val_pred[:64].cpu().numpy())
    plot_loss_curves(run.history, metrics["loss_curves"])
    views = SampleViews(run, predict_batches)  # the live views' fixed structures, with the best weights
    views.draw(views.sets["val"], metrics["predictions"],
               "Validation samples: true vs predicted spectra (best weights)")
    views.draw(views.sets["train"], metrics["predictions_train"],
               "Training samples: true vs predicted spectra (best weights)")
    write_text_atomic(run.run_dir / "config.json", json.dumps(run.config.to_dict(), indent=2) + "\n")
    write_text_atomic(run.run_dir / "metrics.json", json.dumps(records.json_safe(metrics), indent=2) + "\n")
    metrics_log.emit({"kind": "final"} | metrics)
