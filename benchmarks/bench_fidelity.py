"""How close the two simulator fidelities come to a rigorous scalar solution (benchmarks/scalar_rcwa.py), in the
geometry of the issue's rigorous set (1.6 um cell, 0.6 um SiN-like pillars on SiO2, detector 1.2 um below).

    python benchmarks/bench_fidelity.py [--rows 6] [--wavelengths 16] [--orders 12]    (~4-14 min on 2 cores)

Metrics, over rows x wavelengths: correlation of the routing signal R - B, mean per-spectrum Pearson, MSE / the
mean-spectrum baseline's MSE, the same after one global least-squares scale, and the mean transmitted power.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scalar_rcwa import scalar_rcwa_power  # noqa: E402

from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.simulate import simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator

GEOMETRY = dict(period_um=1.6, depth_um=1.2, n_substrate=1.46)


def metrics(pred: np.ndarray, ref: np.ndarray) -> str:
    routing = np.corrcoef((pred[:, 0] - pred[:, 2]).ravel(), (ref[:, 0] - ref[:, 2]).ravel())[0, 1]
    pearson = np.mean([np.corrcoef(p, r)[0, 1]
                       for p, r in zip(pred.reshape(-1, pred.shape[-1]), ref.reshape(-1, ref.shape[-1]))])
    base = np.mean((ref - ref.mean(axis=0)) ** 2)
    scale = np.sum(pred * ref) / np.sum(pred * pred)
    mse, scaled = np.mean((pred - ref) ** 2) / base, np.mean((scale * pred - ref) ** 2) / base
    power = (pred[:, 0] + 2 * pred[:, 1] + pred[:, 2]).mean()
    return (f"routing corr {routing:5.3f}  pearson {pearson:5.3f}  mse/baseline {mse:5.2f}  "
            f"after scale x{scale:.2f} {scaled:5.2f}  power {power:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--wavelengths", type=int, default=16)
    ap.add_argument("--orders", type=int, default=12, help="scalar RCWA Fourier orders |m|, |n| <= this")
    args = ap.parse_args()
    s, _ = StructureGenerator(seed=1).rows(0, args.rows)
    base = dict(GEOMETRY, n_wavelengths=args.wavelengths)
    p = PhysicsParams(**base)
    t = time.perf_counter()
    ref = np.stack([scalar_rcwa_power(x, p, p.wavelengths_um(), args.orders) for x in s])
    print(f"scalar RCWA reference: {args.rows} rows x {args.wavelengths} wavelengths, orders <= {args.orders}, "
          f"{time.perf_counter() - t:.0f} s; power {(ref[:, 0] + 2 * ref[:, 1] + ref[:, 2]).mean():.3f}")
    print(f"{'thin':>24}: {metrics(-simulate_spectra(s, PhysicsParams(**base)), ref)}")
    for slices in (20, 40, 80):
        ms = PhysicsParams(fidelity="multislice", multislice_slices=slices, multislice_step_nm=1, **base)
        print(f"{f'multislice {slices} slices':>24}: {metrics(-simulate_spectra(s, ms), ref)}")


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main()
