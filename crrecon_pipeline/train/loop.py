"""The trainer: a config + a prepared set -> a run folder with checkpoints, records, figures. A recipe of explicit
stages, each a function: setup (run.py) -> restore (restore.py: resume or init weights) -> epochs -> evaluate ->
finalize. Everything the hot loop touches lives on the device (batches.py); records go out through the sinks.

Run folder (every name from config stays inside it):
    metrics.jsonl        the typed records: progress (~10 % of an epoch), one per epoch, the final one (records.py)
    train_log.txt        output.log_file: the research code's line format, for people and old tools
    last.pt best.pt      written atomically every epoch / on improvement; epoch_NNNN.pt every save_every
    metrics.json config.json   the final RunMetrics and the config used
    outputs/             output.dir: loss_curves.png, predictions.png / predictions_train.png (the fixed sample
                         structures, best weights), samples_val.png / samples_train.png (the live views),
                         val_predictions.npy
    tensorboard/         event files (output.tensorboard): tensorboard --logdir $CRRECON_HOME/runs

    control/             `crrecon control`'s requests and the trainer's answers (control.py)
    resume.yaml training_set.json   written when the run stops before its last epoch: what resumes it

A killed run resumes from last.pt exactly (model, optimizer, scheduler, RNG states and the shuffling generator are
all in it). SIGINT / SIGTERM during the epochs stop at the next batch boundary (interrupts.py): last.pt then holds
the epoch's progress too, and a stop record says how to resume. `crrecon control` requests are taken at progress
records and applied at the epoch's end, before its checkpoint (control.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from crrecon_pipeline.data.npyio import save_atomic, write_text_atomic
from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.errors import TrainingDiverged
from crrecon_pipeline.models import count_parameters
from crrecon_pipeline.train import checkpoints, control, distributed, early_stop, freeze, runfolder, sinks, step
from crrecon_pipeline.train.batches import DeviceData
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.interrupts import GracefulStop
from crrecon_pipeline.train.metrics import field_metrics, regression_metrics
from crrecon_pipeline.train.records import (
    FILENAME,
    Clock,
    ControlRecord,
    EpochRecord,
    ProgressPacer,
    ProgressRecord,
    RecordCallback,
    ResumeRecord,
    RunMetrics,
    StopRecord,
    final_record,
    json_safe,
)
from crrecon_pipeline.train.restore import restore
from crrecon_pipeline.train.run import Run, build_loss, setup_run
from crrecon_pipeline.train.samples import SampleViews
from crrecon_pipeline.train.setup import resolve_device
from crrecon_pipeline.train.term_sums import TermAccumulator


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


def train(config: RunConfig, prepared: Prepared, run_dir: str | Path, device: str = "auto", resume: str | None = None,
          on_record: RecordCallback | None = None, log: Callable[[str], None] = print) -> RunMetrics:
    """Train per `config` on `prepared`; returns the final metrics (also in run_dir/metrics.json). Every record
    (progress, epoch, final) goes to the run's sinks and to `on_record` (rank 0 only under torchrun)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    requested = resolve_device(device)
    ranks = distributed.from_env(requested)  # torchrun: one process per GPU; otherwise a single process
    try:
        with runfolder.claim(run_dir, config, resume, ranks.is_main):  # one run per folder, refused otherwise
            return _train_claimed(config, prepared, run_dir, ranks, requested, resume, on_record, log)
    finally:
        ranks.close()


def _train_claimed(config: RunConfig, prepared: Prepared, run_dir: Path, ranks: distributed.DistContext,
                   requested: torch.device, resume: str | None, on_record: RecordCallback | None,
                   log: Callable[[str], None]) -> RunMetrics:
    """train() once the run folder is this run's."""
    run = setup_run(config, prepared, run_dir, ranks.device(requested), ranks)
    resumed_after = restore(run, resume, log if ranks.is_main else (lambda msg: None))
    with sinks.open_recorder(run_dir, config, on_record, ranks.is_main, resumed_after, run.steps_per_epoch,
                             lambda: getattr(run.loss_fn, "term_weights", dict)()) as recorder:
        latest = [c for c in run.resume_changes if c.epoch == run.start_epoch - 1]
        if latest:
            recorder.emit(ResumeRecord(epoch=run.start_epoch - 1, changes=latest))
        # SIGINT / SIGTERM: noted and acted on at the next batch boundary (one process only: interrupts.py)
        with GracefulStop(enabled=ranks.world == 1) as stop, \
                control.Steering(run_dir, run.config, enabled=ranks.is_main) as steering:
            _train_epochs(run, recorder, stop, steering)
        if run.stopped and ranks.is_main:
            log(run.stopped)
        metrics, val_pred = _evaluate(run)
        if ranks.is_main:
            _finalize(run, metrics, val_pred, recorder)
    return metrics


