"""Thin-element fidelity: scalar thin element + angular spectrum, exact quadrant flux (docs/simulator.md).

The speed comes from three facts: the pattern is binary, so ONE partial DFT of it serves all wavelengths; only a
handful of diffraction orders propagate (|m|, |n| <= L n_s / lambda); and the quadrant integrals reduce to two
small real GEMMs against a fixed antisymmetric matrix O per wavelength group, batched over (structures x
wavelengths).

Quadrant algebra (A0 = I/2 + iO, A1 = I - A0, O[m,p] = 1/(pi (m-p)) for odd m-p, else 0):
    S = sum w|c|^2,  D = -Im sum conj(C) (W C O) - Im sum conj(C^T) (W C^T O),  Q = Re sum W C (O conj(C) O)
    R = S/4 + D/2 + Q,   G = S/4 - Q,   B = S/4 - D/2 + Q        (so R + 2G + B = S)"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.fourier import _order_range, half_period_matrix, max_order, propagating_mask
from crrecon_pipeline.physics.params import PhysicsParams


def _half_orders(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Orders (m, n), |m|,|n| <= k, with (m, n) > (0, 0) lexicographically: one of each conjugate pair."""
    m, n = np.meshgrid(_order_range(k), _order_range(k), indexing="ij")
    half = (m > 0) | ((m == 0) & (n > 0))
    return m[half], n[half]


def _real_coordinates(k: int) -> np.ndarray:
    """M (n^2, n^2) complex with s_hat (flattened, row-major over (m, n)) = M r for a REAL pattern.

    r = [Re s_00, Re s_h..., Im s_h...] over the half orders h, since s_hat(-m, -n) = conj(s_hat(m, n)).
    """
    n = 2 * k + 1
    hm, hn = _half_orders(k)
    nh = len(hm)
    mat = np.zeros((n * n, n * n), dtype=complex)
    mat[k * n + k, 0] = 1.0
    for h, (m, q) in enumerate(zip(hm, hn)):
        mat[(m + k) * n + (q + k), 1 + h] = 1.0
        mat[(m + k) * n + (q + k), 1 + nh + h] = 1j
        mat[(-m + k) * n + (-q + k), 1 + h] = 1.0
        mat[(-m + k) * n + (-q + k), 1 + nh + h] = -1j
    return mat


@dataclass
class _Group:
    """Wavelengths sharing an order grid of (2k+1)^2. For each wavelength and channel the quadrant power is
    a quadratic form in r (the real coordinates of s_hat): P = c + l.r + sum_{i<=j} q_ij r_i r_j, evaluated
    for the whole batch as one GEMM over the features [r_i r_j, r] (float32 on the plan's device)."""

    index: torch.Tensor  # (G,) positions in the wavelength axis
    coords: torch.Tensor  # (F1,) positions of this group's r inside the k_max r
    pair_i: torch.Tensor  # (F2,) upper-triangle pairs (i <= j)
    pair_j: torch.Tensor
    quad: torch.Tensor  # (F2, G*3)
    lin: torch.Tensor  # (F1, G*3)
    const: torch.Tensor  # (G*3,)


def _quadratic_forms(params: PhysicsParams, lam: np.ndarray, k: int):
    """(const (G,3), lin (G,3,F), quad (G,3,F,F)) of the R, G, B powers in r, float64."""
    n = 2 * k + 1
    mask, kz2 = propagating_mask(params, lam, k)
    kz2 = np.where(mask, kz2, 0.0)
    phase = np.where(mask, np.exp(2j * np.pi * np.sqrt(kz2) * params.depth_um), 0.0).reshape(len(lam), -1)
    w = (np.sqrt(kz2) / (params.n_substrate / lam)[:, None, None]).reshape(len(lam), -1)
    n_hi = params.cauchy_a + params.cauchy_b / lam**2
    e_alpha = np.exp(2j * np.pi * params.height_um * params.n_low / lam)
    gamma = np.exp(2j * np.pi * params.height_um * n_hi / lam) - e_alpha

    a0 = half_period_matrix(k)
    a1 = np.eye(n) - a0
    # K[(m,n),(p,q)] = A^a[m,p] A^b[n,q]; E_ab = Re sum_ij w_i P_i conj(P_j) K_ij c_i conj(c_j), c = e^{ia} d + g s
    kernels = np.stack([np.kron(a0, a0), 0.5 * (np.kron(a0, a1) + np.kron(a1, a0)), np.kron(a1, a1)])
    kp = (w * phase)[:, None, :, None] * kernels[None] * np.conj(phase)[:, None, None, :]  # (G, 3, n2, n2)
    mat = _real_coordinates(k)
    centre = k * n + k
    const = kp[:, :, centre, centre].real
    # cross terms: Re[e^{ia} conj(g) sum_j K_0j conj(s_j)] + Re[g e^{-ia} sum_i K_i0 s_i], s = M r
    lin = (np.real((e_alpha * np.conj(gamma))[:, None, None] * (kp[:, :, centre, :] @ np.conj(mat)))
           + np.real((gamma * np.conj(e_alpha))[:, None, None] * (kp[:, :, :, centre] @ mat)))
    quad = (np.abs(gamma) ** 2)[:, None, None, None] * np.real(mat.T @ kp @ np.conj(mat))
    return const, lin, 0.5 * (quad + quad.transpose(0, 1, 3, 2))


