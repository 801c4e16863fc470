"""Fine-tuning across fidelities: a surrogate pretrained on cheap rows (thin element, or a coarse multislice), then
fine-tuned on ~100 rows (--ft-train-rows; the rest of the small set held out) from another physics model (the
multislice fidelity, same geometry), against the same model trained from scratch on those rows. Arms:
scratch, full fine-tune, head only (encoder + decoder frozen), encoder frozen, each with and without early stopping,
and the unit-free `spectral` loss for the full fine-tune. Every arm uses the same config, split (by structure hash)
and epoch budget; they run alternately, seed by seed. Reported: val MSE / mean-spectrum baseline on the held-out
rows, Pearson, epochs run, trainable parameters, wall time (a markdown table last).

    python benchmarks/bench_finetune.py [--pretrain-rows 4000] [--ft-raw ms_raw] [--ft-rows 300]
        [--pretrain-fidelity thin|multislice] [--pretrain-epochs 10] [--ft-epochs 20] [--seeds 0 1 2] [--config quick]
        [--ft-train-rows 100] [--patience 5] [--head-lr 3e-4] [--decoder-lr 3e-4]
        [--set key=value ...]

Without --ft-raw (a folder of raw-format multislice shards, e.g. `crrecon simulate --fidelity multislice`), the
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ft-train-rows", type=int, default=100, help="training rows of the small set (rest: held out)")
    ap.add_argument("--patience", type=int, default=5, help="early-stopping arms: epochs without improvement")
    ap.add_argument("--head-lr", type=float, default=3e-4, help="head-only arm's lr (research code: 1e-4..5e-4)")
    ap.add_argument("--decoder-lr", type=float, default=3e-4, help="encoder-frozen arm's lr")
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
        data = PretrainData(settings=SimulationSettings(seed=1000, physics=physics,
                                                        structures=StructureParams(unfinished_fraction=0.0)),
                            rows=args.pretrain_rows)
        pre, _ = prepare_pretraining(data, work, PrepareSettings(), log=quiet)
        simulated = time.perf_counter() - t0
        pre_cfg = load_config(args.config,
                              args.set + [f"training.epochs={args.pretrain_epochs}", "training.save_every=0"])
        pretrained = train(pre_cfg, pre, work / "pretrain_run", device=args.device, log=quiet)
        print(f"pretraining: {len(pre)} {args.pretrain_fidelity} rows simulated in {simulated:.0f} s, "
              f"{args.pretrain_epochs} epochs in {time.perf_counter() - t0 - simulated:.0f} s, "
              f"val/baseline {pretrained['val_mse'] / pretrained['baseline_val_mse']:.3f} (on its own rows)")

        rows = min(args.ft_train_rows, len(small) - 1)
        split = [f"data.train_ratio={rows / len(small):.6f}"]  # ~ft-train-rows training rows, the rest held out
        init = [f"training.init_from={pretrained.best_checkpoint}"]
        results = {}
        for seed in args.seeds:  # every arm on the same seed and split, alternately
            for arm, (config, extra) in arms(args, init).items():
                cfg = load_config(config, args.set + split + [f"training.epochs={args.ft_epochs}", f"seed={seed}",
                                                              "training.save_every=0", *extra])
                t = time.perf_counter()
                m = train(cfg, small, work / f"{arm}_{seed}", device=args.device, log=quiet)
                row = {"arm": arm, "seed": seed, "val_over_baseline": round(m.mse_vs_baseline, 4),
                       "val_pearson": round(m.val_pearson, 4), "epochs_run": m.epochs_completed,
                       "trainable_params": m.trainable_params, "train_rows": rows,
                       "seconds": round(time.perf_counter() - t, 1), "device": m.device}
                results.setdefault(arm, []).append(row)
                print(json.dumps(row))
        print_table(results)


def arms(args, init: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Scratch, full fine-tune, head only, encoder frozen (each with and without early stopping), and the spectral
    loss (unit-free) against the config's loss for the full fine-tune: {arm: (preset, overrides)}."""
    stop = [f"training.early_stopping={{patience: {args.patience}}}"]
    head = ["training.freeze=[encoder, decoder]", f"training.lr={args.head_lr}", "training.warmup_ratio=0"]
    encoder = ["training.freeze=[encoder]", f"training.lr={args.decoder_lr}"]
    base = {"scratch": [], "full": init, "head": init + head, "encoder_frozen": init + encoder}
    out = {}
    for name, extra in base.items():
        out[name] = (args.config, extra)
        out[f"{name}+early_stop"] = (args.config, extra + stop)
    out["full+spectral"] = (args.config, init + ["loss.name=spectral",
                                                 "loss.params={w_mse: 1, w_grad: 0.5, unit_free: true}"])
    return out


def print_table(results: dict) -> None:
    print("| arm | val MSE / mean baseline | Pearson | epochs run | trainable params | wall s |")
    print("|---|---|---|---|---|---|")
    scratch = np.mean([r["val_over_baseline"] for r in results["scratch"]])
    for arm, rows in results.items():
        ratio = np.mean([r["val_over_baseline"] for r in rows])
        print(f"| {arm} | {ratio:.3f} ({ratio / scratch:.2f}x scratch) | "
              f"{np.mean([r['val_pearson'] for r in rows]):.3f} | {np.mean([r['epochs_run'] for r in rows]):.1f} | "
              f"{rows[0]['trainable_params']:,} | {np.mean([r['seconds'] for r in rows]):.1f} |")

if __name__ == "__main__":
    main()