def _epoch_start(run: Run, epoch: int) -> tuple[int, torch.Tensor, int, TermAccumulator]:
    """(batches already trained, their summed loss, their samples, their terms): none for a new epoch; what a
    checkpoint stopped mid-epoch had, when the run resumes in that epoch."""
    terms = TermAccumulator()
    part, run.partial = run.partial, None
    if part is None or int(part["epoch"]) != epoch:
        return 0, torch.zeros((), device=run.dev), 0, terms
    terms.restore(part["terms"], run.dev)
    return int(part["batch"]), part["total"].to(run.dev), int(part["count"]), terms


def _run_epoch(run: Run, epoch: int, clock: Clock, recorder: sinks.Recorder, stop: GracefulStop,
               steering: control.Steering) -> tuple[float, int, dict]:
    """One pass over the training split; returns (mean training loss over all ranks, samples seen, the mean of
    each loss term over all ranks). A stop requested (SIGINT / SIGTERM) ends it at the next batch boundary."""
    run.net.train()
    freeze.hold_frozen(run.model)
    run.shuffler_before = run.shuffler.get_state()  # a checkpoint written mid-epoch redraws the order from here
    order = run.train_idx[torch.randperm(len(run.train_idx), generator=run.shuffler).to(run.dev)]
    done, total, count, terms = _epoch_start(run, epoch)  # summed on the device; read at progress records only
    pacer = ProgressPacer(run.steps_per_epoch)  # ~every 10 % of the epoch or every 30 s
    for b, start in enumerate(range(0, len(order), run.batch_size), 1):
        if b <= done:  # trained before the stop this run resumes from
            continue
        if stop.requested:  # a Python flag: no host sync
            _stop_mid_epoch(run, epoch, b - 1, (total, count, terms), recorder, stop)
        idx = run.ranks.share(order[start:start + run.batch_size])
        total += step.train_step(run, idx, terms)  # a device tensor: no host sync per batch (step.py)
        count += len(idx)
        if pacer.due(b):  # the epoch record covers the end of the epoch
            recorder.emit(ProgressRecord(epoch=epoch, epochs=run.epochs, batch=b, batches=run.steps_per_epoch,
                                         lr=run.scheduler.get_last_lr()[0], **terms.window(),
                                         **clock.stamp(epoch, b / run.steps_per_epoch, b)))
            steering.poll(epoch)
    if stop.requested:
        _stop_mid_epoch(run, epoch, run.steps_per_epoch, (total, count, terms), recorder, stop)
    train_loss = float(run.ranks.sum(total)) / float(run.ranks.sum(torch.tensor(float(count), device=run.dev)))
    return train_loss, len(order) - min(done * run.batch_size, len(order)), terms.epoch_means(run.ranks.sum)


def _stop_mid_epoch(run: Run, epoch: int, batch: int, sums: tuple, recorder: sinks.Recorder,
                    stop: GracefulStop) -> None:
    """last.pt with the epoch's progress (the batches done, the sums so far: a resume ends as an uninterrupted
    run would), the stop record, then the signal to whoever handled it before (it raises)."""
    total, count, terms = sums
    partial = {"epoch": epoch, "batch": batch, "total": total.detach().cpu(), "count": count, "terms": terms.state()}
    checkpoints.save_atomic(run.state(epoch - 1, partial), run.run_dir / "last.pt")
    recorder.emit(stop_record(run, epoch, batch, stop.reason))
    stop.deliver()


def stop_record(run: Run, epoch: int, batch: int, reason: str) -> StopRecord:
    """Where the run stopped and how it resumes: resume.yaml (the config, training.resume_from its last.pt) and
    training_set.json (the exact data) in the run folder, and the `crrecon train` command that uses them."""
    last = (run.run_dir / "last.pt").resolve()
    config = run.config.replaced("training.resume_from", str(last))
    write_text_atomic(run.run_dir / "resume.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    set_path = write_text_atomic(run.run_dir / "training_set.json",
                                 json.dumps(run.prepared.training_set(), indent=2) + "\n")
    store = f" --prepared {run.prepared.store.resolve()}" if run.prepared.store is not None else ""
    command = (f"crrecon train --config {run.run_dir.resolve() / 'resume.yaml'} --out {run.run_dir.resolve()} "
               f"--resume auto --training-set {set_path.resolve()}{store}")
    return StopRecord(epoch=epoch, epochs=run.epochs, batch=batch, batches=run.steps_per_epoch, reason=reason,
                      checkpoint=str(last), resume_command=command, resume_config=config.to_dict())


