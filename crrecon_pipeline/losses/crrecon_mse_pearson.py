"""crrecon_mse_pearson, this project's default loss: w_mse * MSE + w_corr * (1 - Pearson), Pearson per spectrum
(shape agreement, invariant to scale and offset). The research code's `mse_pearson` adds a B-pixel weight and
clamps; this plain form keeps a name of its own."""

import torch

from crrecon_pipeline.losses.terms import TermLoss


def pearson_per_spectrum(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, 2, 2, L) -> (B, 2, 2) correlation along the wavelength axis."""
    p = pred - pred.mean(-1, keepdim=True)
    t = target - target.mean(-1, keepdim=True)
    return (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1) + eps)


class CrreconMSEPearson(TermLoss):
    FORMULA = ("L = {w_mse} · MSE(ŷ, y) + {w_corr} · (1 − r̄),  "
               "r̄ = mean Pearson correlation of ŷ and y along wavelength, per pixel spectrum")

    def __init__(self, w_mse: float = 1.0, w_corr: float = 0.2):
        super().__init__()
        self.w_mse, self.w_corr = w_mse, w_corr

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"mse": self.w_mse * torch.mean((pred - target) ** 2)}
        if self.w_corr:
            out["corr"] = self.w_corr * (1 - pearson_per_spectrum(pred, target).mean())
        return out
