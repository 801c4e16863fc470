"""training.early_stopping: end a run whose validation loss stopped improving (fine-tuning on ~100 rows overfits
within tens of epochs). The counter is derived from the epoch history (stored in every checkpoint), so a resumed
run keeps it exactly, with no extra state to save."""

from __future__ import annotations

import math


def epochs_without_improvement(val_losses: list[float], min_delta: float) -> int:
    """Epochs since the last one whose loss was below the best before it by more than min_delta."""
    best, count = math.inf, 0
    for value in val_losses:
        if value < best - min_delta:
            best, count = value, 0
        else:
            count += 1
    return count


def exhausted(history: list, early_stopping) -> bool:
    """True when `history` (records.EpochRecord, one per epoch) has run out of patience; False when off."""
    if early_stopping is None or not history:
        return False
    losses = [h.val_loss for h in history]
    return epochs_without_improvement(losses, early_stopping.min_delta) >= early_stopping.patience
