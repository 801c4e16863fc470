"""adaptive_spectral (the research code's v5): w_mse·MSE + w_mae·MAE + w_rel·relMSE + w_grad·MSE(Δλ) +
w_grad_mae·MAE(Δλ) + w_curv_mae·MAE(Δλ²), every mean with the B pixel weighted by blue_weight; relMSE =
mean(clamp((ŷ − y)/(|y| + rel_eps), ±rel_max)²); Δλ² the second difference ŷ[i+1] − 2ŷ[i] + ŷ[i−1]. A term runs
only when its weight is > 0.

use_uncertainty (its "auto-balancing"): the MSE, relMSE and Δλ-MSE terms are divided by an exponential moving
average of their own raw value (ema ← m·ema + (1 − m)·value, the first value taken as is; updated on every call,
validation included, before dividing). The averages are the buffers ema_mse, ema_rel, ema_grad: they are the
loss's state dict, saved with a checkpoint (the research trainer's `loss_fn` entry) and restored from it.
w_sam, w_ffl, ffl_alpha, ffl_use_full_spectrum and sam_eps are accepted and ignored, as there (older configs)."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.research.common import ClampedTermLoss, blue_weighted_mean

BALANCED = {"mse": "ema_mse", "rel": "ema_rel", "grad": "ema_grad"}


class AdaptiveSpectral(ClampedTermLoss):
    IGNORED_PARAMS = ("w_sam", "w_ffl", "ffl_alpha", "ffl_use_full_spectrum", "sam_eps")  # accepted, no effect
    FORMULA = ("L = clamp({w_mse}·MSE + {w_mae}·MAE + {w_rel}·relMSE(eps {rel_eps}, |·| ≤ {rel_max}) "
               "+ {w_grad}·MSE(Δλ) + {w_grad_mae}·MAE(Δλ) + {w_curv_mae}·MAE(Δλ²), 0, 100);  "
               "B pixel weight {blue_weight}; EMA-balanced {use_uncertainty} (momentum {ema_momentum})")

    def __init__(self, w_mse: float = 1.0, w_mae: float = 0.0, w_rel: float = 1.0, w_grad: float = 1.0,
                 w_grad_mae: float = 0.0, w_curv_mae: float = 0.0, rel_eps: float = 1e-4, rel_max: float = 10.0,
                 blue_weight: float = 2.0, use_uncertainty: bool = False, ema_momentum: float = 0.99,
                 w_sam: float = 1.0, w_ffl: float = 1.0, ffl_alpha: float = 1.0, ffl_use_full_spectrum: bool = True,
                 sam_eps: float = 1e-7):
        super().__init__()
        self.w_mse, self.w_mae, self.w_rel = float(w_mse), float(w_mae), float(w_rel)
        self.w_grad, self.w_grad_mae, self.w_curv_mae = float(w_grad), float(w_grad_mae), float(w_curv_mae)
        self.rel_eps, self.rel_max, self.blue_weight = float(rel_eps), float(rel_max), float(blue_weight)
        self.use_uncertainty, self.ema_momentum = bool(use_uncertainty), float(ema_momentum)
        if self.use_uncertainty:
            for buffer in BALANCED.values():
                self.register_buffer(buffer, torch.tensor(-1.0))  # < 0: not seen a value yet

    def _raw(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """{name: (weight, unweighted term)} for the terms with a positive weight."""
        err = pred - target
        d1 = torch.diff(pred, dim=-1) - torch.diff(target, dim=-1)
        d2 = torch.diff(pred, n=2, dim=-1) - torch.diff(target, n=2, dim=-1)
        rel = lambda: ((err / (target.abs() + self.rel_eps)).clamp(-self.rel_max, self.rel_max)) ** 2  # noqa: E731
        values = {"mse": (self.w_mse, lambda: err ** 2), "mae": (self.w_mae, err.abs),
                  "rel": (self.w_rel, rel), "grad": (self.w_grad, lambda: d1 ** 2),
                  "grad_mae": (self.w_grad_mae, d1.abs), "curv_mae": (self.w_curv_mae, d2.abs)}
        return {k: (w, blue_weighted_mean(f(), self.blue_weight)) for k, (w, f) in values.items() if w > 0}

    @torch.no_grad()
    def _update(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """The EMA of a term's raw value, updated in place; a term that does not run counts as 0."""
        ema = getattr(self, BALANCED[name])
        ema.copy_(torch.where(ema < 0, value, ema * self.ema_momentum + (1.0 - self.ema_momentum) * value))
        return ema.clone()

    def term_weights(self) -> dict[str, float]:
        """EMA-balanced terms have no constant weight: left out (their raw value is not term / w)."""
        weights = super().term_weights()
        return {k: w for k, w in weights.items() if not (self.use_uncertainty and k in BALANCED)}

    def weighted_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self._raw(pred, target)
        if self.use_uncertainty:
            for name in BALANCED:  # the research code updates all three, with 0 for a term that did not run
                value = raw[name][1].detach() if name in raw else pred.new_zeros(())
                ema = self._update(name, value)
                if name in raw:
                    raw[name] = (raw[name][0], raw[name][1] / (ema + 1e-8))
        return {name: w * value for name, (w, value) in raw.items()}
