"""Rigorous fidelity of the built-in simulator: the rigorous coupled-wave analysis (RCWA, Fourier modal method)
of the vector Maxwell equations for the project's cell (docs/simulator.md, fidelity rcwa).

Why: thin and multislice are scalar and follow no reflected wave; the research group's data are vector FDTD.
RCWA is exact for a z-invariant periodic layer up to the Fourier truncation |m|, |n| <= N (`rcwa_orders`): the
field in the layer is a sum of the eigenmodes of a (2M x 2M) matrix, M = (2N+1)^2, matched to plane waves in air
above and in the substrate below, so every reflection, Fabry-Perot, guided-mode and polarization effect is in it.

Formulation (exp(-i w t), lengths in units of 1/k0, H' = Z0 H, K = k / k0; Kx = diag(m lam / L) along the first
array axis, Ky = diag(n lam / L)): in the layer d/dz [Ex, Ey] = i P [Hx, Hy] and d/dz [Hx, Hy] = i Q [Ex, Ey] with
    P = [[Kx Ei Ky, I - Kx Ei Kx], [Ky Ei Ky - I, -Ky Ei Kx]],   Q = [[-Kx Ky, Kx^2 - Cy], [Cx - Ky^2, Ky Kx]].
Fourier factorization by Li's rules, which are exact for a pixel grid (every wall runs along x or y): Ez is
tangential to every wall, so Dz = E Ez with E the Toeplitz matrix of eps (Laurent's rule) and Ei = E^-1; Dx = Cx Ex
with Cx the inverse rule across the walls normal to x and Laurent's along y (for each of the 128 y-strips the
inverse of the x-Toeplitz matrix of 1/eps, then the exact y-Fourier series of those matrices), Cy likewise with x
and y swapped.
Modes: P Q W = W q^2, e = W exp(+-i q z), h = +-V with V = Q W / q, Im q >= 0.
In a homogeneous medium the same holds order by order with W = I and Q's 2 x 2 blocks (kz = sqrt(eps - K^2)).

Interface matching without growing exponentials (enhanced transmittance matrix): forward amplitudes are referred
to the top of the layer, backward ones to the bottom, so only X = exp(i q h) (|X| <= 1) appears:
    c- = Rb X c+,  Rb = (kz_s V + Q_s W)^-1 (kz_s V - Q_s W)        (bottom: e = t, h = V_s t)
    (Q_0 W A + kz_0 V B) c+ = 2 Q_0 a,  A = I + X Rb X,  B = I - X Rb X   (top: e = a + r, h = V_0 (a - r))
    t = W (I + Rb) X c+,  r = W A c+ - a,
each row of an order multiplied by its kz (V_med = Q_med / kz), so an order at cut-off (kz -> 0) stays finite. A tiny
absorption i 1e-10 in every permittivity keeps kz off exactly 0 (400 and 500 nm are cut-offs of the 2 um cell).

Detector: the transmitted orders (E and H, both polarizations, evanescent ones included: a monitor sees them) go
down by exp(i kz depth) and the z-Poynting flux Re(Ex conj(Hy) - Ey conj(Hx)) through each quadrant is exact
(fourier.quadrant_products: the cross terms between orders are kept), normalised by the incident plane wave's flux
in air; x- and y-polarized incidence are averaged (unpolarized light).

Speed: the eigen-decomposition is the dense cost, one per structure and solved wavelength, batched over both
(complex128 torch on the plan's device). The layer is solved on a sub-grid (`rcwa_step_nm`); the fields just
below it, divided by the mean layer phase exp(i 2 pi h n_mean / lam), are spline-interpolated to every sample, and
the substrate phase is applied exactly at all wavelengths (as multislice does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.fourier import half_period_matrix, quadrant_channels, quadrant_products
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.wavelengths import spline_matrix, sub_wavelengths, to_every_sample

ABSORPTION = 1e-10  # imaginary part added to every permittivity: no order exactly at cut-off
MATRIX_ENTRIES = {"cpu": 2**22, "cuda": 2**25}  # entries of the (2M, 2M) matrices solved per call: bounds memory
ROWS_PER_CALL = 16  # structures per call: bounds the (rows, 301, 4M, 2) transmitted fields
DTYPE = torch.complex128  # complex64 keeps T + R = 1 only to ~5e-6 (docs/simulator.md): double precision


@dataclass
class RcwaPlan:
    """Everything that depends on geometry and wavelengths but not on the structure; built once."""

    params: PhysicsParams
    device: torch.device
    orders: int  # N: orders |m|, |n| <= N, M = (2N+1)^2 of them
    lam_sub: np.ndarray  # (S,) um: wavelengths of the layer solve
    kx: torch.Tensor  # (S, M) float64: m lam / L, orders flattened row-major over (m, n)
    ky: torch.Tensor  # (S, M) float64: n lam / L
    eps_lo: torch.Tensor  # (S,) complex128: background permittivity (+ i ABSORPTION)
    eps_hi: torch.Tensor  # (S,) complex128: pillar permittivity n_high(lam)^2 (+ i ABSORPTION)
    eps_in: complex  # air above (incidence)
    eps_out: complex  # substrate n_s^2 below
    k0h: torch.Tensor  # (S,) float64: 2 pi h / lam, the layer height in units of 1/k0
    dft: torch.Tensor  # (4N+1, 128) complex128: exact pattern coefficients F s F^T, pixel box factor included
    toeplitz: torch.Tensor  # (M, M) long: index of coefficient (m - p, n - q) in the flattened (4N+1)^2 grid
    strip_toeplitz: torch.Tensor  # (n, n) long: m - p + 2N
    li_x: tuple  # 3 x (M, M) long: Dx's matrix [(m, n), (p, q)] = C[n - q + 2N, m + N, p + N]
    li_y: tuple  # 3 x (M, M) long: Dy's matrix = C[m - p + 2N, n + N, q + N]
    interp: torch.Tensor | None  # (W, S) float64 spline weights; None when the sub-grid is every sample
    n_hi_sub: torch.Tensor  # (S,) float64 pillar index at lam_sub
    n_hi_full: torch.Tensor  # (W,) float64
    inv_lam_sub: torch.Tensor  # (S,) 1/um
    inv_lam_full: torch.Tensor  # (W,)
    propagate: torch.Tensor  # (W, M) complex128: exp(i kz depth) in the substrate, evanescent orders decaying
    a0: torch.Tensor  # (2N+1, 2N+1) complex128: half_period_matrix(N)
    entries: int  # matrix entries per solve call


def _strip_rule_indices(across: np.ndarray, within: np.ndarray, n_ord: int) -> tuple[np.ndarray, ...]:
    """Index arrays (M, M) that read the matrix [(m, n), (p, q)] out of C[k, i, j] (k: the Fourier index across the
    strips, i, j: the order pair within a strip): k = across - across' + 2N, i = within + N, j = within' + N."""
    shape = (len(across), len(across))
    return (across[:, None] - across[None, :] + 2 * n_ord, np.broadcast_to(within[:, None] + n_ord, shape),
            np.broadcast_to(within[None, :] + n_ord, shape))


def make_rcwa_plan(params: PhysicsParams, device: str | torch.device = "cpu") -> RcwaPlan:
    device = torch.device(device)
    n_ord = params.rcwa_orders
    lam_full = params.wavelengths_um()
    lam_sub = sub_wavelengths(params, params.rcwa_step_nm)
    m = np.arange(-n_ord, n_ord + 1)
    mm, nn = (g.ravel() for g in np.meshgrid(m, m, indexing="ij"))
    span = np.arange(-2 * n_ord, 2 * n_ord + 1)
    box = np.sinc(span / N_PIX) * np.exp(-1j * np.pi * span / N_PIX)
    dft = box[:, None] * np.exp(-2j * np.pi * np.outer(span, np.arange(N_PIX)) / N_PIX) / N_PIX
    toeplitz = (mm[:, None] - mm[None, :] + 2 * n_ord) * len(span) + (nn[:, None] - nn[None, :] + 2 * n_ord)
    kz2 = (params.n_substrate / lam_full[:, None]) ** 2 - (mm[None] ** 2 + nn[None] ** 2) / params.period_um**2
    propagate = np.exp(2j * np.pi * np.sqrt(kz2.astype(complex)) * params.depth_um)  # (W, M), decays if evanescent
    interp = None if len(lam_sub) == len(lam_full) else spline_matrix(lam_sub, lam_full)

    def t(x, dtype=torch.float64):
        return torch.as_tensor(np.ascontiguousarray(x), device=device).to(dtype)

    loss = 1j * ABSORPTION
    return RcwaPlan(
        params=params, device=device, orders=n_ord, lam_sub=lam_sub,
        kx=t(lam_sub[:, None] * mm[None] / params.period_um), ky=t(lam_sub[:, None] * nn[None] / params.period_um),
        eps_lo=t(np.full(len(lam_sub), params.n_low**2 + loss), DTYPE),
        eps_hi=t(params.n_high(lam_sub) ** 2 + loss, DTYPE),
        eps_in=1.0 + loss, eps_out=params.n_substrate**2 + loss,
        k0h=t(2 * np.pi * params.height_um / lam_sub), dft=t(dft, DTYPE), toeplitz=t(toeplitz, torch.long),
        strip_toeplitz=t(m[:, None] - m[None, :] + 2 * n_ord, torch.long),
        li_x=tuple(t(x, torch.long) for x in _strip_rule_indices(nn, mm, n_ord)),
        li_y=tuple(t(x, torch.long) for x in _strip_rule_indices(mm, nn, n_ord)),
        interp=None if interp is None else t(interp),
        n_hi_sub=t(params.n_high(lam_sub)), n_hi_full=t(params.n_high(lam_full)),
        inv_lam_sub=t(1.0 / lam_sub), inv_lam_full=t(1.0 / lam_full),
        propagate=t(propagate, DTYPE), a0=t(half_period_matrix(n_ord), DTYPE),
        entries=MATRIX_ENTRIES.get(device.type, MATRIX_ENTRIES["cuda"]),
    )


@dataclass
class Pattern:
    """The structure-only Fourier matrices of a batch, reused at every wavelength."""

    toeplitz: torch.Tensor  # (B, M, M): [s_hat(m - p, n - q)], Laurent's rule (eps for Ez)
    along_x: torch.Tensor  # (B, 128, n, n): for each y-strip j, the Toeplitz matrix over x of the column s[:, j]
    along_y: torch.Tensor  # (B, 128, n, n): for each x-strip i, the Toeplitz matrix over y of the row s[i, :]


def pattern_matrices(s: torch.Tensor, plan: RcwaPlan) -> Pattern:
    """The exact Fourier matrices of a {0,1} batch (B, 128, 128) (pixel box factor included)."""
    sc = s.to(DTYPE)
    coef = plan.dft @ sc @ plan.dft.transpose(0, 1)  # (B, 4N+1, 4N+1)
    cx = (plan.dft @ sc).transpose(1, 2)  # (B, 128 [j], 4N+1 [k]): coefficients along x of each column
    cy = sc @ plan.dft.transpose(0, 1)  # (B, 128 [i], 4N+1 [k]): along y of each row
    return Pattern(coef.flatten(1)[:, plan.toeplitz], cx[..., plan.strip_toeplitz], cy[..., plan.strip_toeplitz])


def _strip_rule(strips: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, plan: RcwaPlan, indices: tuple):
    """Li's factorization of eps for the pixel grid (all walls along x or y): the inverse rule across the walls
    normal to the field component, Laurent's rule along them. strips (b, 128, n, n) and indices: Pattern.along_x
    and plan.li_x (Dx = Cx Ex) or along_y and li_y (Dy); lo, hi (g,) permittivities. Returns (b*g, M, M)."""
    inv_lo, inv_hi = 1.0 / lo, 1.0 / hi
    eye = torch.eye(strips.shape[-1], dtype=DTYPE, device=strips.device)
    t = inv_lo[None, :, None, None, None] * eye + (inv_hi - inv_lo)[None, :, None, None, None] * strips[:, None]
    g = torch.linalg.inv(t)  # (b, g, 128, n, n): small matrices, batched LU is fine
    c = torch.einsum("kj,bgjmp->bgkmp", plan.dft, g)  # Laurent's rule across the strips: (b, g, 4N+1, n, n)
    k, i, j = indices
    return c[:, :, k, i, j].flatten(0, 1)


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.linalg.solve(a, b) for batches (..., n, n); on CPU one matrix at a time. Why: with 2+ threads the
    batched CPU LU of this torch/MKL build (torch 2.13+cpu, oneMKL 2024.2) returns corrupt pivots for n >= ~200,
    so batched solve/inv give wrong results or fail (measured, complex and real dtypes alike); one matrix per call
    is correct and costs nothing here (each matrix is large)."""
    if a.device.type != "cpu":
        return torch.linalg.solve(a, b)
    return torch.stack([torch.linalg.solve(x, y) for x, y in zip(a, b)])


