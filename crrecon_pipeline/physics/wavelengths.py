"""The wavelength sub-grid of the fidelities that solve the layer at fewer wavelengths than they report
(multislice, rcwa): which wavelengths are solved, and the cubic-spline weights that carry a smooth quantity from
them to every sample. Why: the layer solve is the dense cost and its output (divided by the mean layer phase) is
smooth in wavelength, while the fast-varying part (substrate phase, cut-offs) is cheap to evaluate exactly."""

from __future__ import annotations

import math

import numpy as np
import torch

from crrecon_pipeline.physics.params import PhysicsParams


def sub_wavelengths(params: PhysicsParams, step_nm: float) -> np.ndarray:
    """The layer-solve wavelengths (um): uniform, both ends included, spacing <= step_nm; every sample if finer."""
    full = params.wavelengths_um()
    span = params.wavelength_max_nm - params.wavelength_min_nm
    count = int(math.ceil(span / step_nm - 1e-9)) + 1
    return (full if count >= len(full)
            else np.linspace(params.wavelength_min_nm, params.wavelength_max_nm, count) / 1000.0)


def spline_matrix(x_knots: np.ndarray, x_out: np.ndarray) -> np.ndarray:
    """(len(x_out), len(x_knots)) weights of the not-a-knot cubic spline through uniform knots (linear in y).

    Fewer than 4 knots: linear interpolation."""
    n = len(x_knots)
    eye = np.eye(n)
    if n < 4:
        return np.stack([np.interp(x_out, x_knots, eye[i]) for i in range(n)], axis=1)
    h = x_knots[1] - x_knots[0]
    # second derivatives m = A^-1 (R y): interior rows m_{i-1} + 4 m_i + m_{i+1} = 6 (y_{i-1} - 2 y_i + y_{i+1}) / h^2
    a = np.zeros((n, n))
    r = np.zeros((n, n))
    for i in range(1, n - 1):
        a[i, i - 1:i + 2] = (1, 4, 1)
        r[i, i - 1:i + 2] = np.array([1, -2, 1]) * 6 / h**2
    a[0, :3] = (1, -2, 1)  # not-a-knot: the third derivative is continuous at the second and last-but-one knot
    a[-1, -3:] = (1, -2, 1)
    second = np.linalg.solve(a, r)  # (n, n): m = second @ y
    i = np.clip(((x_out - x_knots[0]) // h).astype(int), 0, n - 2)
    b = (x_out - x_knots[i]) / h
    a_ = 1 - b
    w = np.zeros((len(x_out), n))
    rows = np.arange(len(x_out))
    w[rows, i] += a_
    w[rows, i + 1] += b
    w += ((a_**3 - a_) * h**2 / 6)[:, None] * second[i] + ((b**3 - b) * h**2 / 6)[:, None] * second[i + 1]
    return w


def mean_phase(fill: torch.Tensor, n_hi: torch.Tensor, inv_lam: torch.Tensor, params: PhysicsParams) -> torch.Tensor:
    """exp(i 2 pi h n_mean / lam), n_mean = n_low + fill (n_hi - n_low): (B, W), the fast phase of the layer."""
    n_mean = params.n_low + fill[:, None] * (n_hi - params.n_low)[None]
    return torch.polar(torch.ones_like(n_mean), 2 * math.pi * params.height_um * n_mean * inv_lam[None])


def to_every_sample(values: torch.Tensor, fill: torch.Tensor, plan) -> torch.Tensor:
    """The layer's output at the sub-grid wavelengths (b, S, ...) complex -> at every sample (b, W, ...): the mean
    layer phase divided out, the smooth rest spline-interpolated (plan.interp, (W, S)), the phase put back exactly.
    `plan`: a multislice or rcwa plan (params, interp, n_hi_sub, inv_lam_sub, n_hi_full, inv_lam_full)."""
    def phase(n_hi, inv_lam):
        p = mean_phase(fill, n_hi, inv_lam, plan.params)
        return p.reshape(*p.shape, *([1] * (values.dim() - 2)))

    values = values * torch.conj(phase(plan.n_hi_sub, plan.inv_lam_sub))
    flat = values.flatten(2)  # (b, S, n)
    flat = torch.complex(plan.interp @ flat.real, plan.interp @ flat.imag)  # (b, W, n)
    return flat.view(len(values), -1, *values.shape[2:]) * phase(plan.n_hi_full, plan.inv_lam_full)
