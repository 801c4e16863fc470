"""mse_pearson (the research code's): w_mse · MSE + w_corr · mean(1 − r), r the Pearson correlation of each pixel
spectrum along wavelength (every spectrum counts, eps 1e-8 in the denominator), the B pixel's squared errors
weighted by blue_weight."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.research.common import ClampedTermLoss, blue_weighted_mean, pearson_loss


class MSEPearson(ClampedTermLoss):
    FORMULA = "L = clamp({w_mse} · MSE_B(ŷ, y) + {w_corr} · mean(1 − r), 0, 100);  B pixel weight {blue_weight}"

    def __init__(self, w_mse: float = 1.0, w_corr: float = 0.2, blue_weight: float = 1.0):
        super().__init__()
        self.w_mse, self.w_corr, self.blue_weight = float(w_mse), float(w_corr), float(blue_weight)

    def weighted_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        if self.w_mse:
            out["mse"] = self.w_mse * blue_weighted_mean((pred - target) ** 2, self.blue_weight)
        if self.w_corr:  # here every spectrum counts and r is not clamped
            out["corr"] = self.w_corr * pearson_loss(pred, target, eps=1e-8, norm_floor=None, clamp_r=False)
        return out
