"""Where a run starts: from scratch, from another run's weights (`training.init_from`: fine-tuning), or from its
own checkpoint (resume: `--resume`, `training.resume_from`), exactly, or with the changes a resume may carry
(checkpoints.RESUMABLE_CHANGES: a new training.epochs rebuilds the schedule, new loss weights restart the best
checkpoint's count, a new freeze resets the optimizer). Paths only: naming a checkpoint by a Dagster asset or run
is the Dagster layer's business (defs/handoff.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from crrecon_pipeline.data.symmetry import symmetry_summary
from crrecon_pipeline.models import count_parameters
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.records import EpochRecord, ResumeChange
from crrecon_pipeline.train.run import Run
from crrecon_pipeline.train.schedule import Schedule

Log = Callable[[str], None]


def restore(run: Run, resume: str | None, log: Log) -> int | None:
    """Resume or init weights as asked; returns the epoch resumed after (None for a new run)."""
    path = checkpoints.latest(run.run_dir) if resume == "auto" else (Path(resume) if resume else None)
    if path is None and run.config.training.resume_from:  # an earlier run's checkpoint, continued in this folder
        path = Path(run.config.training.resume_from)
    done = None
    if path is not None:
        done = _resume(run, path, log)
    elif run.config.training.init_from:
        _init_weights(run, Path(run.config.training.init_from), log)
    _describe(run, log)
    return done


def _resume(run: Run, path: Path, log: Log) -> int:
    state = checkpoints.load(path, run.dev)
    stored = checkpoints.stored_config(state, path)
    changed = checkpoints.check_resumable(state, stored, run.config, path)
    checkpoints.check_same_training_set(state, run.prepared.training_set(), path)
    checkpoints.check_same_architecture(run.model, state, run.config, path)
    run.model.load_state_dict(state["model"])
    done = int(state["epoch"])
    _restore_optimization(run, state, stored, changed, log)
    _restore_random_state(run, state)
    _restore_loss_state(run, state, log)
    new = checkpoints.resume_changes(stored, run.config, changed, done)
    for change in new:
        log(f"resume: {change.key} {change.old!r} -> {change.new!r}")
    run.resume_changes = [ResumeChange.model_validate(c) for c in state.get("resume_changes") or []] + new
    run.start_epoch, run.best_val = done + 1, float(state["best_val"])
    run.history = [EpochRecord.model_validate({k: v for k, v in h.items() if k in EpochRecord.model_fields})
                   for h in state["history"]]
    run.compare_from = int(state.get("compare_from", 0))
    run.partial = state.get("partial")  # stopped mid-epoch: the loop skips the batches trained (loop.py)
    if any(k.startswith("loss.params") for k in changed):  # losses of other weights are not comparable
        run.best_val, run.compare_from = float("inf"), done
        log(f"loss.params changed: best checkpoint and early stopping count from epoch {done + 1}")
    where = f", batch {run.partial['batch']} of epoch {done + 1}" if run.partial else ""
    log(f"resumed from {path} at epoch {done}/{run.epochs}{where}")
    return done


def _restore_optimization(run: Run, state: dict, stored: RunConfig, changed: list[str], log: Log) -> None:
    """Schedule, scheduler and optimizer state; a new training.epochs continues on the schedule of a run of the
    new length, a new freeze starts the optimizer afresh (other parameters train now)."""
    saved = Schedule(**state["schedule"])
    run.schedule = saved.extended(run.schedule.total) if "training.epochs" in changed else saved
    run.scheduler = run.schedule.scheduler(run.optimizer)  # before the optimizer state: it sets the lr at step 0
    if "training.freeze" in changed:
        log(f"training.freeze {list(stored.training.freeze)} -> {list(run.config.training.freeze)}: optimizer "
            f"state reset for the new set of trainable parameters")
    else:
        run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "training.epochs" in changed:
        for group, lr in zip(run.optimizer.param_groups, run.scheduler.base_lrs):
            group["lr"] = lr * run.schedule.factor(run.scheduler.last_epoch)
        log(f"training.epochs {stored.training.epochs} -> {run.epochs}: schedule rebuilt, lr "
            f"{run.optimizer.param_groups[0]['lr']:.3g} now, 0 after the last step of epoch {run.epochs}")


def _restore_random_state(run: Run, state: dict) -> None:
    """The shuffling generator and torch's RNG (CUDA's too): the next epoch draws what it would have drawn."""
    run.shuffler.set_state(state["shuffler"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if run.dev.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu())


def _restore_loss_state(run: Run, state: dict, log: Log) -> None:
    """The loss's own state (adaptive_spectral's running averages), when the checkpoint has it. Changed loss.params
    may add or drop a buffer (use_uncertainty switched): what still fits is restored, the rest is said."""
    saved = state.get("loss_state")
    if not saved:
        return
    own = run.loss_fn.state_dict()
    fitting = {k: v for k, v in saved.items() if k in own and v.shape == own[k].shape}
    run.loss_fn.load_state_dict(fitting, strict=False)
    left = sorted((set(saved) | set(own)) - set(fitting))
    if left:
        log(f"loss state: {', '.join(left)} not restored (the loss's parameters changed)")


def _init_weights(run: Run, init_path: Path, log: Log) -> None:
    """Start from another run's weights (fine-tuning): tensors of another shape are skipped and listed (log and
    metrics), and the output scale is set back to THIS training split's statistics: they describe the data, not
    what was learned, and a checkpoint pretrained on another physics model has another mean spectrum."""
    own_stats = {k: v.clone() for k, v in run.model.scale.state_dict().items()}  # set in setup from this split
    skipped = checkpoints.load_weights(run.model, checkpoints.load(init_path, run.dev), run.config, init_path)
    run.model.scale.load_state_dict(own_stats)
    run.init_from, run.init_skipped = str(init_path.resolve()), skipped
    log(f"weights from {init_path} (fresh optimizer, epoch 1; output scale from this training set)"
        + (f"; {len(skipped)} tensors of another shape skipped: {', '.join(skipped)}" if skipped else ""))


def _describe(run: Run, log: Log) -> None:
    d = run.config.data
    images = symmetry_summary(turn180=d.augment_180, shifts=d.augment_shifts, turn90=d.augment_90)
    log(f"model {run.config.model.name}: {count_parameters(run.model):,} parameters on {run.dev}"
        f"{f' x {run.ranks.world} ranks' if run.ranks.world > 1 else ''} ({run.frozen['trainable_params']:,} "
        f"trainable, {run.frozen['frozen_params']:,} frozen); {len(run.train_idx)} training samples "
        f"({images}), {len(run.val_idx)} validation")
    log("training set: " + ", ".join(f"shard {k} {v['version']} ({v['rows']} rows)"
                                     for k, v in run.prepared.training_set().items()))
