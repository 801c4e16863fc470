"""Simulator speed: the shipped path end to end (structures + physics + shard files) against a straightforward
numpy implementation of the same equations (a loop over wavelengths, all 128 x 128 orders kept), same run.

    python benchmarks/bench_simulator.py [--rows 20000] [--naive-rows 3]
    python benchmarks/bench_simulator.py --fidelity multislice [--multislice-rows 16] [--naive-rows 1]
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.physics.simulate import make_plan, simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator, StructureParams


def naive_rgb(c: np.ndarray, wz: np.ndarray, m: np.ndarray) -> tuple[float, float, float]:
    """R, G, B from orders c[m, n] (orders m along both axes) with flux weights wz: the quadrant integrals literally."""
    d = m[:, None] - m[None, :]
    a0 = np.where(d == 0, 0.5, np.where(d % 2 != 0, 1j / (np.pi * np.where(d == 0, 1, d)), 0.0))
    a1 = np.eye(len(m)) - a0
    wc, cc = wz * c, np.conj(c)
    e = {(a, b): np.real(np.sum(wc * (A @ cc @ B.T))) for a, A in ((0, a0), (1, a1)) for b, B in ((0, a0), (1, a1))}
    return e[0, 0], 0.5 * (e[0, 1] + e[1, 0]), e[1, 1]


def naive_power(s: np.ndarray, p: PhysicsParams) -> np.ndarray:
    """The equations of docs/simulator.md taken literally: full FFT, every order, 128 x 128 matrices per wavelength."""
    n = 128
    m = np.fft.fftfreq(n, 1.0 / n)
    box = np.sinc(m / n) * np.exp(-1j * np.pi * m / n)
    s_hat = np.fft.fft2(s) / n**2 * box[:, None] * box[None, :]
    out = np.empty((3, p.n_wavelengths))
    for j, lam in enumerate(p.wavelengths_um()):
        n_hi = p.cauchy_a + p.cauchy_b / lam**2
        ea, eb = np.exp(2j * np.pi * p.height_um * p.n_low / lam), np.exp(2j * np.pi * p.height_um * n_hi / lam)
        c = (eb - ea) * s_hat
        c[0, 0] += ea
        k0sq = (p.n_substrate / lam) ** 2
        kz2 = k0sq - (m[:, None] / p.period_um) ** 2 - (m[None, :] / p.period_um) ** 2
        prop = kz2 > 1e-9 * k0sq
        c = np.where(prop, c * np.exp(2j * np.pi * np.sqrt(np.where(prop, kz2, 0)) * p.depth_um), 0)
        out[:, j] = naive_rgb(c, np.sqrt(np.where(prop, kz2, 0) / k0sq), m)
    return out


def naive_multislice(s: np.ndarray, p: PhysicsParams) -> np.ndarray:
    """The multi-slice model of physics/multislice.py taken literally: complex128, one wavelength at a time, every one
    of the 301 samples solved (no sub-grid), all 128 x 128 orders through the quadrant integrals."""
    n = 128
    m = np.fft.fftfreq(n, 1.0 / n)
    f2 = (m[:, None] ** 2 + m[None, :] ** 2) / p.period_um**2
    box = np.sinc(m / n) * np.exp(-1j * np.pi * m / n)
    dz = p.height_um / p.multislice_slices
    out = np.empty((3, p.n_wavelengths))
    for j, lam in enumerate(p.wavelengths_um()):
        idx = np.where(s > 0, p.cauchy_a + p.cauchy_b / lam**2, p.n_low)
        props = {v: np.exp(2j * np.pi * np.sqrt((v / lam) ** 2 - f2 + 0j) * dz) for v in np.unique(idx)}
        u = 2 * np.sqrt(idx) / (1 + idx) + 0j  # sqrt(T_top)
        power = np.sum(np.abs(u) ** 2)
        for _ in range(p.multislice_slices):
            spec = np.fft.fft2(u)
            u = sum(np.where(idx == v, np.fft.ifft2(spec * q), 0) for v, q in props.items())
            now = np.sum(np.abs(u) ** 2)
            u *= np.sqrt(min(1.0, power / now))
            power = min(power, now)
        c = np.fft.fft2(u * 2 * np.sqrt(idx) / (idx + p.n_substrate)) / n**2 * box[:, None] * box[None, :]
        kz2 = (p.n_substrate / lam) ** 2 - f2
        prop = kz2 > 1e-9 * (p.n_substrate / lam) ** 2
        kz = np.sqrt(np.where(prop, kz2, 0))
        out[:, j] = naive_rgb(np.where(prop, c * np.exp(2j * np.pi * kz * p.depth_um), 0), kz * lam, m)
    return out


def bench_multislice(args) -> None:
    """Multi-slice rows/s (physics only, the geometry of the issue's rigorous set) against naive_multislice."""
    p = PhysicsParams(fidelity="multislice", period_um=1.6, depth_um=1.2, n_substrate=1.46)
    structures, _ = StructureGenerator(seed=1).rows(0, max(args.naive_rows, args.multislice_rows))
    plan = make_plan(p)
    rates, naive_rates, diffs = [], [], []
    for _ in range(args.repeats):  # alternate the two, so load changes hit both
        t = time.perf_counter()
        naive = np.stack([naive_multislice(s.astype(float), p) for s in structures[: args.naive_rows]])
        naive_rates.append(args.naive_rows / (time.perf_counter() - t))
        t = time.perf_counter()
        fast = -simulate_spectra(structures[: args.multislice_rows], plan=plan)
        rates.append(args.multislice_rows / (time.perf_counter() - t))
        diffs.append(np.abs(fast[: args.naive_rows] - naive).max())
    rate, naive_rate = max(rates), max(naive_rates)
    print(f"multislice ({p.multislice_slices} slices, layer every {p.multislice_step_nm:g} nm, {plan.device}): "
          f"{rate:8.2f} rows/s (best of {args.repeats}; {args.multislice_rows} rows)")
    print(f"naive multislice (numpy, every wavelength solved):        {naive_rate:8.3f} rows/s  "
          f"-> {rate / naive_rate:,.1f}x naive")
    print(f"max |fast - naive| = {max(diffs):.2e} (sub-grid interpolation + float32)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--naive-rows", type=int, default=3)
    ap.add_argument("--fidelity", choices=["thin", "multislice"], default="thin")
    ap.add_argument("--multislice-rows", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.fidelity == "multislice":
        bench_multislice(args)
        return
    main_thin(args)


def main_thin(args) -> None:
    p = PhysicsParams()

    structures, _ = StructureGenerator(seed=1).rows(0, max(args.naive_rows, 512))
    t = time.perf_counter()
    naive = np.stack([naive_power(s.astype(float), p) for s in structures[: args.naive_rows]])
    naive_rate = args.naive_rows / (time.perf_counter() - t)

    plan = make_plan(p)
    simulate_spectra(structures[:64], plan=plan)  # warm-up
    t = time.perf_counter()
    fast = -simulate_spectra(structures, plan=plan)
    physics_rate = len(structures) / (time.perf_counter() - t)
    agree = np.abs(fast[: args.naive_rows] - naive).max()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_dataset(tmp, args.rows, 2, SimulationSettings(seed=0))
        e2e_default = args.rows / (time.perf_counter() - t)
        t = time.perf_counter()
        write_dataset(Path(tmp) / "all", args.rows, 2,
                      SimulationSettings(seed=0, structures=StructureParams(unfinished_fraction=0.0)))
        e2e_all = args.rows / (time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"naive numpy (loop over 301 wavelengths, all orders): {naive_rate:10.3f} rows/s ({args.naive_rows} rows)")
    print(f"fast physics only (batched, propagating orders):      {physics_rate:10.0f} rows/s  "
          f"-> {physics_rate / naive_rate:,.0f}x naive")
    print(f"end to end, 47% unfinished rows (like the research data), {args.rows} rows: {e2e_default:8.0f} rows/s  "
          f"-> {e2e_default / naive_rate:,.0f}x naive")
    print(f"end to end, every row simulated, {args.rows} rows:            {e2e_all:8.0f} rows/s  "
          f"-> {e2e_all / naive_rate:,.0f}x naive")
    print(f"max |fast - naive| = {agree:.2e}; peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
