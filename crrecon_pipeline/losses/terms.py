"""The contract every loss keeps: named terms that sum to the total.

A loss subclasses TermLoss and implements `terms(pred, target)`, returning its WEIGHTED contributions by name
({"mse": w_mse * MSE, "corr": w_corr * (1 - r)}, ...); `forward` is their sum. So the training loop, the records and
every sink (the run log, Dagster, TensorBoard) can show which term dominates without knowing the loss, and the
per-term values always add up to the loss that was optimized. Terms with weight 0 are left out.

`term_weights()` names each term's weight, so a sink can show the raw (unweighted) value, term / weight, beside the
weighted one: read from the `w_<term>` attributes (the convention of the registered losses); a loss whose weights
live elsewhere overrides it, and a term without a constant weight (a clamp, an EMA-balanced term) is left out."""

from __future__ import annotations

import torch
from torch import nn


class TermLoss(nn.Module):
    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(self.terms(pred, target).values())).sum()

    def term_weights(self) -> dict[str, float]:
        """{term: its current weight}, read when asked (a weight changed mid-run is the new one)."""
        return {name[2:]: float(value) for name, value in vars(self).items()
                if name.startswith("w_") and isinstance(value, (int, float)) and not isinstance(value, bool)}
