"""A slow, independent reference for the thin element (no box factor, no quadrant algebra): each pixel
upsampled u x u, one FFT per wavelength, the same order rule. The tests hold the fast path against it; the
difference falls ~4x each time u doubles."""

from __future__ import annotations

import numpy as np

from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.params import PhysicsParams


def brute_force_power(structure: np.ndarray, params: PhysicsParams, lam_um: np.ndarray, upsample: int) -> np.ndarray:
    """Reference R, G, B: (3, len(lam)) float64. See brute_force_quadrants."""
    e = brute_force_quadrants(structure, params, lam_um, upsample)
    return np.stack([e[0, 0], 0.5 * (e[0, 1] + e[1, 0]), e[1, 1]])


def brute_force_quadrants(structure: np.ndarray, params: PhysicsParams, lam_um: np.ndarray,
                          upsample: int) -> np.ndarray:
    """Reference E_ab: (2, 2, len(lam)) float64; pixels upsampled u x u, one FFT per wavelength, same order rule.

    Slow and independent of the fast path (no box factor, no quadrant algebra): used to validate it.
    """
    s = np.kron(np.asarray(structure, dtype=np.float64).reshape(N_PIX, N_PIX), np.ones((upsample, upsample)))
    n = s.shape[0]
    freq = np.fft.fftfreq(n, d=1.0 / n) / params.period_um  # m / L
    half = n // 2
    out = np.empty((2, 2, len(lam_um)))
    for j, lam in enumerate(lam_um):
        n_hi = params.cauchy_a + params.cauchy_b / lam**2
        t = np.exp(2j * np.pi * params.height_um * np.where(s > 0, n_hi, params.n_low) / lam)
        k0sq = (params.n_substrate / lam) ** 2
        kz2 = k0sq - freq[:, None] ** 2 - freq[None, :] ** 2
        prop = kz2 > 1e-9 * k0sq
        kz = 2 * np.pi * np.sqrt(np.where(prop, kz2, 0.0))
        spec = np.where(prop, np.fft.fft2(t) * np.exp(1j * kz * params.depth_um), 0.0)
        u = np.fft.ifft2(spec)
        v = np.fft.ifft2(spec * np.sqrt(np.where(prop, kz2, 0.0) / k0sq))
        flux = np.real(np.conj(u) * v)
        out[:, :, j] = flux.reshape(2, half, 2, half).sum(axis=(1, 3)) / n**2
    return out
