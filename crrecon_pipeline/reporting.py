"""What trained_model reports, as plain data: the same keys whether it trained in-process or in torchrun ranks
under Dagster Pipes. Values are (type, value) pairs; the Dagster layer turns them into MetadataValues and the
Pipes worker into Pipes metadata, so neither restates the keys. No Dagster import here."""

from __future__ import annotations

from pathlib import Path

from .modelcard import model_card
from .plots import markdown_image

OBSERVED = ("epoch", "train_loss", "val_loss", "best_val", "lr", "samples_per_s", "eta_s")


def rounded(x: float) -> float:
    """~4 significant figures: readable, and still a number the Plots tab can draw."""
    return float(f"{x:.4g}")


def observation_metadata(record: dict) -> dict:
    """An epoch record -> the per-epoch observation: the curves, `progress` text and `eta_s` (no constants)."""
    out = {k: (record[k] if k == "epoch" else rounded(record[k])) for k in OBSERVED if record.get(k) is not None}
    return out | {"progress": record["progress"]}


def progress_line(record: dict) -> str:
    return f"{record['progress']} (batch {record['batch']}/{record['batches']})"


def final_metadata(metrics: dict, config: dict) -> dict[str, tuple[str, object]]:
    """The materialization's metadata as {key: (type, value)}; types: float, int, text, path, md."""
    init = {}
    if metrics.get("init_from"):  # fine-tuned: where the weights came from and what did not fit
        init = {"init_from": ("path", metrics["init_from"]),
                "init_skipped": ("text", ", ".join(metrics.get("init_skipped") or []) or "none")}
    return init | {
        "val_mse": ("float", rounded(metrics["val_mse"])),
        "baseline_val_mse": ("float", rounded(metrics["baseline_val_mse"])),
        "mse_vs_baseline": ("float", rounded(metrics["val_mse"] / metrics["baseline_val_mse"])),
        "val_pearson": ("float", rounded(metrics["val_pearson"])),
        "val_mae": ("float", rounded(metrics["val_mae"])),
        "epochs_completed": ("int", metrics["epochs_completed"]),
        "best_epoch": ("int", metrics["best_epoch"]),
        "n_params": ("int", metrics["n_params"]),
        "samples_per_s": ("float", rounded(metrics["samples_per_s"])),
        "device": ("text", metrics["device"]),
        "train_samples": ("int", metrics["train_samples"]),
        "val_samples": ("int", metrics["val_samples"]),
        "model": ("text", config["model"]["name"]),
        "loss": ("text", config["loss"]["name"]),
        "checkpoint": ("path", metrics["best_checkpoint"]),
        "run_dir": ("path", metrics["run_dir"]),
        "metrics_log": ("path", metrics["metrics_log"]),
        "model_card": ("md", model_card(config, metrics)),
        "loss_curves": ("md", markdown_image(Path(metrics["loss_curves"]), "loss curves")),
        "predictions": ("md", markdown_image(Path(metrics["predictions"]), "true vs predicted spectra")),
    }
