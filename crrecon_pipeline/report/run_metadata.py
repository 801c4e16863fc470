"""What trained_model reports, as plain data: the same keys whether it trained in-process or in torchrun ranks
under Dagster Pipes. Values are (type, value) pairs; the Dagster layer turns them into MetadataValues and the
Pipes worker into Pipes metadata, so neither restates the keys. No Dagster import here."""

from __future__ import annotations

import time
from pathlib import Path

from crrecon_pipeline.numbers import percent, rounded
from crrecon_pipeline.plots import markdown_image, plot_loss_curves
from crrecon_pipeline.report.modelcard import model_card
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.metrics import PIXELS
from crrecon_pipeline.train.records import (
    FILENAME,
    EpochRecord,
    ProgressRecord,
    RunMetrics,
    StopRecord,
    duration,
    epoch_history,
    read_records,
)
from crrecon_pipeline.train.samples import DASHBOARD

FIELD_KEYS = (tuple(f"val_mse_{p}" for p in PIXELS)
              + ("val_peak_error_nm", "val_routing_error", "val_routing_efficiency"))
SAMPLE_FIGURES = (DASHBOARD, "samples_val", "samples_train")  # markdown images
OBSERVED = ("train_loss", "val_loss", "best_val", "lr", "samples_per_s", "eta_s")


def term_metadata(record: EpochRecord) -> dict:
    """Each weighted loss term as its own number: `train_loss_<term>`, `val_loss_<term>` (they sum to the loss)."""
    return {f"{split}_loss_{name}": rounded(value) for split, terms in (("train", record.train_terms),
                                                                         ("val", record.val_terms))
            for name, value in terms.items() if value is not None}


def observation_metadata(record: EpochRecord) -> dict:
    """An epoch record -> the per-epoch observation, ordered for people (the UI lists it in this order): `epoch`,
    the `dashboard` figure of that epoch (every epoch: the newest observation always shows the current one),
    `progress` and `eta` as text ("15 min 07 s"), the curves with `eta_s` (seconds, for code), each loss term, and
    the sample views (markdown images) on the epochs they were drawn (no constants)."""
    out: dict = {"epoch": record.epoch}
    figures = dict(record.sample_figures)
    dashboard = figures.pop(DASHBOARD, None)
    if dashboard and Path(dashboard).is_file():
        out[DASHBOARD] = markdown_image(dashboard, f"dashboard, epoch {record.epoch}/{record.epochs}")
    out["progress"] = record.progress
    if record.eta_s is not None:
        out["eta"] = duration(record.eta_s)
    out |= {k: rounded(value) for k in OBSERVED if (value := getattr(record, k)) is not None}
    out |= term_metadata(record)
    for split, path in figures.items():
        if Path(path).is_file():
            out[f"samples_{split}"] = markdown_image(path, f"{split} samples: true vs predicted")
    return out


class LiveCurves:
    """The loss-curve figure (epoch on x) refreshed while training runs, for the per-epoch observation: after
    every `every_epochs` epochs or `every_s` seconds, whichever comes first, but never more often than keeps the
    drawing under `max_share` of the wall time (drawing costs ~0.1-0.3 s; a quick epoch a few seconds)."""

    def __init__(self, path: str | Path, history: list[EpochRecord] = (), every_epochs: int = 5,
                 every_s: float = 120.0, max_share: float = 0.01):
        self.path, self.every_epochs, self.every_s, self.max_share = Path(path), every_epochs, every_s, max_share
        self.history = list(history)
        self.last_epoch = max((h.epoch for h in self.history), default=0)
        self.last_t, self.cost = time.perf_counter(), 0.0

    @classmethod
    def for_run(cls, run_dir: Path, **kwargs) -> "LiveCurves":
        """Seeded with the epochs a resumed run already has in its metrics.jsonl."""
        log = Path(run_dir) / FILENAME
        return cls(Path(run_dir) / "loss_curves_live.png", epoch_history(read_records(log)) if log.is_file() else [],
                   **kwargs)

    def update(self, record: EpochRecord) -> str | None:
        """Take an epoch record; the figure as markdown when one is due, else None."""
        self.history.append(record)
        since = time.perf_counter() - self.last_t
        due = record.epoch - self.last_epoch >= self.every_epochs or since >= self.every_s
        if not due or since < self.cost / self.max_share:
            return None
        t = time.perf_counter()
        plot_loss_curves(self.history, self.path,
                         title=f"Training curves so far (epoch {record.epoch}/{record.epochs})")
        figure = markdown_image(self.path, f"loss curves, epoch {record.epoch}")
        self.last_t, self.last_epoch = time.perf_counter(), record.epoch
        self.cost = self.last_t - t
        return figure


