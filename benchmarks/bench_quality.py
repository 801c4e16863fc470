"""Surrogate quality per physics and dataset size: val MSE as a ratio to the mean-spectrum baseline (the training
originals' mean per pixel), per-spectrum Pearson, peak-wavelength and routing-efficiency errors, wall time.

Datasets: the built-in thin-element simulator (generated here: fast) and a multi-slice raw folder (--multislice-raw,
e.g. one made by `crrecon simulate --fidelity multislice`; the multi-slice simulator runs a few rows/s on a CPU,
so this script never makes a large one: without the folder it simulates --multislice-rows rows itself). Each
dataset trains at every --sizes (finished rows: the first N in shard order; "all" = every row) with every preset.

    python benchmarks/bench_quality.py --multislice-raw ms_raw [--sizes 500 2000 all] [--presets quick]
        [--set training.epochs=10] [--device cpu] [--datasets thin multislice]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import PackedStructures, Prepared, load_prepared
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train


def first_rows(prepared: Prepared, n: int) -> Prepared:
    """The first n prepared rows (the hash split keeps each row's side whatever the subset)."""
    def cut(packed):
        return None if packed is None else PackedStructures(packed.packed[:n])

    rotated = None if prepared.rotated_bayer is None else prepared.rotated_bayer[:n]
    return Prepared(structures=cut(prepared.structures), bayer=prepared.bayer[:n],
                    rotated_structures=cut(prepared.rotated_structures), rotated_bayer=rotated,
                    source_rows=prepared.source_rows[:n], shards=prepared.shards,
                    wavelengths_nm=prepared.wavelengths_nm, versions=prepared.versions)


def dataset(name: str, args, tmp: Path) -> Prepared:
    raw = tmp / f"{name}_raw"
    if name == "thin":
        write_dataset(raw, args.thin_rows, 2, SimulationSettings(seed=0))
    elif args.multislice_raw:
        raw = Path(args.multislice_raw)
    else:
        write_dataset(raw, args.multislice_rows, 2,
                      SimulationSettings(seed=5, physics=PhysicsParams(fidelity="multislice")))
    preprocess(raw, tmp / f"{name}_prepared")
    return load_prepared(tmp / f"{name}_prepared")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["thin", "multislice"])
    ap.add_argument("--thin-rows", type=int, default=5000, help="raw rows of the thin-element set (~53%% finish)")
    ap.add_argument("--multislice-raw", default=None, help="a multi-slice raw folder (default: simulate a small one)")
    ap.add_argument("--multislice-rows", type=int, default=400, help="raw rows to simulate without --multislice-raw")
    ap.add_argument("--sizes", nargs="+", default=["500", "2000", "all"])
    ap.add_argument("--presets", nargs="+", default=["quick"])
    ap.add_argument("--set", action="append", default=[], help="config overrides for every run (key=value)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}; overrides {args.set or 'none'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.datasets:
            full = dataset(name, args, tmp)
            sizes = sorted({len(full) if s == "all" else min(int(s), len(full)) for s in args.sizes})
            for n in sizes:
                for preset in args.presets:
                    config = load_config(f"configs/{preset}.yaml", args.set)
                    t = time.perf_counter()
                    m = train(config, first_rows(full, n), tmp / f"run_{name}_{n}_{preset}", device=args.device,
                              log=lambda msg: None)
                    wall = time.perf_counter() - t
                    row = {"data": name, "rows": n, "preset": preset, "ratio": m.mse_vs_baseline,
                           "pearson": m.val_pearson, "peak_nm": m.val_peak_error_nm,
                           "routing_error": m.get("val_routing_error"), "routing": m.get("val_routing_efficiency"),
                           "epochs": m.epochs_completed, "train_samples": m.train_samples,
                           "val_rows": m.val_samples, "wall_s": round(wall, 1)}
                    results.append(row)
                    print(f"{name:10s} {n:6d} rows {preset:8s}: {row['ratio']:.3f}x baseline, "
                          f"Pearson {row['pearson']:.3f}, peak {row['peak_nm']:.1f} nm, "
                          f"routing error {row['routing_error'] or float('nan'):.4f} "
                          f"(true {row['routing'] or float('nan'):.3f}); "
                          f"{row['epochs']} epochs x {row['train_samples']} samples, {row['val_rows']} val rows, "
                          f"{wall:.0f} s", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