@dataclass
class SimulationPlan:
    """Everything that depends on the wavelengths and geometry but not on the structure: built once."""

    params: PhysicsParams
    device: torch.device
    k_max: int
    dft_re: torch.Tensor  # (128, n_max): F^T, F[m, i] = b_m exp(-i 2 pi m i / 128) / 128
    dft_im: torch.Tensor
    groups: list[_Group] = field(default_factory=list)


def make_thin_plan(params: PhysicsParams, device: str | torch.device = "cpu") -> SimulationPlan:
    """The thin-element plan: the order grids and quadratic forms of every wavelength group."""
    device = torch.device(device)
    lam = params.wavelengths_um()
    orders = np.array([max_order(params, float(x)) for x in lam])
    k_max = int(orders.max())

    m = _order_range(k_max)
    box = np.sinc(m / N_PIX) * np.exp(-1j * np.pi * m / N_PIX)
    dft = box[:, None] * np.exp(-2j * np.pi * np.outer(m, np.arange(N_PIX)) / N_PIX) / N_PIX  # (n, 128)

    def t(x, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

    full_m, full_n = _half_orders(k_max)
    groups = []
    for k in sorted(set(orders.tolist())):
        idx = np.nonzero(orders == k)[0]
        inside = np.nonzero((np.abs(full_m) <= k) & (np.abs(full_n) <= k))[0]
        coords = np.concatenate([[0], 1 + inside, 1 + len(full_m) + inside])  # same order as _real_coordinates(k)
        const, lin, quad = _quadratic_forms(params, lam[idx], k)
        pi, pj = np.triu_indices(len(coords))
        weights = quad[:, :, pi, pj] * np.where(pi == pj, 1.0, 2.0)  # (G, 3, F2)
        groups.append(
            _Group(
                index=t(idx, torch.long),
                coords=t(coords, torch.long),
                pair_i=t(pi, torch.long),
                pair_j=t(pj, torch.long),
                quad=t(weights.reshape(-1, len(pi)).T),
                lin=t(lin.reshape(-1, len(coords)).T),
                const=t(const.reshape(-1)),
            )
        )
    return SimulationPlan(params, device, k_max, t(dft.T.real), t(dft.T.imag), groups)


def _real_spectrum(s: torch.Tensor, plan: SimulationPlan) -> torch.Tensor:
    """r: (B, n_max^2) real coordinates of the exact Fourier coefficients of the piecewise-constant pattern."""
    fr, fi = plan.dft_re, plan.dft_im  # (128, n)
    yr, yi = s @ fr, s @ fi  # Y = s F^T along y: (B, 128, n)
    ytr, yti = yr.transpose(1, 2), yi.transpose(1, 2)  # S^T = Y^T F^T along x: (B, n, n) indexed [n, m]
    sr = (ytr @ fr - yti @ fi).transpose(1, 2).reshape(len(s), -1)
    si = (ytr @ fi + yti @ fr).transpose(1, 2).reshape(len(s), -1)
    k = plan.k_max
    n = 2 * k + 1
    hm, hn = _half_orders(k)
    flat = torch.as_tensor((hm + k) * n + (hn + k), device=s.device)
    return torch.cat([sr[:, k * n + k:k * n + k + 1], sr[:, flat], si[:, flat]], dim=1)


def thin_power(s: torch.Tensor, plan: SimulationPlan) -> torch.Tensor:
    """Positive power fractions (B, 3, W) float32 (R, G, B) for a {0,1} float32 batch (B, 128, 128)."""
    r_full = _real_spectrum(s, plan)
    out = torch.empty(s.shape[0], plan.params.n_wavelengths, 3, device=plan.device)
    for g in plan.groups:
        r = r_full[:, g.coords]  # (B, F1)
        power = torch.addmm(g.const, r[:, g.pair_i] * r[:, g.pair_j], g.quad) + r @ g.lin  # (B, G*3)
        out[:, g.index] = power.view(len(s), -1, 3)
    return out.transpose(1, 2)