def cancellation(run_dir: Path) -> dict:
    """What a terminated run leaves: where it stopped (its stop record: the batch of a graceful stop; else the last
    finished epoch in metrics.jsonl), its checkpoint and how to go on. {"cancelled", "cancelled_at_epoch" (complete
    epochs), "last_checkpoint" (None when none was written), "progress", "resume_config" (None without a stop
    record)}."""
    log = Path(run_dir) / FILENAME
    records = read_records(log) if log.is_file() else []
    history = epoch_history(records)
    tail = records[max((i for i, r in enumerate(records) if isinstance(r, EpochRecord)), default=-1) + 1:]
    stop = next((r for r in reversed(tail) if isinstance(r, StopRecord)), None)  # this session's, after its epochs
    last = Path(run_dir) / "last.pt"
    done, total = (history[-1].epoch, history[-1].epochs) if history else (0, None)
    where = f"epoch {done}/{total}" if total else "before its first epoch ended"
    if stop is not None:
        done, where = stop.complete_epochs, f"epoch {stop.epoch}/{stop.epochs}, batch {stop.batch}/{stop.batches}"
    then = (f"its last checkpoint {last} resumes it (re-execute this run)" if last.is_file()
            else "no checkpoint was written")
    text = f"cancelled at {where}: {then}"
    return {"cancelled": text, "cancelled_at_epoch": done,
            "last_checkpoint": str(last) if last.is_file() else None, "progress": text,
            "resume_config": stop.resume_config if stop is not None else None}


def progress_line(record: ProgressRecord) -> str:
    """The progress text (it names the batch) and the loss of the batches since the previous line."""
    loss = f" · train loss {record.train_loss:.4g}" if record.train_loss is not None else ""
    return f"{record.progress}{loss}"


def final_metadata(metrics: RunMetrics, config: RunConfig) -> dict[str, tuple[str, object]]:
    """The materialization's metadata as {key: (type, value)}; types: float, int, text, path, md. Ordered for
    people: the headline numbers, then the figures (the UI lists metadata in this order), then each loss term,
    the field metrics and the bookkeeping."""
    m = metrics
    init = {}
    if m.init_from:  # fine-tuned: where the weights came from and what did not fit
        init = {"init_from": ("path", m.init_from), "init_skipped": ("text", ", ".join(m.init_skipped) or "none")}
    figures = {"predictions": ("md", markdown_image(Path(m.predictions), "validation: true vs predicted")),
               "loss_curves": ("md", markdown_image(Path(m.loss_curves), "loss curves"))}
    if Path(m.predictions_train).is_file():
        figures["predictions_train"] = ("md", markdown_image(Path(m.predictions_train), "training: true vs predicted"))
    tensorboard = {}
    if m.tensorboard:
        tensorboard = {"tensorboard": ("path", m.tensorboard),
                       "tensorboard_command": ("text", f"tensorboard --logdir {Path(m.run_dir).parent}")}
    counts = {k: ("int", getattr(m, k)) for k in ("trainable_params", "frozen_params") if getattr(m, k) is not None}
    return {
        # percent: 100 x val_mse / baseline_val_mse (check_beats_baseline states the same ratio as a fraction)
        "val_mse_pct_of_baseline": ("float", percent(m.mse_vs_baseline)),
        "val_mse": ("float", rounded(m.val_mse)),
        "val_pearson": ("float", rounded(m.val_pearson)),
        "baseline_val_mse": ("float", rounded(m.baseline_val_mse)),
        **figures,
        "model_card": ("md", model_card(config, m)),
    } | init | {
        "val_mae": ("float", rounded(m.val_mae)),
        **{f"val_loss_{name}": ("float", rounded(v)) for name, v in m.val_terms.items()},
        **{k: ("float", rounded(getattr(m, k))) for k in FIELD_KEYS if getattr(m, k) is not None},
        "epochs_completed": ("int", m.epochs_completed),
        "best_val_loss_epoch": ("int", m.best_epoch),  # the checkpoint kept: lowest validation loss
        "n_params": ("int", m.n_params),
        **counts,
        **({"stopped_early_at_epoch": ("int", m.stopped_at_epoch)} if m.stopped_early else {}),
        "samples_per_s": ("float", rounded(m.samples_per_s)),
        "device": ("text", m.device),
        "train_samples": ("int", m.train_samples),
        "val_samples": ("int", m.val_samples),
        "model": ("text", config.model.name),
        "loss": ("text", config.loss.name),
        "checkpoint": ("path", m.best_checkpoint),
        "run_dir": ("path", m.run_dir),
        "metrics_log": ("path", m.metrics_log),
    } | tensorboard
