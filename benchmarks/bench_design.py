"""Inverse design end to end: simulate data, train quick.yaml on CPU, design N structures through the surrogate,
simulate them with the data's own settings. Prints the best design's simulated efficiency against the best
training structure's (target >= 1.05x) and the surrogate-vs-physics gap for it (target <= 0.05); the blank
cell (no pillars: 1/4 of the light on every pixel, efficiency 1/3) is printed as a second reference.

With --rounds N, the active-learning loop (design/loop.py, as `crrecon design --rounds N`): round k designs with the
model fine-tuned on the earlier rounds' verified designs; per round the best counted design (minimum length scale
>= --min-feature-px) against the best training structure (target after one round: >= 1.5x) and the surrogate's
largest gap on that round's designs (target after one round: <= 0.02), printed as a markdown table.

With --reference-steps S, the physics optimum too: the same designs optimized through the simulator's own exact
gradient (design.optimize.optimize_through_simulator), so a target the loop misses can be told apart from one the
physics does not allow. The simulator takes `crrecon simulate`'s flags (--fidelity, --slices, --grid, ...).

    python benchmarks/bench_design.py [--rows 4000] [--designs 16] [--steps 100] [--picture docs/images/designs.png]
    python benchmarks/bench_design.py --rounds 2 [--finetune-epochs 6] [--refine-lr 0.01] [--reference-steps 100]
    python benchmarks/bench_design.py --rounds 2 --fidelity multislice --grid 64 --slices 20 --step-nm 20
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
from crrecon_pipeline.cli import simulator_flag
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.design.lengthscale import length_scales
from crrecon_pipeline.design.loop import LoopSettings, run_rounds
from crrecon_pipeline.design.optimize import DesignSettings, optimize_through_simulator
from crrecon_pipeline.design.run import run_design
from crrecon_pipeline.design.verify import prepare_settings_of, recorded_simulation, simulated_bayer, training_best
from crrecon_pipeline.physics.bands import band_efficiencies, routing_efficiency
from crrecon_pipeline.physics.params import SIMULATOR_FIELDS, PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.settings import add_flags, from_flags
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train


def simulate_data(args, tmp: Path) -> tuple[Path, float]:
    """Simulate args.rows rows with the simulator flags and prepare them: (prepared folder, seconds)."""
    t = time.perf_counter()
    physics = from_flags(args, PhysicsParams)
    write_dataset(tmp / "raw", args.rows, 2, SimulationSettings(seed=args.seed, physics=physics))
    preprocess(tmp / "raw", tmp / "prepared")
    return tmp / "prepared", time.perf_counter() - t


def train_fresh(args, config: dict, tmp: Path) -> tuple[str, Path]:
    """Simulate args.rows rows, prepare them and train `config` on CPU: (best checkpoint, prepared folder)."""
    prepared_dir, t_data = simulate_data(args, tmp)
    prepared = load_prepared(prepared_dir)
    physics = from_flags(args, PhysicsParams)
    t = time.perf_counter()
    metrics = train(config, prepared, tmp / "run", device="cpu", log=lambda m: None)
    print(f"data: {args.rows} rows simulated ({physics.fidelity}) + prepared in {t_data:.0f} s ({len(prepared)} kept); "
          f"{args.config}: "
          f"{time.perf_counter() - t:.0f} s on CPU, val MSE {metrics.val_mse:.3g} "
          f"({metrics.val_mse / metrics.baseline_val_mse:.3f}x the mean baseline), "
          f"Pearson {metrics.val_pearson:.4f}",
          flush=True)
    return metrics.best_checkpoint, tmp / "prepared"


def physics_reference(settings: DesignSettings, prepared_dir: Path, steps: int) -> dict:
    """What the physics allows this parameterization: the same designs optimized through the simulator's own exact
    gradient (no surrogate, `steps` steps), scored exactly like the surrogate's designs (the training data's
    simulator and binning); the best one that meets the length scale."""
    prepared = load_prepared(prepared_dir)
    simulation = recorded_simulation(prepared).settings  # checked once: it re-simulates a few training rows
    t = time.perf_counter()
    structures, _ = optimize_through_simulator(simulation.physics, settings.changed(steps=steps))
    _, bayer = simulated_bayer(structures, simulation, prepare_settings_of(prepared))
    eff = routing_efficiency(bayer, prepared.wavelengths_nm, settings.bands)
    counted = length_scales(structures).minimum >= settings.min_feature_px
    best = int(np.argmax(np.where(counted, eff, -np.inf)))
    bands = band_efficiencies(bayer[best], prepared.wavelengths_nm, settings.bands)
    return {"best": float(eff[best]) if counted.any() else float("nan"), "counted": int(counted.sum()),
            "bands": dict(zip([b.name for b in settings.bands], np.round(bands, 4).tolist())),
            "designs": len(eff), "steps": steps, "seconds": round(time.perf_counter() - t, 1)}


def print_reference(ref: dict, train_best: float, loop_best: float) -> None:
    print(f"physics optimum (the simulator's own gradient, no surrogate; {ref['designs']} designs x {ref['steps']} "
          f"steps, {ref['counted']} meeting the length scale, {ref['seconds']:.0f} s): {ref['best']:.4f} = "
          f"{ref['best'] / train_best:.3f}x the best training structure (its bands {ref['bands']}); the surrogate's "
          f"best design reaches "
          f"{loop_best / ref['best']:.1%} of it")


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
    ap.add_argument("--rounds", type=int, default=None, help="active-learning rounds (design/loop.py)")
    ap.add_argument("--min-feature-px", type=int, default=DesignSettings.min_feature_px)
    ap.add_argument("--objective", default=DesignSettings.objective)
    ap.add_argument("--blur-sigma-px", type=float, default=DesignSettings.blur_sigma_px)
    ap.add_argument("--finetune-epochs", type=int, default=LoopSettings.finetune_epochs)
    ap.add_argument("--finetune-lr", type=float, default=LoopSettings.finetune_lr)
    ap.add_argument("--refine-lr", type=float, default=LoopSettings.refine_lr)
    ap.add_argument("--reference-steps", type=int, default=0,
                    help="also optimize through the simulator itself with this many steps (0: not): the physics "
                         "optimum")
    ap.add_argument("--reference-only", action="store_true",
                    help="simulate the data and print the physics optimum only (no surrogate, no training)")
    ap.add_argument("--finetune-design-repeat", type=int, default=LoopSettings.finetune_design_repeat)
    add_flags(ap, PhysicsParams, SIMULATOR_FIELDS, spell=simulator_flag)  # `crrecon simulate`'s flags
    args = ap.parse_args()
    config = load_config(args.config, args.set)
    settings = DesignSettings(designs=args.designs, steps=args.steps, seed=args.seed,
                              min_feature_px=args.min_feature_px, objective=args.objective,
                              blur_sigma_px=args.blur_sigma_px)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.reference_only:
            return report_reference_only(args, settings, tmp)
        if args.checkpoint:
            checkpoint, prepared_dir = args.checkpoint, Path(args.prepared)
            print(f"design only: {checkpoint} trained on {prepared_dir}", flush=True)
        else:
            checkpoint, prepared_dir = train_fresh(args, config, tmp)
        if args.rounds:
            return report_rounds(args, settings, checkpoint, prepared_dir, tmp)
        prepared = load_prepared(prepared_dir)
        n_structures = 2 * len(prepared)
        t = time.perf_counter()
        summary = run_design(checkpoint, prepared_dir, tmp / "designs", settings, device="cpu")
        t_design = time.perf_counter() - t
        ref = physics_reference(settings, prepared_dir, args.reference_steps) if args.reference_steps else None
        _, blank = simulated_bayer(np.zeros((1, 128, 128), np.uint8), recorded_simulation(prepared).settings,
                                   prepare_settings_of(prepared))
        blank_eff = float(routing_efficiency(blank, prepared.wavelengths_nm)[0])
        if args.picture:
            Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / "designs" / "designs.png", args.picture)
            shutil.copyfile(tmp / "designs" / "design_progress.png",
                            Path(args.picture).with_name("design_progress.png"))

    designs = summary.designs
    pred = np.array([d.predicted_efficiency for d in designs])
    sim = np.array([d.simulated_efficiency for d in designs])
    start = np.array([d.initial_predicted_efficiency for d in designs])
    best = summary.best_design if summary.best_design is not None else int(np.argmax(sim))
    print(f"length scale: {summary.counted_designs} of {len(designs)} designs meet {args.min_feature_px} px "
          f"(min feature px: {[d.min_feature_px for d in designs]})")
    train_best = summary.training_best_efficiency
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
    min_band = np.array([d.simulated_min_band for d in designs])
    print(f"min-band metric (objective {summary.objective}): best design {min_band[best]:.4f}, "
          f"best of all {min_band.max():.4f}, mean {min_band.mean():.4f}")
    if ref:
        print_reference(ref, train_best, float(sim[best]))
    print(json.dumps({"best_simulated": float(sim[best]), "best_predicted": float(pred[best]), "gap_best": float(gap),
                      "training_best": train_best, "ratio": float(ratio), "blank_cell": blank_eff,
                      "max_gap": float(np.abs(pred - sim).max()), "design_s": round(t_design, 1),
                      "physics_optimum": ref and ref["best"]}))


def report_reference_only(args, settings: DesignSettings, tmp: Path) -> None:
    """The physics optimum against the best training structure, without a surrogate."""
    prepared_dir, t_data = simulate_data(args, tmp)
    train_best, _ = training_best(load_prepared(prepared_dir), settings.bands)
    ref = physics_reference(settings, prepared_dir, args.reference_steps or settings.steps)
    print(f"data: {args.rows} rows ({from_flags(args, PhysicsParams).fidelity}) in {t_data:.0f} s; designs: "
          f"{settings.designs}, seed {settings.seed}, blur {settings.blur_sigma_px} px, min feature "
          f"{settings.min_feature_px} px, objective {settings.objective}")
    print(f"physics optimum: {ref['best']:.4f} = {ref['best'] / train_best:.3f}x the best training structure "
          f"({train_best:.4f}); bands {ref['bands']}; {ref['counted']} of {ref['designs']} designs meet the length "
          f"scale; {ref['steps']} steps in {ref['seconds']:.0f} s")
    print(json.dumps({"training_best": train_best, "physics_optimum": ref["best"], "bands": ref["bands"]}))


def report_rounds(args, settings: DesignSettings, checkpoint, prepared_dir: Path, tmp: Path) -> None:
    """The loop's rounds as a table: best counted design vs the best training structure, the gaps, the rows."""
    t = time.perf_counter()
    loop = LoopSettings(finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                        finetune_design_repeat=args.finetune_design_repeat, refine_lr=args.refine_lr)
    result = run_rounds(checkpoint, prepared_dir, tmp / "loop", settings, args.rounds, loop, device="cpu",
                        log=lambda message: print(message, flush=True), train_log=lambda message: None)
    train_best = result.training_best_efficiency
    print(f"{args.rounds} rounds x {args.designs} designs x {args.steps} steps, fine-tuning {args.finetune_epochs} "
          f"epochs at lr {args.finetune_lr} (design rows x{args.finetune_design_repeat}, all in training) between "
          f"rounds, later rounds refining at lr {args.refine_lr}: "
          f"{time.perf_counter() - t:.0f} s")
    print(f"best training structure: {train_best:.4f}; minimum length scale {args.min_feature_px} px")
    print("| round | designed by | counted designs | best simulated | × best training | mean simulated "
          "| max gap (designing model) | max gap after fine-tuning | rows added |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result.rounds:
        n = r.numbers
        by = "the trained model" if r.round == 0 else f"fine-tuned after round {r.round - 1}"
        after = "-" if r.gap_after is None else f"{r.gap_after:.4f}"
        best = n.best_simulated or float("nan")  # None: no design met the length scale
        print(f"| {r.round} | {by} | {n.counted_designs} / {len(r.designs)} | {best:.4f} | "
              f"{best / train_best:.3f}× | {n.mean_simulated or float('nan'):.4f} | {n.gap:.4f} | {after} | "
              f"{n.rows_added} |")
    last = result.rounds[-1].numbers
    ref = physics_reference(settings, prepared_dir, args.reference_steps) if args.reference_steps else None
    if ref:
        print_reference(ref, train_best, max(r.numbers.best_simulated or 0 for r in result.rounds))
    keep = ("round", "best_simulated", "mean_simulated", "gap", "gap_after", "counted_designs")
    print(json.dumps({"training_best": train_best, "physics_optimum": ref and ref["best"], "rounds": [
        {k: r.to_json()[k] for k in keep} | {"ratio": (r.numbers.best_simulated or float("nan")) / train_best}
        for r in result.rounds],
        "target_met": bool(len(result.rounds) > 1 and last.gap <= 0.02
                           and (last.best_simulated or 0) >= 1.5 * train_best)}))


if __name__ == "__main__":
    main()
