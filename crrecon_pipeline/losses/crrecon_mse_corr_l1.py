"""crrecon_mse_corr_l1, this project's take on the research code's mse_corr_l1: w_mse·MSE + w_corr·(1 − r̄) +
w_l1·MAE (`norm_floor` where the research loss has `corr_norm_floor`, no `corr_eps`; registered under its own name
so that `mse_corr_l1` is the research code's own).

Why the L1 term: the correlation term matches the spectral shape but is blind to scale and offset, and the MSE's
gradient vanishes on the small residuals of a well-fitted model; the MAE keeps pulling them to zero. Spectra that
are flat (norm of the centred spectrum <= norm_floor, in prediction or target) have no defined correlation and are
left out of r̄ (its mean is over the others; 0 when none is left), which the research code does too. blue_weight
scales the B pixel's squared and absolute errors (the research code's weight, applied to B only)."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.terms import TermLoss


class CrreconMSECorrL1(TermLoss):
    FORMULA = ("L = {w_mse} · MSE(ŷ, y) + {w_corr} · (1 − r̄) + {w_l1} · MAE(ŷ, y);  B pixel weight {blue_weight}; "
               "r̄ = mean Pearson correlation along wavelength over the spectra not flatter than {norm_floor}")

    def __init__(self, w_mse: float = 1.0, w_corr: float = 0.2, w_l1: float = 0.1, blue_weight: float = 1.0,
                 norm_floor: float = 1e-6):
        super().__init__()
        if blue_weight < 0 or norm_floor < 0:
            raise ValueError(f"blue_weight and norm_floor must be >= 0, got {blue_weight}, {norm_floor}")
        self.w_mse, self.w_corr, self.w_l1 = w_mse, w_corr, w_l1
        self.norm_floor = norm_floor
        pixel = torch.ones(2, 2, 1)
        pixel[1, 1] = blue_weight  # (2, 2, 1): the B pixel of the Bayer group (R G / G B)
        self.register_buffer("pixel", pixel, persistent=False)

    def _correlation_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """mean(1 − r) over the spectra with a defined correlation; no host sync (the mask is a weight)."""
        p = pred - pred.mean(-1, keepdim=True)
        t = target - target.mean(-1, keepdim=True)
        p_norm, t_norm = p.norm(dim=-1), t.norm(dim=-1)  # (B, 2, 2)
        r = ((p * t).sum(-1) / (p_norm * t_norm + 1e-8)).clamp(-1.0, 1.0)
        valid = ((p_norm > self.norm_floor) & (t_norm > self.norm_floor)).to(r.dtype)
        return ((1 - r) * valid).sum() / valid.sum().clamp(min=1.0)

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        err = pred - target  # (B, 2, 2, L)
        weight = self.pixel.to(err.device, err.dtype)
        out = {}
        if self.w_mse:
            out["mse"] = self.w_mse * (weight * err ** 2).mean()
        if self.w_corr:
            out["corr"] = self.w_corr * self._correlation_loss(pred, target)
        if self.w_l1:
            out["l1"] = self.w_l1 * (weight * err.abs()).mean()
        return out
