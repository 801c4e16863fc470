"""The color router's figure of merit: Bayer bands and the routing efficiency (invrs-gym's Bayer challenge,
Zou et al. 2022): per band the fraction of incident power reaching its own pixel(s) (R over 600-700 nm, G1 + G2
over 500-600 nm, B over 400-500 nm), averaged over the bands. A fixed linear functional of the (.., 2, 2, L)
Bayer spectra, so ONE function scores predicted, simulated and training spectra alike (numpy or torch,
differentiable); training metrics, inverse design and reports all use it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crrecon_pipeline.errors import ConfigError


@dataclass(frozen=True)
class Band:
    """Wavelengths [lo_nm, hi_nm] (inclusive) whose power should reach `pixels` of the [[R, G1], [G2, B]] group."""

    name: str
    lo_nm: float
    hi_nm: float
    pixels: tuple[tuple[int, int], ...]
    weight: float = 1.0


BAND_EDGES_NM = (400.0, 500.0, 600.0, 700.0)  # B | G | R band boundaries
BAND_WEIGHTS = (1.0, 1.0, 1.0)  # weights of the B, G, R bands


def bayer_bands(edges_nm=BAND_EDGES_NM, weights=BAND_WEIGHTS) -> tuple[Band, ...]:
    """B over edges[0..1], G1 + G2 over edges[1..2], R over edges[2..3], with the given weights."""
    edges, weights = [float(e) for e in edges_nm], [float(w) for w in weights]
    if len(edges) != 4 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"band edges must be 4 increasing wavelengths (B|G|R boundaries), got {edges}")
    if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"band weights must be 3 non-negative numbers with a positive sum, got {weights}")
    return (Band("B", edges[0], edges[1], ((1, 1),), weights[0]),
            Band("G", edges[1], edges[2], ((0, 1), (1, 0)), weights[1]),
            Band("R", edges[2], edges[3], ((0, 0),), weights[2]))


DEFAULT_BANDS = bayer_bands()


def band_matrix(wavelengths_nm: np.ndarray, bands: tuple[Band, ...] = DEFAULT_BANDS) -> np.ndarray:
    """(n_bands, 2, 2, L): band b's efficiency = sum(W[b] * bayer), the mean over its wavelengths of the power
    reaching its own pixels."""
    lam = np.asarray(wavelengths_nm, dtype=np.float64)
    out = np.zeros((len(bands), 2, 2, len(lam)))
    for k, band in enumerate(bands):
        inside = (lam >= band.lo_nm) & (lam <= band.hi_nm)
        if not inside.any():
            raise ConfigError(f"band {band.name} ({band.lo_nm:g}-{band.hi_nm:g} nm) holds no wavelength of the grid "
                             f"({lam.min():g}-{lam.max():g} nm)")
        for a, b in band.pixels:
            out[k, a, b, inside] = 1.0 / inside.sum()
    return out


def band_efficiencies(bayer, wavelengths_nm: np.ndarray, bands: tuple[Band, ...] = DEFAULT_BANDS):
    """(..., 2, 2, L) Bayer spectra (positive power fractions) -> (..., n_bands); numpy in, numpy out; torch
    in, torch out (differentiable)."""
    w = band_matrix(wavelengths_nm, bands).reshape(len(bands), -1)
    if torch.is_tensor(bayer):
        return bayer.flatten(-3) @ torch.as_tensor(w.T, dtype=bayer.dtype, device=bayer.device)
    return np.asarray(bayer, dtype=np.float64).reshape(*np.shape(bayer)[:-3], -1) @ w.T


def routing_efficiency(bayer, wavelengths_nm: np.ndarray, bands: tuple[Band, ...] = DEFAULT_BANDS):
    """(..., 2, 2, L) -> (...): the band efficiencies averaged with the bands' weights. A uniform pattern
    (each pixel 1/4 of the incident power) scores (1/4 + 1/2 + 1/4) / 3 = 1/3 with the default bands."""
    weights = np.array([b.weight for b in bands]) / sum(b.weight for b in bands)
    per_band = band_efficiencies(bayer, wavelengths_nm, bands)
    if torch.is_tensor(per_band):
        return per_band @ torch.as_tensor(weights, dtype=per_band.dtype, device=per_band.device)
    return per_band @ weights
