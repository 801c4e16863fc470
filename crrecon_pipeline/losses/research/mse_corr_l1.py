"""mse_corr_l1 (the research code's): w_mse · MSE + w_corr · mean(1 − r) + w_l1 · MAE; r clamped to [−1, 1] and
averaged over the spectra whose centred norms exceed corr_norm_floor (0 when none); the B pixel's squared and
absolute errors weighted by blue_weight."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.research.common import ClampedTermLoss, blue_weighted_mean, pearson_loss


class MSECorrL1(ClampedTermLoss):
    FORMULA = ("L = clamp({w_mse} · MSE_B + {w_corr} · mean_valid(1 − r) + {w_l1} · MAE_B, 0, 100);  B pixel weight "
               "{blue_weight}; spectra flatter than {corr_norm_floor} left out of r")

    def __init__(self, w_mse: float = 1.0, w_corr: float = 0.2, w_l1: float = 0.1, blue_weight: float = 1.0,
                 corr_eps: float = 1e-8, corr_norm_floor: float = 1e-6):
        super().__init__()
        self.w_mse, self.w_corr, self.w_l1 = float(w_mse), float(w_corr), float(w_l1)
        self.blue_weight, self.corr_eps, self.corr_norm_floor = float(blue_weight), float(corr_eps), float(
            corr_norm_floor)

    def weighted_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        err, out = pred - target, {}
        if self.w_mse:
            out["mse"] = self.w_mse * blue_weighted_mean(err ** 2, self.blue_weight)
        if self.w_corr:
            out["corr"] = self.w_corr * pearson_loss(pred, target, self.corr_eps, self.corr_norm_floor)
        if self.w_l1:
            out["l1"] = self.w_l1 * blue_weighted_mean(err.abs(), self.blue_weight)
        return out
