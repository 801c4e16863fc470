"""Diffraction-order algebra shared by the fidelities: which orders propagate at a wavelength, the exact
half-period integrals A0, the quadrant integrals of a product of two fields and the quadrant fluxes E_ab of a
set of orders at the detector plane.

Quadrant flux (exact for the piecewise-constant cell): E_ab = Re sum(W C * (A^a conj(C) A^b^T)), A^1 = I - A^0,
A0[m, p] = 1/2 if m = p, 0 for even m - p, i / (pi (m - p)) for odd; W the z-flux weight kz / k per order."""

from __future__ import annotations

import numpy as np
import torch

from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.params import PhysicsParams


def _order_range(k: int) -> np.ndarray:
    return np.arange(-k, k + 1)


def _odd_difference_matrix(k: int) -> np.ndarray:
    """O[m, p] = 1/(pi (m - p)) for odd m - p, else 0: the imaginary part of the half-period integral A0."""
    m = _order_range(k)
    d = m[:, None] - m[None, :]
    out = np.zeros(d.shape)
    odd = (d % 2) != 0
    out[odd] = 1.0 / (np.pi * d[odd])
    return out


def half_period_matrix(k: int) -> np.ndarray:
    """A0[m, p] = (1/L) int_0^{L/2} exp(i 2 pi (m - p) x / L) dx (complex, orders -k..k)."""
    return 0.5 * np.eye(2 * k + 1) + 1j * _odd_difference_matrix(k)


def propagating_mask(params: PhysicsParams, lam_um: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, kz_over_k2) for orders -k..k: kz_over_k2 = (n_s/lam)^2 - (m/L)^2 - (n/L)^2, mask where
    > 1e-9 (n_s/lam)^2."""
    m = _order_range(k) / params.period_um
    k0sq = (params.n_substrate / np.asarray(lam_um)) ** 2
    kz2 = k0sq[:, None, None] - m[None, :, None] ** 2 - m[None, None, :] ** 2
    return kz2 > 1e-9 * k0sq[:, None, None], kz2


def max_order(params: PhysicsParams, lam_um: float) -> int:
    """Largest |m| that can propagate at this wavelength (orders exactly at cutoff excluded)."""
    k = int(np.floor(params.period_um * params.n_substrate / lam_um)) + 1
    mask, _ = propagating_mask(params, np.array([lam_um]), k)
    rows = np.nonzero(mask[0].any(axis=1))[0]
    return int(np.max(np.abs(rows - k)))


def binary_batch(structures, device: torch.device) -> torch.Tensor:
    """(B, 128, 128) float32 {0, 1} on `device` from (B, [1,] 128, 128) structures of any encoding (non-zero = 1)."""
    s = structures if torch.is_tensor(structures) else torch.as_tensor(np.asarray(structures))
    if s.dim() == 4:
        s = s[:, 0]
    if s.dim() != 3 or tuple(s.shape[1:]) != (N_PIX, N_PIX):
        raise ValueError(f"structures must be (B, 128, 128) or (B, 1, 128, 128), got {tuple(s.shape)}")
    return (s.to(device) != 0).to(torch.float32)


def quadrant_products(x: torch.Tensor, y: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
    """Quadrant integrals (..., 2, 2) complex of the product of two fields given by their orders x, y (..., n, n).

    (1 / L^2) int over quadrant (a, b) of f conj(g) = sum(X * (A^a conj(Y) A^b^T)), f = sum X_mn e^{i2pi(mx+ny)/L},
    A^1 = I - A^0 (a0 = half_period_matrix(k)): two small matmuls per side. Cross terms between orders are kept,
    which a vector field's z-flux Re(Ex conj(Hy) - Ey conj(Hx)) needs (rcwa); the scalar flux is its diagonal-
    weighted special case (quadrant_fluxes)."""
    cy = torch.conj(y)
    x0 = a0 @ cy  # A0 conj(Y)
    rows = []
    for xa in (x0, cy - x0):  # A^a conj(Y)
        y0 = xa @ a0.transpose(0, 1)
        rows.append(torch.stack([(x * z).sum(dim=(-2, -1)) for z in (y0, xa - y0)], dim=-1))
    return torch.stack(rows, dim=-2)


def quadrant_fluxes(c: torch.Tensor, weight: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
    """Exact power E_ab (..., 2, 2) through quadrant (a, b) from the orders c (..., n, n) at the detector plane.

    weight (..., n, n): each order's z-flux per |c|^2 (0 for evanescent ones); a0 = half_period_matrix(k).
    E_ab = Re sum(W C * (A^a conj(C) A^b^T)) with A^1 = I - A^0 (quadrant_products of W C and C).
    """
    return torch.real(quadrant_products(weight * c, c, a0))


def quadrant_channels(e: torch.Tensor) -> torch.Tensor:
    """(..., 2, 2) quadrant powers -> (..., 3) R = E00, G = (E01 + E10) / 2, B = E11."""
    return torch.stack([e[..., 0, 0], 0.5 * (e[..., 0, 1] + e[..., 1, 0]), e[..., 1, 1]], dim=-1)
