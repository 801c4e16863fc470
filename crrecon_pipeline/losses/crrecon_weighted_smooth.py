"""crrecon_weighted_smooth: w_mse * MSE + w_smooth * mean squared difference of adjacent bins of the prediction
(the research code's `weighted_smooth` is another formula, with per-pixel weights and lambda1/lambda2)."""

import torch

from crrecon_pipeline.losses.terms import TermLoss


class CrreconWeightedSmooth(TermLoss):
    FORMULA = "L = {w_mse} · MSE(ŷ, y) + {w_smooth} · mean((ŷ[λ+1] − ŷ[λ])²)"

    def __init__(self, w_mse: float = 1.0, w_smooth: float = 0.1):
        super().__init__()
        self.w_mse, self.w_smooth = w_mse, w_smooth

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"mse": self.w_mse * torch.mean((pred - target) ** 2)}
        if self.w_smooth:
            out["smooth"] = self.w_smooth * torch.mean((pred[..., 1:] - pred[..., :-1]) ** 2)
        return out