def _validate_epoch(run: Run, epoch: int, clock: Clock, train_loss: float, samples: int, train_terms: dict,
                    t0: float) -> tuple[EpochRecord, bool]:
    """The epoch's record (validation loss and terms, throughput, timing) and whether it improved on the best."""
    val_pred = predict_batches(run.model, run.data, run.val_idx, run.batch_size, run.pm1, run.autocast)
    val_true = run.data.target(run.val_idx)
    val_terms = _terms(run.loss_fn, val_pred, val_true)
    val_loss = sum(val_terms.values())
    seconds = time.perf_counter() - t0
    improved = val_loss < run.best_val
    run.best_val = min(run.best_val, val_loss)
    record = EpochRecord(epoch=epoch, epochs=run.epochs, train_loss=train_loss, val_loss=val_loss,
                         best_val=run.best_val, lr=run.scheduler.get_last_lr()[0], samples_per_s=samples / seconds,
                         seconds=seconds, train_terms=train_terms, val_terms=val_terms,
                         val_mse_per_pixel=float(torch.mean((val_pred - val_true) ** 2)),
                         **clock.stamp(epoch, 1.0, run.steps_per_epoch))
    return record, improved


def _save(run: Run, epoch: int, improved: bool) -> None:
    """best.pt on improvement, epoch_NNNN.pt every save_every, last.pt always and last: a kill after it loses
    nothing (rank 0)."""
    state = run.state(epoch)
    if improved:
        checkpoints.save_atomic(state, run.run_dir / "best.pt")
    save_every = run.config.training.save_every
    if save_every and epoch % save_every == 0:
        checkpoints.save_atomic(state, run.run_dir / f"epoch_{epoch:04d}.pt")
    checkpoints.save_atomic(state, run.run_dir / "last.pt")


def _train_epochs(run: Run, recorder: sinks.Recorder, stop: GracefulStop, steering: control.Steering) -> None:
    clock = Clock(run.start_epoch, run.epochs, run.steps_per_epoch)
    views = SampleViews(run, predict_batches) if run.ranks.is_main else None
    for epoch in range(run.start_epoch, run.epochs + 1):
        compared = [h for h in run.history if h.epoch > run.compare_from]
        if early_stop.exhausted(compared, run.config.training.early_stopping):
            run.stopped_at = epoch - 1
            break
        t0 = time.perf_counter()
        train_loss, samples, train_terms = _run_epoch(run, epoch, clock, recorder, stop, steering)
        record, improved = _validate_epoch(run, epoch, clock, train_loss, samples, train_terms, t0)
        run.history.append(record)
        if run.ranks.is_main:
            recorder.emit(record.model_copy(update={"sample_figures": views.update(epoch)}))
        if not (math.isfinite(record.train_loss) and math.isfinite(record.val_loss)):  # same on every rank
            last = checkpoints.latest(run.run_dir)
            raise TrainingDiverged(f"training diverged at epoch {epoch}/{run.epochs}: train_loss={train_loss:.4g}, "
                                   f"val_loss={record.val_loss:.4g} (lower training.lr or training.grad_clip; "
                                   f"{f'last good checkpoint {last}' if last else 'no checkpoint was written'})")
        stop_after = _steer(run, epoch, steering, recorder)  # before the checkpoint: it holds the new config
        if run.ranks.is_main:
            _save(run, epoch, improved)
        run.ranks.barrier()
        if stop.requested:  # a signal during validation: the epoch's checkpoint is written, nothing is lost
            recorder.emit(stop_record(run, epoch, run.steps_per_epoch, stop.reason))
            stop.deliver()
        if stop_after and epoch < run.epochs:
            if run.ranks.is_main:
                record = stop_record(run, epoch, run.steps_per_epoch, "stop after epoch (crrecon control)")
                recorder.emit(record)
                run.stopped = record.line()
            break