def _medium(eps: complex, kx: torch.Tensor, ky: torch.Tensor):
    """A homogeneous medium's Q blocks (qxx, qxy, qyx, qyy) and kz = sqrt(eps - K^2), Im kz >= 0: each (..., M)."""
    kxc, kyc = kx.to(DTYPE), ky.to(DTYPE)
    kz = torch.sqrt(eps - kxc**2 - kyc**2)
    return (-kxc * kyc, kxc**2 - eps, eps - kyc**2, kxc * kyc), kz


def _apply_blocks(q, y: torch.Tensor) -> torch.Tensor:
    """The order-diagonal 2 x 2-block matrix q (4 x (..., M)) times y (..., 2M, r)."""
    half = q[0].shape[-1]
    yx, yy = y[..., :half, :], y[..., half:, :]
    return torch.cat([q[0][..., None] * yx + q[1][..., None] * yy, q[2][..., None] * yx + q[3][..., None] * yy], -2)


def _twice(kz: torch.Tensor) -> torch.Tensor:
    return torch.cat([kz, kz], dim=-1)[..., None]  # (..., 2M, 1): the same kz for the x and y rows of an order


def solve_layer(pattern: Pattern, plan: RcwaPlan, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Transmitted and reflected orders for x- and y-polarized unit incidence at the sub-grid wavelengths `index`.

    pattern: pattern_matrices of b structures; index (g,) long. Returns e_t, h_t (at the bottom of the layer) and
    e_r, h_r (at its top, going up), each (b, g, 2M, 2) complex128: rows [x components of the M orders, y components],
    columns the incident polarization (x, y)."""
    toe = pattern.toeplitz
    b, g, size = toe.shape[0], len(index), toe.shape[-1]
    eye = torch.eye(size, dtype=DTYPE, device=toe.device)
    lo, hi = plan.eps_lo[index], plan.eps_hi[index]
    eps = (lo[None, :, None, None] * eye + (hi - lo)[None, :, None, None] * toe[:, None]).flatten(0, 1)  # (bg, M, M)
    kx = plan.kx[index].repeat(b, 1)  # (bg, M), b-major like eps
    ky = plan.ky[index].repeat(b, 1)
    kxc, kyc = kx.to(DTYPE), ky.to(DTYPE)
    ei = _solve(eps, eye.expand_as(eps))
    eps_x = _strip_rule(pattern.along_x, lo, hi, plan, plan.li_x)  # Dx = Cx Ex
    eps_y = _strip_rule(pattern.along_y, lo, hi, plan, plan.li_y)  # Dy = Cy Ey
    p = torch.cat([torch.cat([kxc[:, :, None] * ei * kyc[:, None], eye - kxc[:, :, None] * ei * kxc[:, None]], -1),
                   torch.cat([kyc[:, :, None] * ei * kyc[:, None] - eye, -kyc[:, :, None] * ei * kxc[:, None]], -1)],
                  -2)
    q = torch.cat([torch.cat([torch.diag_embed(-kxc * kyc), torch.diag_embed(kxc**2) - eps_y], -1),
                   torch.cat([eps_x - torch.diag_embed(kyc**2), torch.diag_embed(kxc * kyc)], -1)], -2)
    q2, w = torch.linalg.eig(p @ q)  # the dense cost: (bg, 2M, 2M)
    gam = torch.sqrt(q2)
    gam = torch.where(gam.imag < 0, -gam, gam)  # decaying / forward branch: |X| <= 1
    v = (q @ w) / gam[:, None, :]
    x = torch.exp(1j * gam * plan.k0h[index].repeat(b)[:, None])  # (bg, 2M)

    q_out, kz_out = _medium(plan.eps_out, kx, ky)
    qw, kv = _apply_blocks(q_out, w), _twice(kz_out) * v
    rb = _solve(kv + qw, kv - qw)
    xrx = x[:, :, None] * rb * x[:, None, :]
    big = 2 * size
    eye2 = torch.eye(big, dtype=DTYPE, device=toe.device)
    wa = w @ (eye2 + xrx)
    q_in, kz_in = _medium(plan.eps_in, kx, ky)
    lhs = _apply_blocks(q_in, wa) + _twice(kz_in) * (v @ (eye2 - xrx))
    centre = size // 2
    inc = torch.zeros(big, 2, dtype=DTYPE, device=toe.device)
    inc[centre, 0] = inc[size + centre, 1] = 1.0
    inc = inc.expand(b * g, big, 2).contiguous()
    c_plus = _solve(lhs, 2 * _apply_blocks(q_in, inc))  # (bg, 2M, 2)
    e_t = w @ ((eye2 + rb) @ (x[:, :, None] * c_plus))
    e_r = wa @ c_plus - inc
    out = {"e_t": e_t, "h_t": _apply_blocks(q_out, e_t) / _twice(kz_out),
           "e_r": e_r, "h_r": -_apply_blocks(q_in, e_r) / _twice(kz_in)}
    return {key: val.view(b, g, big, 2) for key, val in out.items()}


def order_flux(e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """z-flux Re(Ex conj(Hy) - Ey conj(Hx)) summed over the orders: (..., 2M, r) -> (..., r), per unit incidence."""
    half = e.shape[-2] // 2
    return torch.real(e[..., :half, :] * torch.conj(h[..., half:, :])
                      - e[..., half:, :] * torch.conj(h[..., :half, :])).sum(dim=-2)


def _chunks(n_rows: int, n_sub: int, plan: RcwaPlan):
    """(rows per call, wavelengths per call) so that a call holds about plan.entries matrix entries."""
    items = max(1, plan.entries // (2 * (2 * plan.orders + 1) ** 2) ** 2)
    rows = min(n_rows, items, ROWS_PER_CALL)
    return rows, max(1, min(n_sub, items // rows))


def transmitted_fields(s: torch.Tensor, plan: RcwaPlan, group: int) -> torch.Tensor:
    """E and H orders just below the layer at EVERY sample: (b, W, 4M, 2) complex128 (rows e_t then h_t), the
    layer solved `group` sub-grid wavelengths at a time."""
    pattern = pattern_matrices(s, plan)
    n_sub = len(plan.lam_sub)
    parts = [solve_layer(pattern, plan, torch.arange(k, min(k + group, n_sub), device=s.device))
             for k in range(0, n_sub, group)]
    fields = torch.cat([torch.cat([p["e_t"], p["h_t"]], dim=-2) for p in parts], dim=1)  # (b, S, 4M, 2)
    if plan.interp is None:
        return fields
    fill = s.to(torch.float64).mean(dim=(1, 2))
    return to_every_sample(fields, fill, plan)  # (b, W, 4M, 2)


def rcwa_quadrants(s: torch.Tensor, plan: RcwaPlan) -> torch.Tensor:
    """Power through each quadrant (B, W, 2, 2) float32, unpolarized, for a {0,1} float32 batch (B, 128, 128)."""
    rows, group = _chunks(len(s), len(plan.lam_sub), plan)
    n = 2 * plan.orders + 1
    out = []
    for first in range(0, len(s), rows):
        fields = transmitted_fields(s[first:first + rows], plan, group)  # (b, W, 4M, 2)
        at_detector = fields * plan.propagate.repeat(1, 4)[None, :, :, None]
        comps = at_detector.transpose(-1, -2).unflatten(-1, (4, n, n))  # (b, W, pol, 4 [ex, ey, hx, hy], n, n)
        ex, ey, hx, hy = comps.unbind(dim=-3)
        flux = torch.real(quadrant_products(ex, hy, plan.a0) - quadrant_products(ey, hx, plan.a0))  # (b, W, pol, 2, 2)
        out.append(flux.mean(dim=2).to(torch.float32))
    return torch.cat(out)


def rcwa_power(s: torch.Tensor, plan: RcwaPlan) -> torch.Tensor:
    """Positive power fractions (B, 3, W) float32 (R, G, B) for a {0,1} float32 batch (B, 128, 128)."""
    return quadrant_channels(rcwa_quadrants(s, plan)).transpose(1, 2).contiguous()
