"""Inverse design end to end: simulate data, train quick.yaml on CPU, design N structures through the surrogate,
simulate them with the data's own settings. Prints the best design's simulated efficiency against the best
training structure's (target >= 1.05x) and the surrogate-vs-physics gap for it (target <= 0.05); the blank
cell (no pillars: 1/4 of the light on every pixel, efficiency 1/3) is printed as a second reference.

    python benchmarks/bench_design.py [--rows 4000] [--designs 16] [--steps 100] [--picture docs/images/designs.png]
    python benchmarks/bench_design.py --checkpoint RUN/best.pt --prepared DIR ...   (design only, a model trained
        earlier with `crrecon train`, e.g. on a loaded machine where training here would take too long)
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.design.optimize import DesignSettings
from crrecon_pipeline.design.run import run_design
from crrecon_pipeline.design.verify import prepare_settings_of, recorded_simulation, simulated_bayer
from crrecon_pipeline.physics.bands import routing_efficiency
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train


def train_fresh(args, config: dict, tmp: Path) -> tuple[str, Path]:
    """Simulate args.rows rows, prepare them and train `config` on CPU: (best checkpoint, prepared folder)."""
    t = time.perf_counter()
    write_dataset(tmp / "raw", args.rows, 2, SimulationSettings(seed=args.seed))
    preprocess(tmp / "raw", tmp / "prepared")
    prepared = load_prepared(tmp / "prepared")
    t_data = time.perf_counter() - t
    t = time.perf_counter()
    metrics = train(config, prepared, tmp / "run", device="cpu", log=lambda m: None)
    print(f"data: {args.rows} rows simulated + prepared in {t_data:.0f} s ({len(prepared)} kept); {args.config}: "
          f"{time.perf_counter() - t:.0f} s on CPU, val MSE {metrics['val_mse']:.3g} "
          f"({metrics['val_mse'] / metrics['baseline_val_mse']:.3f}x the mean baseline), "
          f"Pearson {metrics['val_pearson']:.4f}",
          flush=True)
    return metrics["best_checkpoint"], tmp / "prepared"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--designs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None, help="skip data and training: design with this model ...")
    ap.add_argument("--prepared", default=None, help="... and the prepared folder it was trained on")
    ap.add_argument("--picture", default=None, help="copy designs.png here (e.g. docs/images/designs.png)")
    args = ap.parse_args()
    config = load_config(args.config, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            checkpoint, prepared_dir = args.checkpoint, Path(args.prepared)
            print(f"design only: {checkpoint} trained on {prepared_dir}", flush=True)
        else:
            checkpoint, prepared_dir = train_fresh(args, config, tmp)
        prepared = load_prepared(prepared_dir)
        n_structures = 2 * len(prepared)
        t = time.perf_counter()
        summary = run_design(checkpoint, prepared_dir, tmp / "designs",
                             DesignSettings(designs=args.designs, steps=args.steps, seed=args.seed), device="cpu")
        t_design = time.perf_counter() - t
        _, blank = simulated_bayer(np.zeros((1, 128, 128), np.uint8), recorded_simulation(prepared).settings,
                                   prepare_settings_of(prepared))
        blank_eff = float(routing_efficiency(blank, prepared.wavelengths_nm)[0])
        if args.picture:
            Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / "designs" / "designs.png", args.picture)
            shutil.copyfile(tmp / "designs" / "design_progress.png",
                            Path(args.picture).with_name("design_progress.png"))

    designs = summary["designs"]
    pred = np.array([d["predicted_efficiency"] for d in designs])
    sim = np.array([d["simulated_efficiency"] for d in designs])
    start = np.array([d["initial_predicted_efficiency"] for d in designs])
    best = int(np.argmax(sim))
    train_best = summary["training_best_efficiency"]
    ratio, gap = sim[best] / train_best, abs(pred[best] - sim[best])
    print(f"design: {args.designs} designs x {args.steps} steps in {t_design:.0f} s (optimization, simulation, files)")
    print(f"surrogate efficiency: starts {start.mean():.4f} -> designs {pred.mean():.4f} (mean); "
          f"simulated {sim.mean():.4f} (mean)")
    print(f"best design {best}: simulated {sim[best]:.4f}, predicted {pred[best]:.4f}, |gap| {gap:.4f} "
          f"(target <= 0.05)")
    print(f"best training structure (of {n_structures} incl. 180-degree twins): {train_best:.4f} -> "
          f"ratio {ratio:.3f}x (target >= 1.05); blank cell {blank_eff:.4f} -> {sim[best] / blank_eff:.3f}x")
    print(f"all designs: |predicted - simulated| max {np.abs(pred - sim).max():.4f}, "
          f"mean {np.abs(pred - sim).mean():.4f}")
    print(json.dumps({"best_simulated": float(sim[best]), "best_predicted": float(pred[best]), "gap_best": float(gap),
                      "training_best": train_best, "ratio": float(ratio), "blank_cell": blank_eff,
                      "max_gap": float(np.abs(pred - sim).max()), "design_s": round(t_design, 1)}))


if __name__ == "__main__":
    main()