def _steer(run: Run, epoch: int, steering: control.Steering, recorder: sinks.Recorder) -> bool:
    """Apply the requests `crrecon control` made during the epoch (read by rank 0, the same on every rank); each is
    a ControlRecord. Returns whether one asked to stop after this epoch."""
    steering.poll(epoch)
    stop_after = False
    for request in run.ranks.broadcast(steering.take()):
        old = run.config
        run.config, changed = control.changed_config(old, request.changes, f"crrecon control {request.name}")
        changes = checkpoints.resume_changes(old, run.config, changed, epoch, recorded=changed)
        if any(k.startswith("loss.params") for k in changed):  # losses of other weights are not comparable
            run.loss_fn = build_loss(run.config, run.train_targets, run.dev, carry=run.loss_fn)
            run.best_val, run.compare_from = float("inf"), epoch
        run.resume_changes = run.resume_changes + changes
        stop_after = stop_after or request.stop_after_epoch
        if run.ranks.is_main:
            recorder.emit(ControlRecord(epoch=epoch, changes=changes, stop_after_epoch=request.stop_after_epoch,
                                        request=request.name))
    return stop_after


def _evaluate(run: Run) -> tuple[RunMetrics, torch.Tensor]:
    """The final metrics with the best weights (best.pt; the last weights when no epoch improved)."""
    best_path = run.run_dir / "best.pt"
    best = checkpoints.load(best_path, run.dev) if best_path.exists() else run.state(run.epochs)
    run.model.load_state_dict(best["model"])
    val_pred = predict_batches(run.model, run.data, run.val_idx, run.batch_size, run.pm1, run.autocast)
    val_true = run.data.target(run.val_idx)
    history, out = run.history, run.output_dir
    metrics = RunMetrics(
        **regression_metrics(val_pred, val_true, run.mean_spectrum),
        **field_metrics(val_pred, val_true, run.prepared.wavelengths_nm),
        val_terms=_terms(run.loss_fn, val_pred, val_true),  # the best weights' loss, term by term
        epochs_completed=len({h.epoch for h in history}), best_epoch=int(best.get("epoch", run.epochs)),
        best_val=float(run.best_val),
        best_checkpoint=str((best_path if best_path.exists() else run.run_dir / "last.pt").resolve()),
        n_params=count_parameters(run.model),
        device=str(run.dev) + (f" x {run.ranks.world} ranks" if run.ranks.world > 1 else ""),
        train_samples=len(run.train_idx), val_samples=len(run.val_idx),
        samples_per_s=float(np.median([h.samples_per_s for h in history])) if history else 0.0,
        seconds_per_epoch=float(np.median([h.seconds for h in history])) if history else 0.0,
        model=run.config.model.name, loss=run.config.loss.name, run_dir=str(run.run_dir.resolve()),
        log=str(run.log_file.resolve()), training_set=run.prepared.training_set(),
        metrics_log=str((run.run_dir / FILENAME).resolve()),
        tensorboard=str((run.run_dir / sinks.TENSORBOARD_DIR).resolve()) if run.config.output.tensorboard else None,
        loss_curves=str((out / "loss_curves.png").resolve()), predictions=str((out / "predictions.png").resolve()),
        predictions_train=str((out / "predictions_train.png").resolve()),
        stopped_early=run.stopped_at is not None, stopped_at_epoch=run.stopped_at,
        resume_changes=run.resume_changes, stopped=run.stopped, init_from=run.init_from,
        init_skipped=run.init_skipped, **run.frozen)
    return metrics, val_pred


def _finalize(run: Run, metrics: RunMetrics, val_pred: torch.Tensor, recorder: sinks.Recorder) -> None:
    """Figures, sample predictions, metrics.json / config.json and the final record (rank 0)."""
    from crrecon_pipeline.plots import plot_loss_curves

    out = run.output_dir
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(out / "val_predictions.npy", val_pred[:64].cpu().numpy())
    plot_loss_curves(run.history, metrics.loss_curves)
    views = SampleViews(run, predict_batches)  # the live views' fixed structures, with the best weights
    views.draw(views.sets["val"], metrics.predictions, "Validation samples: true vs predicted spectra (best weights)")
    views.draw(views.sets["train"], metrics.predictions_train,
               "Training samples: true vs predicted spectra (best weights)")
    write_text_atomic(run.run_dir / "config.json", json.dumps(run.config.to_dict(), indent=2) + "\n")
    write_text_atomic(run.run_dir / "metrics.json", json.dumps(json_safe(metrics.model_dump()), indent=2) + "\n")
    recorder.emit(final_record(metrics))
