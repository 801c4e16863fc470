"""abs_dc_shape (the research code's): SmoothL1 on the values + SmoothL1 on each pixel spectrum's mean over
wavelength (its DC level) + a shape term on the first difference along wavelength: SmoothL1 with shape_beta
(`smoothl1`, the default), MSE (`mse`), or mean(1 − r) of its Pearson correlation (`pearson`: r over the spectra
whose centred norms exceed corr_norm_floor, denominator at least corr_denom_floor, no B weight). The B pixel is
weighted by blue_weight elsewhere. (The research code treats any other shape_kind as smoothl1; here it is refused.)"""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.research.common import ClampedTermLoss, blue_weighted_mean, pearson_loss, smooth_l1

SHAPE_KINDS = ("smoothl1", "mse", "pearson")


class AbsDCShape(ClampedTermLoss):
    FORMULA = ("L = clamp({w_abs} · SL1_B(ŷ, y) + {w_dc} · SL1_B(mean_λ ŷ, mean_λ y) + {w_shape} · "
               "shape_{shape_kind}(Δλ ŷ, Δλ y), 0, 100);  SmoothL1 beta {beta} (shape {shape_beta}), B pixel weight "
               "{blue_weight}")

    def __init__(self, w_abs: float = 1.0, w_dc: float = 0.5, w_shape: float = 0.2, beta: float = 0.02,
                 blue_weight: float = 1.0, corr_eps: float = 1e-8, corr_norm_floor: float = 1e-3,
                 corr_denom_floor: float = 1e-4, shape_kind: str = "smoothl1", shape_beta: float = 0.02):
        super().__init__()
        if shape_kind not in SHAPE_KINDS:
            raise ValueError(f"shape_kind must be one of {', '.join(SHAPE_KINDS)}, got {shape_kind!r}")
        self.w_abs, self.w_dc, self.w_shape = float(w_abs), float(w_dc), float(w_shape)
        self.beta, self.blue_weight, self.shape_kind, self.shape_beta = float(beta), float(blue_weight), shape_kind, \
            float(shape_beta)
        self.corr_eps, self.corr_norm_floor, self.corr_denom_floor = float(corr_eps), float(corr_norm_floor), \
            float(corr_denom_floor)

    def _shape(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape[-1] < 2:
            return pred.new_zeros(())
        dp, dt = torch.diff(pred, dim=-1), torch.diff(target, dim=-1)  # (B, 2, 2, L-1)
        if self.shape_kind == "pearson":
            return pearson_loss(dp, dt, self.corr_eps, self.corr_norm_floor, denom_floor=self.corr_denom_floor)
        if self.shape_kind == "mse":
            return blue_weighted_mean((dp - dt) ** 2, self.blue_weight)
        return blue_weighted_mean(smooth_l1(dp - dt, self.shape_beta), self.blue_weight)

    def weighted_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dc = pred.mean(-1, keepdim=True) - target.mean(-1, keepdim=True)  # (B, 2, 2, 1)
        parts = {"abs": (self.w_abs, lambda: blue_weighted_mean(smooth_l1(pred - target, self.beta), self.blue_weight)),
                 "dc": (self.w_dc, lambda: blue_weighted_mean(smooth_l1(dc, self.beta), self.blue_weight)),
                 "shape": (self.w_shape, lambda: self._shape(pred, target))}
        return {name: w * value() for name, (w, value) in parts.items() if w}
