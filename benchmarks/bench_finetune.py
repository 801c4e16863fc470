"""Fine-tuning across fidelities: a surrogate pretrained on cheap rows (thin element, or a coarse multislice), then
fine-tuned on a small set from another physics model (the multislice fidelity, same geometry), against the same model
trained from scratch on that small set. Both arms use the same config, split (by structure hash) and number of
fine-tuning epochs; they run alternately, seed by seed. Reported: val MSE / mean-spectrum baseline on the small set's
validation split.

    python benchmarks/bench_finetune.py [--pretrain-rows 4000] [--ft-raw /work/ms_raw] [--ft-rows 300]
        [--pretrain-fidelity thin|multislice] [--pretrain-epochs 10] [--ft-epochs 20] [--seeds 0 1] [--config quick]
        [--set key=value ...]

Without --ft-raw (a folder of seed-format multislice shards, e.g. `crrecon simulate --fidelity multislice`), the
small set is simulated here with --ms-grid / --ms-slices (coarse by default: the full multislice runs ~1-3 rows/s
on a CPU).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.rawfiles import discover_shards, spectra_path, structure_path
from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.physics.structures import StructureParams
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.pretrain import PretrainData, prepare_pretraining


def small_set(args, work: Path) -> tuple[Path, str]:
    """The first --ft-rows rows of --ft-raw (shard order) as one shard, or freshly simulated multislice rows."""
    raw = work / "ft_raw"
    if args.ft_raw:
        structures, spectra, left = [], [], args.ft_rows
        for k in discover_shards(args.ft_raw):
            if left <= 0:
                break
            s = np.load(structure_path(args.ft_raw, k), mmap_mode="r")[:left]
            structures.append(np.asarray(s))
            spectra.append(np.asarray(np.load(spectra_path(args.ft_raw, k), mmap_mode="r")[:left]))
            left -= len(s)
        raw.mkdir(parents=True)
        np.save(structure_path(raw, 0), np.concatenate(structures))
        np.save(spectra_path(raw, 0), np.concatenate(spectra))
        return raw, f"{args.ft_raw} (first {sum(len(s) for s in structures)} rows)"
    physics = PhysicsParams(fidelity="multislice", multislice_grid=args.ms_grid, multislice_slices=args.ms_slices)
    t0 = time.perf_counter()
    write_dataset(raw, args.ft_rows, 1, SimulationSettings(seed=5, physics=physics,
                                                           structures=StructureParams(unfinished_fraction=0.0)))
    return raw, (f"{args.ft_rows} multislice rows simulated here (grid {args.ms_grid}, {args.ms_slices} slices, "
                 f"{time.perf_counter() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-rows", type=int, default=4000)
    ap.add_argument("--ft-raw", type=Path, default=None)
    ap.add_argument("--ft-rows", type=int, default=300)
    ap.add_argument("--ms-grid", type=int, default=64)
    ap.add_argument("--ms-slices", type=int, default=10)
    ap.add_argument("--pretrain-fidelity", choices=["thin", "multislice"], default="multislice")
    ap.add_argument("--pretrain-grid", type=int, default=32, help="multislice pretraining: lateral grid")
    ap.add_argument("--pretrain-slices", type=int, default=8, help="multislice pretraining: slices")
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--ft-epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--config", default="quick")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    quiet = lambda msg: None  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw, described = small_set(args, work)
        preprocess(raw, work / "ft_prepared")
        small = load_prepared(work / "ft_prepared")
        print(f"small set: {described}; {len(small)} finished rows")

        t0 = time.perf_counter()
        physics = PhysicsParams(fidelity=args.pretrain_fidelity, multislice_grid=args.pretrain_grid,
                                multislice_slices=args.pretrain_slices, multislice_step_nm=30)
        data = PretrainData(SimulationSettings(seed=1000, physics=physics,
                                               structures=StructureParams(unfinished_fraction=0.0)), args.pretrain_rows)
        pre, _ = prepare_pretraining(data, work, PrepareSettings(), log=quiet)
        simulated = time.perf_counter() - t0
        pre_cfg = load_config(args.config,
                              args.set + [f"training.epochs={args.pretrain_epochs}", "training.save_every=0"])
        pretrained = train(pre_cfg, pre, work / "pretrain_run", device=args.device, log=quiet)
        print(f"pretraining: {len(pre)} {args.pretrain_fidelity} rows simulated in {simulated:.0f} s, "
              f"{args.pretrain_epochs} epochs in {time.perf_counter() - t0 - simulated:.0f} s, "
              f"val/baseline {pretrained['val_mse'] / pretrained['baseline_val_mse']:.3f} (on its own rows)")

        results = {"scratch": [], "fine_tuned": []}
        for seed in args.seeds:  # alternately, same seed and split for both arms
            for arm, extra in (("scratch", []),
                               ("fine_tuned", [f"training.init_from={pretrained['best_checkpoint']}"])):
                cfg = load_config(args.config, args.set + [f"training.epochs={args.ft_epochs}", f"seed={seed}",
                                                           "training.save_every=0", *extra])
                t = time.perf_counter()
                m = train(cfg, small, work / f"{arm}_{seed}", device=args.device, log=quiet)
                ratio = m["val_mse"] / m["baseline_val_mse"]
                results[arm].append(ratio)
                print(json.dumps({"arm": arm, "seed": seed, "val_over_baseline": round(ratio, 4),
                                  "val_pearson": round(m["val_pearson"], 4), "val_samples": m["val_samples"],
                                  "seconds": round(time.perf_counter() - t, 1), "device": m["device"]}))
        s, f = np.mean(results["scratch"]), np.mean(results["fine_tuned"])
        print(f"val MSE / mean baseline on the small set: scratch {s:.3f}, pretrained + fine-tuned {f:.3f} "
              f"({s / f:.2f}x lower error fine-tuned; mean over seeds {args.seeds})")


if __name__ == "__main__":
    main()
