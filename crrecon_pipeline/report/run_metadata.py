"""What trained_model reports, as plain data: the same keys whether it trained in-process or in torchrun ranks
under Dagster Pipes. Values are (type, value) pairs; the Dagster layer turns them into MetadataValues and the
Pipes worker into Pipes metadata, so neither restates the keys. No Dagster import here."""

from __future__ import annotations

import time
from pathlib import Path

from crrecon_pipeline.numbers import percent, rounded
from crrecon_pipeline.plots import markdown_image, plot_loss_curves
from crrecon_pipeline.report.modelcard import model_card
from crrecon_pipeline.train import records
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.metrics import PIXELS

FIELD_KEYS = (tuple(f"val_mse_{p}" for p in PIXELS)
              + ("val_peak_error_nm", "val_routing_error", "val_routing_efficiency"))
SAMPLE_FIGURES = ("samples_val", "samples_train")
OBSERVED = ("epoch", "train_loss", "val_loss", "best_val", "lr", "samples_per_s", "eta_s")


def term_metadata(record: dict) -> dict:
    """Each weighted loss term as its own number: `train_loss_<term>`, `val_loss_<term>` (they sum to the loss)."""
    return {f"{split}_loss_{name}": rounded(value) for split in ("train", "val")
            for name, value in (record.get(f"{split}_terms") or {}).items() if value is not None}


def observation_metadata(record: dict) -> dict:
    """An epoch record -> the per-epoch observation: the curves, each loss term, `progress` text and `eta_s`, and
    the sample views (markdown images) on the epochs they were drawn (no constants)."""
    out = {k: (record[k] if k == "epoch" else rounded(record[k])) for k in OBSERVED if record.get(k) is not None}
    out |= term_metadata(record)
    for split, path in (record.get("sample_figures") or {}).items():
        if Path(path).is_file():
            out[f"samples_{split}"] = markdown_image(path, f"{split} samples: true vs predicted")
    return out | {"progress": record["progress"]}


class LiveCurves:
    """The loss-curve figure (epoch on x) refreshed while training runs, for the per-epoch observation: after
    every `every_epochs` epochs or `every_s` seconds, whichever comes first, but never more often than keeps the
    drawing under `max_share` of the wall time (drawing costs ~0.1-0.3 s; a quick epoch a few seconds)."""

    CURVES = ("epoch", "train_loss", "val_loss", "lr")

    def __init__(self, path: str | Path, history: list[dict] = (), every_epochs: int = 5, every_s: float = 120.0,
                 max_share: float = 0.01):
        self.path, self.every_epochs, self.every_s, self.max_share = Path(path), every_epochs, every_s, max_share
        self.history = [{k: h[k] for k in self.CURVES} for h in history]
        self.last_epoch = max((h["epoch"] for h in self.history), default=0)
        self.last_t, self.cost = time.perf_counter(), 0.0

    @classmethod
    def for_run(cls, run_dir: Path, **kwargs) -> "LiveCurves":
        """Seeded with the epochs a resumed run already has in its metrics.jsonl."""
        log = Path(run_dir) / records.FILENAME
        return cls(Path(run_dir) / "loss_curves_live.png", records.epoch_history(records.read_records(log))
                   if log.is_file() else [], **kwargs)

    def update(self, record: dict) -> str | None:
        """Take an epoch record; the figure as markdown when one is due, else None."""
        # null: diverged
        self.history.append({k: float("nan") if record[k] is None else record[k] for k in self.CURVES})
        since = time.perf_counter() - self.last_t
        due = record["epoch"] - self.last_epoch >= self.every_epochs or since >= self.every_s
        if not due or since < self.cost / self.max_share:
            return None
        t = time.perf_counter()
        plot_loss_curves(self.history, self.path,
                         title=f"Training curves so far (epoch {record['epoch']}/{record['epochs']})")
        figure = markdown_image(self.path, f"loss curves, epoch {record['epoch']}")
        self.last_t, self.last_epoch = time.perf_counter(), record["epoch"]
        self.cost = self.last_t - t
        return figure


