"""weighted_smooth (the research code's): mean(w_pixel · (ŷ − y)²) + lambda1 · MSE of the first differences along
wavelength + lambda2 · MSE of the second differences. channel_weights are [R, G1, G2, B] in the (2, 2) layout's
order (default [1.0, 0.8, 0.8, 1.2]: B weighted 1.2). No input clamp and no clamp of the total, as there."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.terms import TermLoss

DEFAULT_CHANNEL_WEIGHTS = (1.0, 0.8, 0.8, 1.2)


class WeightedSmooth(TermLoss):
    FORMULA = ("L = mean(w · (ŷ − y)²) + {lambda1} · MSE(Δλ) + {lambda2} · MSE(Δλ²);  "
               "w = {channel_weights} over [R, G1, G2, B]")

    def __init__(self, lambda1: float = 0.1, lambda2: float = 0.05,
                 channel_weights: list[float] | tuple[float, ...] | None = None):
        super().__init__()
        weights = DEFAULT_CHANNEL_WEIGHTS if channel_weights is None else tuple(float(w) for w in channel_weights)
        if len(weights) != 4:
            raise ValueError(f"channel_weights must be 4 numbers [R, G1, G2, B], got {channel_weights}")
        self.lambda1, self.lambda2, self.channel_weights = float(lambda1), float(lambda2), list(weights)
        self.register_buffer("pixel", torch.tensor(weights).view(2, 2, 1), persistent=False)

    def term_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "d1": self.lambda1, "d2": self.lambda2}

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        pred, target = pred.float(), target.float()
        d1 = torch.diff(pred, dim=-1) - torch.diff(target, dim=-1)  # (B, 2, 2, L-1)
        d2 = torch.diff(pred, n=2, dim=-1) - torch.diff(target, n=2, dim=-1)  # (B, 2, 2, L-2)
        return {"mse": ((pred - target) ** 2 * self.pixel.to(pred.device)).mean(),
                "d1": self.lambda1 * (d1 ** 2).mean(), "d2": self.lambda2 * (d2 ** 2).mean()}
