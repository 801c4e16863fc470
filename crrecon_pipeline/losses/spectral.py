"""spectral: the research group's adaptive spectral loss (v5), every term named and weighted.

L = w_mse·MSE + w_mae·MAE + w_rel·relMSE + w_grad·MSE(Δ) + w_grad_mae·MAE(Δ) + w_curv_mae·MAE(Δ²)
relMSE = mean(min(|ŷ − y|² / (y² + eps), rel_max)); Δ, Δ²: first and second differences along wavelength.
Every mean is weighted per pixel (`pixel_weights` [R, G1, G2, B], normalized to mean 1; the research code's
blue_weight 2.0 is [1, 1, 1, 2]).

unit_free: each term is divided by its value for the training split's mean-spectrum predictor (set by the trainer
through `calibrate` before the first step), so w_* = 1 means "as much as this term's baseline", whatever the units
or the variance of the spectra (an MSE of spectra with variance 1e-3 is ~1e-3, a relative term ~1)."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.terms import TermLoss


class Spectral(TermLoss):
    FORMULA = ("L = {w_mse}·MSE + {w_mae}·MAE + {w_rel}·relMSE(eps {eps}, ≤ {rel_max}) + {w_grad}·MSE(Δλ) "
               "+ {w_grad_mae}·MAE(Δλ) + {w_curv_mae}·MAE(Δλ²); pixel weights {pixel_weights}; "
               "unit-free {unit_free}")

    def __init__(self, w_mse: float = 1.0, w_mae: float = 0.0, w_rel: float = 0.0, w_grad: float = 0.0,
                 w_grad_mae: float = 0.0, w_curv_mae: float = 0.0, eps: float = 1e-3, rel_max: float = 10.0,
                 pixel_weights: list[float] | tuple[float, ...] = (1.0, 1.0, 1.0, 1.0), unit_free: bool = False):
        super().__init__()
        if len(pixel_weights) != 4 or min(pixel_weights) < 0 or sum(pixel_weights) <= 0:
            raise ValueError(f"pixel_weights must be 4 non-negative numbers [R, G1, G2, B], got {pixel_weights}")
        if eps <= 0 or rel_max <= 0:
            raise ValueError("eps and rel_max must be positive")
        self.weights = {"mse": w_mse, "mae": w_mae, "rel": w_rel, "grad": w_grad, "grad_mae": w_grad_mae,
                        "curv_mae": w_curv_mae}
        self.eps, self.rel_max, self.unit_free = eps, rel_max, unit_free
        w = torch.tensor(pixel_weights, dtype=torch.float32)
        self.register_buffer("pixel", (w / w.mean()).view(2, 2, 1), persistent=False)
        self.scales: dict[str, float] = {}  # the mean predictor's value of each raw term (unit_free)

    def _mean(self, values: torch.Tensor) -> torch.Tensor:
        """Pixel-weighted mean over (B, 2, 2, L')."""
        return (values * self.pixel.to(values.device)).mean()

    def raw_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        err = pred - target
        d1 = torch.diff(pred, dim=-1) - torch.diff(target, dim=-1)
        d2 = torch.diff(pred, n=2, dim=-1) - torch.diff(target, n=2, dim=-1)
        rel = (err ** 2 / (target ** 2 + self.eps)).clamp(max=self.rel_max)
        raw = {"mse": lambda: err ** 2, "mae": lambda: err.abs(), "rel": lambda: rel, "grad": lambda: d1 ** 2,
               "grad_mae": lambda: d1.abs(), "curv_mae": lambda: d2.abs()}
        return {k: self._mean(f()) for k, f in raw.items() if self.weights[k]}

    @torch.no_grad()
    def calibrate(self, train_targets: torch.Tensor) -> None:
        """unit_free: each term's value for the mean-spectrum predictor on `train_targets` (B, 2, 2, L)."""
        if not self.unit_free:
            return
        mean = train_targets.mean(0, keepdim=True).expand_as(train_targets)
        self.scales = {k: max(float(v), 1e-12) for k, v in self.raw_terms(mean, train_targets).items()}

    def term_weights(self) -> dict[str, float]:
        """The weight each raw term is multiplied by (divided by its baseline value when unit_free)."""
        return {k: w / (self.scales.get(k, 1.0) if self.unit_free else 1.0) for k, w in self.weights.items() if w}

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.unit_free and not self.scales:
            raise RuntimeError("spectral loss with unit_free: calibrate(train_targets) first")
        return {k: self.weights[k] * v / (self.scales[k] if self.unit_free else 1.0)
                for k, v in self.raw_terms(pred, target).items()}
