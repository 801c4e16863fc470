"""What a design run maximizes: the band-mean routing efficiency (physics.bands.routing_efficiency) or invrs-gym's
Bayer challenge metric, the minimum over the B, G and R bands of the mean in-band efficiency (`min_band`: a design
must route every colour, not trade one band for another). Both are reported for every design whichever is chosen.

The optimizer needs a gradient for every band, so it climbs a soft minimum, -tau * log(mean(exp(-e_b / tau)))
with tau = SOFT_MIN_TAU (in efficiency units: within ~tau * log 3 of the true minimum, exactly it as tau -> 0);
every reported number is the exact minimum."""

from __future__ import annotations

import math

import numpy as np
import torch

from crrecon_pipeline.physics.bands import Band, band_efficiencies, routing_efficiency

OBJECTIVES = ("band_mean", "min_band")
SOFT_MIN_TAU = 0.01


def min_band_efficiency(bayer, wavelengths_nm: np.ndarray, bands: tuple[Band, ...]):
    """(..., 2, 2, L) -> (...): the smallest band efficiency (band weights play no part); numpy or torch."""
    per_band = band_efficiencies(bayer, wavelengths_nm, bands)
    return per_band.amin(dim=-1) if torch.is_tensor(per_band) else per_band.min(axis=-1)


def objective_value(bayer, wavelengths_nm: np.ndarray, bands: tuple[Band, ...], objective: str):
    """The chosen objective, exactly (the number designs are ranked by)."""
    if objective == "min_band":
        return min_band_efficiency(bayer, wavelengths_nm, bands)
    return routing_efficiency(bayer, wavelengths_nm, bands)


def smooth_objective(bayer: torch.Tensor, wavelengths_nm: np.ndarray, bands: tuple[Band, ...],
                     objective: str) -> torch.Tensor:
    """What the optimizer climbs: band_mean itself, min_band as the soft minimum (a gradient for every band)."""
    if objective != "min_band":
        return routing_efficiency(bayer, wavelengths_nm, bands)
    per_band = band_efficiencies(bayer, wavelengths_nm, bands)
    n = per_band.shape[-1]
    return -SOFT_MIN_TAU * (torch.logsumexp(-per_band / SOFT_MIN_TAU, dim=-1) - math.log(n))