def cancellation(run_dir: Path) -> dict:
    """What a terminated run leaves: the last finished epoch (metrics.jsonl), its checkpoint and how to go on.
    {"cancelled", "cancelled_at_epoch", "last_checkpoint" (None when no epoch finished), "progress"}."""
    log = Path(run_dir) / records.FILENAME
    history = records.epoch_history(records.read_records(log)) if log.is_file() else []
    last = Path(run_dir) / "last.pt"
    done, total = (history[-1]["epoch"], history[-1]["epochs"]) if history else (0, None)
    where = f"epoch {done}/{total}" if total else "before its first epoch ended"
    then = (f"its last checkpoint {last} resumes it (re-execute this run)" if last.is_file()
            else "no checkpoint was written")
    text = f"cancelled at {where}: {then}"
    return {"cancelled": text, "cancelled_at_epoch": done,
            "last_checkpoint": str(last) if last.is_file() else None, "progress": text}


def progress_line(record: dict) -> str:
    """The progress text (it names the batch) and the loss of the batches since the previous line."""
    loss = f" · train loss {record['train_loss']:.4g}" if record.get("train_loss") is not None else ""
    return f"{record['progress']}{loss}"


def final_metadata(metrics: dict, config: RunConfig) -> dict[str, tuple[str, object]]:
    """The materialization's metadata as {key: (type, value)}; types: float, int, text, path, md. Ordered for
    people: the headline numbers, then the figures (the UI lists metadata in this order), then each loss term,
    the field metrics and the bookkeeping."""
    init = {}
    if metrics.get("init_from"):  # fine-tuned: where the weights came from and what did not fit
        init = {"init_from": ("path", metrics["init_from"]),
                "init_skipped": ("text", ", ".join(metrics.get("init_skipped") or []) or "none")}
    figures = {"predictions": ("md", markdown_image(Path(metrics["predictions"]), "validation: true vs predicted")),
               "loss_curves": ("md", markdown_image(Path(metrics["loss_curves"]), "loss curves"))}
    if Path(metrics.get("predictions_train", "")).is_file():
        figures["predictions_train"] = ("md", markdown_image(Path(metrics["predictions_train"]),
                                                             "training: true vs predicted"))
    tensorboard = {}
    if metrics.get("tensorboard"):
        tensorboard = {"tensorboard": ("path", metrics["tensorboard"]),
                       "tensorboard_command": ("text", f"tensorboard --logdir {Path(metrics['run_dir']).parent}")}
    return {
        # percent: 100 x val_mse / baseline_val_mse (check_beats_baseline states the same ratio as a fraction)
        "val_mse_pct_of_baseline": ("float", percent(metrics["val_mse"] / metrics["baseline_val_mse"])),
        "val_mse": ("float", rounded(metrics["val_mse"])),
        "val_pearson": ("float", rounded(metrics["val_pearson"])),
        "baseline_val_mse": ("float", rounded(metrics["baseline_val_mse"])),
        **figures,
        "model_card": ("md", model_card(config, metrics)),
    } | init | {
        "val_mae": ("float", rounded(metrics["val_mae"])),
        **{f"val_loss_{name}": ("float", rounded(v)) for name, v in (metrics.get("val_terms") or {}).items()},
        **{k: ("float", rounded(metrics[k])) for k in FIELD_KEYS if k in metrics},
        "epochs_completed": ("int", metrics["epochs_completed"]),
        "best_val_loss_epoch": ("int", metrics["best_epoch"]),  # the checkpoint kept: lowest validation loss
        "n_params": ("int", metrics["n_params"]),
        **{k: ("int", metrics[k]) for k in ("trainable_params", "frozen_params") if k in metrics},
        **({"stopped_early_at_epoch": ("int", metrics["stopped_at_epoch"])} if metrics.get("stopped_early") else {}),
        "samples_per_s": ("float", rounded(metrics["samples_per_s"])),
        "device": ("text", metrics["device"]),
        "train_samples": ("int", metrics["train_samples"]),
        "val_samples": ("int", metrics["val_samples"]),
        "model": ("text", config.model.name),
        "loss": ("text", config.loss.name),
        "checkpoint": ("path", metrics["best_checkpoint"]),
        "run_dir": ("path", metrics["run_dir"]),
        "metrics_log": ("path", metrics["metrics_log"]),
    } | tensorboard
