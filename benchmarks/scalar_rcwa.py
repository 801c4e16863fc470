"""A rigorous SCALAR reference for the multi-slice simulator: Fourier modal method (scalar RCWA) of the same cell.

The pillar layer is z-invariant, so the scalar Helmholtz field in it is an exact sum of eigenmodes of
k0^2 [eps] - K^2 in a truncated Fourier basis; matching u and du/dz at both faces (air above, substrate below)
includes every reflection, Fabry-Perot and guided-mode effect the scalar wave equation has. It is slow
(one dense eigenproblem per structure and wavelength) and ignores polarization: a yardstick, not a simulator.
"""

from __future__ import annotations

import numpy as np

from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.fourier import half_period_matrix, max_order, propagating_mask
from crrecon_pipeline.physics.params import PhysicsParams


def _pattern_coefficients(s: np.ndarray, span: int) -> np.ndarray:
    """Exact Fourier coefficients s_hat[m, n], |m|, |n| <= span, of the piecewise-constant 128 x 128 pattern."""
    m = np.arange(-span, span + 1)
    box = np.sinc(m / N_PIX) * np.exp(-1j * np.pi * m / N_PIX)
    f = box[:, None] * np.exp(-2j * np.pi * np.outer(m, np.arange(N_PIX)) / N_PIX) / N_PIX
    return f @ s.astype(float) @ f.T


def scalar_rcwa_power(structure: np.ndarray, params: PhysicsParams, lam_um: np.ndarray, orders: int = 8) -> np.ndarray:
    """R, G, B (3, len(lam)) of the exact scalar solution with Fourier orders |m|, |n| <= `orders`."""
    if orders < max_order(params, float(np.min(lam_um))):
        raise ValueError(f"scalar RCWA: orders={orders} is fewer than the propagating orders at {np.min(lam_um)} um")
    s_hat = _pattern_coefficients(np.asarray(structure).reshape(N_PIX, N_PIX), 2 * orders)
    m = np.arange(-orders, orders + 1)
    mm, nn = np.meshgrid(m, m, indexing="ij")
    mm, nn = mm.ravel(), nn.ravel()
    conv = s_hat[(mm[:, None] - mm[None, :]) + 2 * orders, (nn[:, None] - nn[None, :]) + 2 * orders]  # Toeplitz
    nb = len(mm)
    ft2 = (mm / params.period_um) ** 2 + (nn / params.period_um) ** 2  # cycles^2 / um^2
    centre = np.nonzero((mm == 0) & (nn == 0))[0][0]
    k = max_order(params, float(np.min(lam_um)))
    keep = np.nonzero((np.abs(mm) <= k) & (np.abs(nn) <= k))[0]
    a0 = half_period_matrix(k)
    a1 = np.eye(2 * k + 1) - a0
    out = np.empty((3, len(lam_um)))
    for j, lam in enumerate(lam_um):
        n_hi = params.n_high(lam)
        eps = params.n_low**2 * np.eye(nb) + (n_hi**2 - params.n_low**2) * conv
        gam2, w = np.linalg.eigh(eps / lam**2 - np.diag(ft2))  # Hermitian: eps is real, its Toeplitz matrix Hermitian
        gam = np.sqrt(gam2.astype(complex))  # forward (gam2 > 0) or decaying (gam2 < 0) branch
        kt = np.sqrt((1.0 / lam**2 - ft2).astype(complex))
        ks = np.sqrt(((params.n_substrate / lam) ** 2 - ft2).astype(complex))
        x = np.exp(2j * np.pi * gam * params.height_um)
        wg = w * gam[None, :]
        z, i_ = np.zeros((nb, nb)), np.eye(nb)
        system = np.block([
            [i_, -w, -w * x[None, :], z],
            [-np.diag(kt), -wg, wg * x[None, :], z],
            [z, w * x[None, :], w, -i_],
            [z, wg * x[None, :], -wg, -np.diag(ks)],
        ])
        rhs = np.zeros(4 * nb, complex)
        rhs[centre] = -1.0
        rhs[nb + centre] = -kt[centre]
        t = np.linalg.solve(system, rhs)[3 * nb:]
        mask, kz2 = propagating_mask(params, np.array([lam]), k)
        c = np.zeros((2 * k + 1) ** 2, complex)
        c[:] = t[keep]
        c = c.reshape(2 * k + 1, 2 * k + 1)
        kz = np.sqrt(np.where(mask[0], kz2[0], 0.0))
        c = np.where(mask[0], c * np.exp(2j * np.pi * kz * params.depth_um), 0.0)
        wc = kz * lam * c
        cc = np.conj(c)
        e = {(a, b): np.real(np.sum(wc * (A @ cc @ B.T))) for a, A in ((0, a0), (1, a1)) for b, B in ((0, a0), (1, a1))}
        out[:, j] = e[0, 0], 0.5 * (e[0, 1] + e[1, 0]), e[1, 1]
    return out
