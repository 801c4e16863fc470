"""Fast color-router simulator: scalar thin element + angular spectrum, exact quadrant flux.

See ../shared/PHYSICS.md (and the README) for the model and its limits. PhysicsParams.fidelity picks the model:
"thin" (here) or "multislice" (multislice.py); make_plan / simulate_power / simulate_spectra serve both. The speed comes from three facts:
the pattern is binary, so ONE partial DFT of it serves all wavelengths; only a handful of diffraction orders
propagate (|m|, |n| <= L n_s / lambda); and the quadrant integrals reduce to two small real GEMMs against a
fixed antisymmetric matrix O per wavelength group, batched over (structures x wavelengths).

Quadrant algebra (A0 = I/2 + iO, A1 = I - A0, O[m,p] = 1/(pi (m-p)) for odd m-p, else 0):
    S = sum w|c|^2,  D = -Im sum conj(C) (W C O) - Im sum conj(C^T) (W C^T O),  Q = Re sum W C (O conj(C) O)
    R = S/4 + D/2 + Q,   G = S/4 - Q,   B = S/4 - D/2 + Q        (so R + 2G + B = S)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .errors import ConfigError

N_PIX = 128
N_WAVELENGTHS = 301
FIDELITIES = ("thin", "multislice")


@dataclass(frozen=True)
class PhysicsParams:
    """Geometry and materials; the defaults mirror the research group's FDTD setup (PHYSICS.md)."""

    period_um: float = 2.0  # L, unit cell (2 x 2 Bayer pixels of 1 um)
    height_um: float = 0.6  # h, pillar height
    depth_um: float = 2.5  # z, detector plane below the pillars
    n_substrate: float = 1.0  # n_s, medium between pillars and detector (air)
    cauchy_a: float = 1.996  # n_hi = A + B / lambda^2 (lambda in um): SiN
    cauchy_b: float = 0.0166
    n_low: float = 1.0  # index where the pattern is 0
    wavelength_min_nm: float = 400.0
    wavelength_max_nm: float = 700.0
    n_wavelengths: int = N_WAVELENGTHS
    fidelity: str = "thin"  # "thin" (this module) or "multislice" (multislice.py: wave propagation in slices)
    multislice_slices: int = 40  # slices through the pillar layer
    multislice_step_nm: float = 10.0  # wavelength sub-grid of the layer solve, interpolated to every sample
    multislice_grid: int = N_PIX  # lateral samples per side inside the layer (a multiple or divisor of 128)

    def __post_init__(self):
        if self.fidelity not in FIDELITIES:
            raise ConfigError(f"physics fidelity must be one of {FIDELITIES}, got {self.fidelity!r}")
        for name in ("period_um", "height_um", "n_substrate", "cauchy_a", "n_low", "multislice_step_nm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"physics {name} must be positive, got {getattr(self, name)}")
        if self.depth_um < 0 or self.multislice_slices < 1:
            raise ConfigError(f"physics depth_um must be >= 0 and multislice_slices >= 1, got {self.depth_um}, {self.multislice_slices}")
        g = self.multislice_grid
        if g < 8 or not (g % N_PIX == 0 or N_PIX % g == 0):
            raise ConfigError(f"physics multislice_grid must divide or be a multiple of {N_PIX}, got {g}")

    def n_high(self, lam_um):
        """Pillar index (Cauchy) at wavelengths in um."""
        return self.cauchy_a + self.cauchy_b / np.asarray(lam_um) ** 2

    def wavelengths_um(self) -> np.ndarray:
        return np.linspace(self.wavelength_min_nm, self.wavelength_max_nm, self.n_wavelengths) / 1000.0

    def to_dict(self) -> dict:
        return asdict(self)


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
    """(mask, kz_over_k2) for orders -k..k: kz_over_k2 = (n_s/lam)^2 - (m/L)^2 - (n/L)^2, mask where > 1e-9 (n_s/lam)^2."""
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


def make_plan(params: PhysicsParams | None = None, device: str | torch.device = "cpu"):
    """The plan of params.fidelity: a SimulationPlan (thin) or a multislice.MultislicePlan."""
    params = params or PhysicsParams()
    if params.fidelity == "multislice":
        from .multislice import make_multislice_plan

        return make_multislice_plan(params, device)
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


def binary_batch(structures, device: torch.device) -> torch.Tensor:
    """(B, 128, 128) float32 {0, 1} on `device` from (B, [1,] 128, 128) structures of any encoding (non-zero = 1)."""
    s = structures if torch.is_tensor(structures) else torch.as_tensor(np.asarray(structures))
    if s.dim() == 4:
        s = s[:, 0]
    if s.dim() != 3 or tuple(s.shape[1:]) != (N_PIX, N_PIX):
        raise ValueError(f"structures must be (B, 128, 128) or (B, 1, 128, 128), got {tuple(s.shape)}")
    return (s.to(device) != 0).to(torch.float32)


def quadrant_fluxes(c: torch.Tensor, weight: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
    """Exact power E_ab (..., 2, 2) through quadrant (a, b) from the orders c (..., n, n) at the detector plane.

    weight (..., n, n): each order's z-flux per |c|^2 (0 for evanescent ones); a0 = half_period_matrix(k).
    E_ab = Re sum(W C * (A^a conj(C) A^b^T)) with A^1 = I - A^0, so two small matmuls per side suffice.
    """
    cc = torch.conj(c)
    wc = weight * c
    x0 = a0 @ cc  # A0 conj(C)
    rows = []
    for xa in (x0, cc - x0):  # A^a conj(C)
        y0 = xa @ a0.transpose(0, 1)
        rows.append(torch.stack([torch.real(wc * y).sum(dim=(-2, -1)) for y in (y0, xa - y0)], dim=-1))
    return torch.stack(rows, dim=-2)


def quadrant_channels(e: torch.Tensor) -> torch.Tensor:
    """(..., 2, 2) quadrant powers -> (..., 3) R = E00, G = (E01 + E10) / 2, B = E11."""
    return torch.stack([e[..., 0, 0], 0.5 * (e[..., 0, 1] + e[..., 1, 0]), e[..., 1, 1]], dim=-1)


def simulate_power(structures, plan=None) -> torch.Tensor:
    """Positive power fractions (B, 3, n_wavelengths) float32 for binary structures (B, [1,] 128, 128)."""
    plan = plan or make_plan()
    s = binary_batch(structures, plan.device)
    if plan.params.fidelity == "multislice":
        from .multislice import multislice_power

        return multislice_power(s, plan)
    r_full = _real_spectrum(s, plan)
    out = torch.empty(s.shape[0], plan.params.n_wavelengths, 3, device=plan.device)
    for g in plan.groups:
        r = r_full[:, g.coords]  # (B, F1)
        power = torch.addmm(g.const, r[:, g.pair_i] * r[:, g.pair_j], g.quad) + r @ g.lin  # (B, G*3)
        out[:, g.index] = power.view(len(s), -1, 3)
    return out.transpose(1, 2)


def simulate_spectra(structures, params: PhysicsParams | None = None, plan=None, chunk: int = 256) -> np.ndarray:
    """Raw-format spectra (B, 3, 301) float32: NEGATIVE transmitted fractions of R, G, B (seed convention).

    The fidelity is params.fidelity (or the given plan's): thin element here, multi-slice in multislice.py."""
    if plan is None:
        plan = make_plan(params)
    structures = np.asarray(structures) if not torch.is_tensor(structures) else structures
    n = structures.shape[0]
    out = np.empty((n, 3, plan.params.n_wavelengths), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            out[start:start + chunk] = -simulate_power(structures[start:start + chunk], plan).cpu().numpy()
    return out


def brute_force_power(structure: np.ndarray, params: PhysicsParams, lam_um: np.ndarray, upsample: int) -> np.ndarray:
    """Reference R, G, B: (3, len(lam)) float64. See brute_force_quadrants."""
    e = brute_force_quadrants(structure, params, lam_um, upsample)
    return np.stack([e[0, 0], 0.5 * (e[0, 1] + e[1, 0]), e[1, 1]])


def brute_force_quadrants(structure: np.ndarray, params: PhysicsParams, lam_um: np.ndarray, upsample: int) -> np.ndarray:
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
