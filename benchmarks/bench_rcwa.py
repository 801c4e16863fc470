"""The rcwa fidelity: convergence in orders, the three fidelities against the highest-order rcwa reference on the
same structures, the wavelength sub-grid's interpolation error, and rows/s at the defaults (docs/simulator.md).

    nice -n 10 python benchmarks/bench_rcwa.py [--rows 3] [--wavelengths 6] [--ref-orders 10] [--geometry default]
    nice -n 10 python benchmarks/bench_rcwa.py --high 8 10 12 14       # one structure at 400 / 700 nm, high orders
    nice -n 10 python benchmarks/bench_rcwa.py --rate-only --rate-orders 7 8 10      # rows/s only

Reference: rcwa with |m|, |n| <= --ref-orders, every wavelength solved. Metrics over rows x wavelengths as in
bench_fidelity.py (routing correlation of R - B, per-spectrum Pearson, MSE / mean-spectrum baseline, the same after
one least-squares scale, mean power R + 2G + B). Rows/s: the full 301-sample grid at each fidelity's defaults.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fidelity import metrics  # noqa: E402

from crrecon_pipeline.physics.params import PhysicsParams  # noqa: E402
from crrecon_pipeline.physics.simulate import make_plan, simulate_spectra  # noqa: E402
from crrecon_pipeline.physics.structures import StructureGenerator  # noqa: E402

GEOMETRIES = {"default": {}, "hidden": dict(period_um=1.6, depth_um=1.2, n_substrate=1.46)}


def power(s, params: PhysicsParams) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    out = -simulate_spectra(s, params).astype(np.float64)
    return out, time.perf_counter() - t


def rate(s, params: PhysicsParams) -> float:
    plan = make_plan(params)
    t = time.perf_counter()
    simulate_spectra(s, plan=plan)
    return len(s) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--wavelengths", type=int, default=6, help="samples over 400..700 nm for the comparison")
    ap.add_argument("--ref-orders", type=int, default=10)
    ap.add_argument("--orders", type=int, nargs="*", default=[5, 6, 7, 8, 9])
    ap.add_argument("--geometry", choices=sorted(GEOMETRIES), default="default")
    ap.add_argument("--interp-orders", type=int, default=5, help="orders of the sub-grid interpolation check")
    ap.add_argument("--skip-rate", action="store_true")
    ap.add_argument("--rate-only", action="store_true", help="only the rows/s at the defaults")
    ap.add_argument("--rate-orders", type=int, nargs="*", default=None,
                    help="rcwa orders whose rows/s are measured (default: the default orders)")
    ap.add_argument("--high", type=int, nargs="*", default=[],
                    help="only this: the first structure at 400 and 700 nm for each of these orders (slow above 10)")
    args = ap.parse_args()
    geo = GEOMETRIES[args.geometry]
    if args.high:
        s, _ = StructureGenerator(seed=1).rows(0, 1)
        for n in args.high:
            out, secs = power(s, PhysicsParams(fidelity="rcwa", rcwa_orders=n, wavelength_min_nm=400,
                                               wavelength_max_nm=700, n_wavelengths=2, rcwa_step_nm=1, **geo))
            print(f"N={n:2d} ({secs:5.0f} s): 400 nm R, G, B {np.round(out[0, :, 0], 4).tolist()}  "
                  f"700 nm {np.round(out[0, :, 1], 4).tolist()}", flush=True)
        return
    if args.rate_only:
        return rates(geo, args.rate_orders)
    s, _ = StructureGenerator(seed=1).rows(0, args.rows)
    grid = dict(geo, n_wavelengths=args.wavelengths)
    print(f"{args.rows} structures x {args.wavelengths} wavelengths, geometry {args.geometry} {geo}, "
          f"torch threads {torch.get_num_threads()}")

    ref, secs = power(s, PhysicsParams(fidelity="rcwa", rcwa_orders=args.ref_orders, rcwa_step_nm=1, **grid))
    mean_power = (ref[:, 0] + 2 * ref[:, 1] + ref[:, 2]).mean()
    print(f"reference rcwa N={args.ref_orders}: {secs:.0f} s; power {mean_power:.3f}")
    print("\nconvergence: max |N - reference| over rows, channels; per wavelength and overall")
    lam = PhysicsParams(**grid).wavelengths_um() * 1000
    rows = {}
    for n in args.orders:
        out, secs = power(s, PhysicsParams(fidelity="rcwa", rcwa_orders=n, rcwa_step_nm=1, **grid))
        rows[n] = out
        per = np.abs(out - ref).max(axis=(0, 1))
        rel = np.abs(out - ref).max() / ref.mean()
        print(f"  N={n:2d} ({secs:5.0f} s): max {np.abs(out - ref).max():.4f} ({rel:.1%} of the mean channel power)  "
              + " ".join(f"{x:.0f}nm:{e:.4f}" for x, e in zip(lam, per)))

    print("\nagainst the reference")
    default = PhysicsParams(fidelity="rcwa")
    fidelities = {"thin": PhysicsParams(**grid),
                  "multislice (40 slices)": PhysicsParams(fidelity="multislice", multislice_step_nm=1, **grid)}
    for name, p in fidelities.items():
        print(f"{name:>24}: {metrics(power(s, p)[0], ref)}")
    for n, out in rows.items():
        mark = " (default)" if n == default.rcwa_orders else ""
        print(f"{f'rcwa N={n}{mark}':>24}: {metrics(out, ref)}")

    print("\nsub-grid interpolation (rcwa N=%d, 301 samples): step vs every sample solved" % args.interp_orders)
    every, secs = power(s[:1], PhysicsParams(fidelity="rcwa", rcwa_orders=args.interp_orders, rcwa_step_nm=1, **geo))
    print(f"  every sample: {secs:.0f} s")
    for step in (20.0, 10.0, 5.0):
        sub, secs = power(s[:1], PhysicsParams(fidelity="rcwa", rcwa_orders=args.interp_orders, rcwa_step_nm=step,
                                               **geo))
        err = np.abs(sub - every)
        print(f"  {step:4.0f} nm ({secs:4.0f} s): max {err.max():.2e}, rms {np.sqrt(np.mean(err**2)):.2e}")

    if not args.skip_rate:
        rates(geo, args.rate_orders)


def rates(geo: dict, orders: list[int] | None) -> None:
    """Rows/s on the full 301-sample grid: thin (256 rows), multislice (4), rcwa (1 row per order count)."""
    default = PhysicsParams(fidelity="rcwa")
    print(f"\nrows/s at the defaults (301 samples), torch threads {torch.get_num_threads()}")
    s_many, _ = StructureGenerator(seed=2).rows(0, 256)
    runs = [("thin", PhysicsParams(**geo), 256), ("multislice", PhysicsParams(fidelity="multislice", **geo), 4)]
    runs += [(f"rcwa N={n}, {default.rcwa_step_nm:g} nm", PhysicsParams(fidelity="rcwa", rcwa_orders=n, **geo), 1)
             for n in (orders or [default.rcwa_orders])]
    for name, p, n in runs:
        print(f"  {name:>24}: {rate(s_many[:n], p):10.4f} rows/s ({n} rows)", flush=True)

if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main()
