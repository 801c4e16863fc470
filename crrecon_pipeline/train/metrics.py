"""What a trained surrogate is judged by: MSE against the mean-spectrum baseline, Pearson, and the numbers the
color-router field reports beside the MSE, for predicted vs true (N, 2, 2, L) Bayer
spectra (torch): per-pixel MSE, the error of each spectrum's peak wavelength, and the error of the band routing
efficiency (physics.bands.routing_efficiency: R 600-700 nm, G1 + G2 500-600 nm, B 400-500 nm, averaged over bands)."""

from __future__ import annotations

import numpy as np
import torch

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.losses.mse_pearson import pearson_per_spectrum
from crrecon_pipeline.physics.bands import routing_efficiency

PIXELS = ("R", "G1", "G2", "B")  # row-major over the [[R, G1], [G2, B]] layout


def field_metrics(pred: torch.Tensor, target: torch.Tensor, wavelengths_nm: np.ndarray) -> dict:
    """{val_mse_R .. val_mse_B, val_peak_error_nm, val_routing_error, val_routing_efficiency}: the routing
    numbers only when the wavelength grid covers all three bands."""
    pred, target = pred.double(), target.double()
    per_pixel = ((pred - target) ** 2).mean(dim=(0, 3)).flatten()
    out = {f"val_mse_{name}": float(v) for name, v in zip(PIXELS, per_pixel)}
    lam = torch.as_tensor(np.asarray(wavelengths_nm, dtype=np.float64), device=pred.device)
    out["val_peak_error_nm"] = float((lam[pred.argmax(-1)] - lam[target.argmax(-1)]).abs().mean())

    try:
        eff_pred, eff_true = routing_efficiency(pred, wavelengths_nm), routing_efficiency(target, wavelengths_nm)
    except ConfigError:  # a band outside the data's wavelength grid: no routing numbers for these data
        return out
    out["val_routing_error"] = float((eff_pred - eff_true).abs().mean())
    out["val_routing_efficiency"] = float(eff_true.mean())
    return out


def regression_metrics(pred: torch.Tensor, target: torch.Tensor, mean_spectrum: torch.Tensor) -> dict:
    return {
        "val_mse": float(torch.mean((pred - target) ** 2)),
        "baseline_val_mse": float(torch.mean((mean_spectrum - target) ** 2)),
        "val_pearson": float(pearson_per_spectrum(pred, target).mean()),
        "val_mae": float(torch.mean(torch.abs(pred - target))),
    }
