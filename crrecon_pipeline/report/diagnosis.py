"""The diagnosis of a training run from its epoch records (the research code's optimize_hyperparams.py, made
explicit): trend metrics (best, improvement rate, plateau, overfitting gap, divergence, generalization gap), then
the problems they show, a subset of DIAGNOSES, each explained in EXPLAIN.

May import: numpy, train.records (the typed epoch and final records it reads) and the bottom modules; knows
nothing of files or configs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from crrecon_pipeline.train.records import EpochRecord, RunMetrics

DIAGNOSES = ("overfitting", "plateau", "divergence", "still_improving", "too_short", "not_learning")
WINDOW = 5  # epochs looked at for trends
MIN_EPOCHS = WINDOW  # fewer epochs than one trend window: too short to judge
NOT_LEARNING_MOVE = 0.05  # the val loss moved less than this over the whole run ...
NOT_LEARNING_RATIO = 0.9  # ... or the val MSE stays above this share of the mean-spectrum baseline's
EXPLAIN = {
    "overfitting": "validation loss rising while training loss falls",
    "plateau": f"validation loss flat over the last {WINDOW} epochs",
    "divergence": "non-finite or exploding loss",
    "still_improving": "validation loss still falling and the best epoch is the latest",
    "too_short": f"fewer than {MIN_EPOCHS} epochs: too few to judge a trend",
    "not_learning": f"validation loss moved less than {NOT_LEARNING_MOVE:.0%} over the run, or val MSE stays above "
                    f"{NOT_LEARNING_RATIO:.0%} of the mean-spectrum baseline's",
}


def _rel_change(a: float, b: float) -> float:
    """Relative improvement from a to b (positive = b is lower)."""
    return (a - b) / abs(a) if a and math.isfinite(a) and math.isfinite(b) else 0.0


@dataclass(frozen=True)
class Trends:
    """A run's trend metrics from its epoch records; a run with no epoch yet has only `epochs_completed` 0."""

    epochs_completed: int = 0
    total_epochs: int | None = None
    best_val: float | None = None
    best_epoch: int | None = None
    final_train: float = math.nan
    final_val: float = math.nan
    improvement_rate: float = 0.0  # relative val improvement per epoch over the last window
    window_improvement: float = 0.0  # best val of the last window against the best before it
    total_improvement: float = 0.0  # first finite val against the best
    generalization_gap: float = math.nan  # (val - train) / train at the end
    val_trend: float = 0.0
    train_trend: float = 0.0
    nonfinite_epochs: int = 0
    max_val_over_best: float = math.nan
    epochs_since_best: int | None = None
    mse_vs_baseline: float | None = None  # from the final record, when the run has one

    def to_json(self) -> dict:
        return asdict(self)


def compute_metrics(records: list[EpochRecord], final: RunMetrics | None = None) -> Trends:
    """Trend metrics of the epoch records; `final` (the run's final record) adds the val MSE's ratio to baseline."""
    if not records:
        return Trends()
    epochs = np.array([r.epoch for r in records])
    train = np.array([r.train_loss for r in records])
    val = np.array([r.val_loss for r in records])
    finite = np.isfinite(val)
    best_i = int(np.nanargmin(np.where(finite, val, np.nan))) if finite.any() else None
    w = min(WINDOW, len(records) - 1) if len(records) > 1 else 0
    recent_val, recent_train = val[-w - 1:], train[-w - 1:]
    improvement = _rel_change(recent_val[0], recent_val[-1]) / max(w, 1) if w else 0.0
    best_before = float(np.nanmin(val[:-w])) if w and np.isfinite(val[:-w]).any() else float("nan")
    gap = (val[-1] - train[-1]) / abs(train[-1]) if math.isfinite(train[-1]) and train[-1] else float("nan")
    first_val = val[finite][0] if finite.any() else float("nan")
    return Trends(
        epochs_completed=len(records),
        total_epochs=int(records[-1].epochs),
        best_val=float(val[best_i]) if best_i is not None else None,
        best_epoch=int(epochs[best_i]) if best_i is not None else None,
        final_train=float(train[-1]),
        final_val=float(val[-1]),
        improvement_rate=float(improvement),
        window_improvement=float(_rel_change(best_before, float(np.nanmin(recent_val))) if w else 0.0),
        total_improvement=float(_rel_change(first_val, float(np.nanmin(val[finite])))) if finite.any() else 0.0,
        generalization_gap=float(gap),
        val_trend=float(_rel_change(recent_val[0], recent_val[-1])) if w else 0.0,
        train_trend=float(_rel_change(recent_train[0], recent_train[-1])) if w else 0.0,
        nonfinite_epochs=int((~np.isfinite(train) | ~finite).sum()),
        max_val_over_best=(float(np.nanmax(val[best_i:]) / val[best_i])
                           if best_i is not None and val[best_i] > 0 else float("nan")),
        epochs_since_best=int(epochs[-1] - epochs[best_i]) if best_i is not None else None,
        mse_vs_baseline=final.mse_vs_baseline if final is not None and final.baseline_val_mse else None,
    )


def diagnose(m: Trends) -> list[str]:
    if not m.epochs_completed:
        return []
    found = []
    n = m.epochs_completed
    diverged = m.nonfinite_epochs > 0 or m.max_val_over_best > 3.0 or (
        m.train_trend < -0.5 and n > 2)  # training loss up by more than half over the window
    if diverged:
        found.append("divergence")
    if n >= 4 and not diverged and m.val_trend < -0.05 and m.train_trend > 0.0 and m.epochs_since_best >= 2:
        found.append("overfitting")
    if n >= WINDOW + 1 and not diverged and abs(m.window_improvement) < 0.01 and "overfitting" not in found:
        found.append("plateau")
    ratio = m.mse_vs_baseline
    not_learning = not diverged and ((n >= 2 and m.total_improvement < NOT_LEARNING_MOVE)
                                     or (ratio is not None and ratio > NOT_LEARNING_RATIO))
    if not_learning and "plateau" in found:  # flat from the start: it never learned, rather than stalled
        found.remove("plateau")
    if not diverged and "overfitting" not in found and "plateau" not in found and m.window_improvement > 0.01 \
            and m.epochs_since_best <= 1 and not not_learning:
        found.append("still_improving")
    if not diverged and n < MIN_EPOCHS:
        found.append("too_short")
    if not_learning:
        found.append("not_learning")
    return found
