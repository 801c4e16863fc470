"""What a trained surrogate is judged by: MSE against the mean-spectrum baseline, Pearson, and the numbers the
color-router field reports beside the MSE, for predicted vs true (N, 2, 2, L) Bayer
spectra (torch): per-pixel MSE, the error of each spectrum's peak wavelength, and the error of the band routing
efficiency (physics.bands.routing_efficiency: R 600-700 nm, G1 + G2 500-600 nm, B 400-500 nm, averaged over bands).
The check on a trained model (check_beats_baseline) is registered here in the style of data.checks.DATA_CHECKS."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from crrecon_pipeline.data.checks import CheckDef, CheckOutcome, by_asset
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.losses.crrecon_mse_pearson import pearson_per_spectrum
from crrecon_pipeline.physics.bands import routing_efficiency
from crrecon_pipeline.settings import Settings

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


class ModelCheckLimits(Settings):
    """Limits of the checks on a trained model (the ModelChecks resource is generated from these fields)."""

    OWNER = "model_checks"

    max_mse_ratio: float = Field(0.5, ge=0, description="check_beats_baseline passes at val MSE <= max_mse_ratio "
                                 "times the mean-spectrum baseline's, warns below 1, fails at 1 or above (and such a "
                                 "run is never run_comparison's best)")


def check_beats_baseline(metrics, limits: ModelCheckLimits) -> CheckOutcome:
    """val MSE against the mean-spectrum baseline on the same split: a pass at ratio <= max_ratio; between
    max_ratio and 1 a warning (better than the mean, not good); at 1 or above a failure (no better than the mean)."""
    mse, base, max_ratio = metrics.val_mse, metrics.baseline_val_mse, limits.max_mse_ratio  # records.RunMetrics
    ratio = mse / base if base else float("inf")
    passed = bool(ratio <= max_ratio)
    verdict = ("pass" if passed else "warn: better than the mean spectrum, not by enough" if ratio < 1
               else "fail: no better than the mean spectrum")
    return CheckOutcome(passed,
                        f"val MSE {mse:.3g} vs baseline {base:.3g}: ratio {ratio:.3g} (limit {max_ratio:g}; {verdict})",
                        {"ratio": float(f"{ratio:.4g}"), "max_ratio": max_ratio}, warn_only=not passed and ratio < 1)


MODEL_CHECKS = by_asset(
    CheckDef("check_beats_baseline", "trained_model",
             "this run's val MSE against the mean-spectrum baseline: pass at ratio <= ModelChecks.max_mse_ratio "
             "(0.5), warn below 1, fail at 1 or above", check_beats_baseline, blocking=False),
)
