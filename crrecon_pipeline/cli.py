"""The `crrecon` command: the same core code as the Dagster assets, for people used to the seed's scripts.

Every subcommand prints human progress on stderr and, where DESIGN.md says so, one JSON line last on stdout.
Bad input ends with exit code 2 and one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .npyio import DataError


def _progress(total: int, desc: str, unit: str = "row"):
    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True,
               disable=None)  # disable=None: quiet when stderr is not a terminal (logs, CI)
    return bar, bar.update


def cmd_simulate(args) -> dict:
    from .physics import PhysicsParams
    from .structures import StructureParams
    from .synthetic import SimulationSettings, write_dataset

    settings = SimulationSettings(seed=args.seed, physics=PhysicsParams(),
                                  structures=StructureParams(unfinished_fraction=args.unfinished_fraction))
    bar, update = _progress(args.rows, "simulate")
    t0 = time.perf_counter()
    with bar:
        files = write_dataset(args.out, args.rows, args.shards, settings, chunk=args.chunk, device=args.device, progress=update)
    rate = args.rows / (time.perf_counter() - t0)
    return {"rows": args.rows, "shards": len(files), "out": str(Path(args.out).resolve()), "rows_per_s": round(rate, 1)}


def cmd_preprocess(args) -> dict:
    from .data import PrepareSettings, preprocess
    from .rawfiles import discover_shards, open_shard

    settings = PrepareSettings(binning=args.binning)
    total = sum(open_shard(args.raw, k, settings.n_wavelengths).rows for k in discover_shards(args.raw))
    bar, update = _progress(total, "preprocess")
    with bar:
        return preprocess(args.raw, args.out, settings, progress=update)


def cmd_train(args) -> dict:
    from .config import load_config
    from .training import train_from_config

    config = load_config(args.config, args.set)
    metrics = train_from_config(config, out_dir=args.out, raw_dir=args.raw, prepared_dir=args.prepared,
                                resume=args.resume, device=args.device, progress=True)
    return metrics if os.environ.get("RANK", "0") == "0" else None  # under torchrun, rank 0 reports


def cmd_analyze(args) -> dict | None:
    from .analysis import analyze_log, format_report

    result = analyze_log(args.log)
    if args.json:
        return result
    print(format_report(result))
    return None


def cmd_predict(args) -> dict:
    from .inference import predict_file

    return predict_file(args.checkpoint, args.structures, args.out, device=args.device)


def cmd_design(args) -> dict:
    from .design import DesignSettings, bayer_bands, run_design

    settings = DesignSettings(designs=args.designs, steps=args.steps, seed=args.seed, blur_sigma_px=args.blur_sigma_px,
                              bands=bayer_bands(_floats(args.band_edges, "--band-edges"), _floats(args.band_weights, "--band-weights")))
    bar, update = _progress(args.steps, "design", unit="step")
    with bar:
        summary = run_design(args.checkpoint, args.prepared, args.out, settings, args.shard_index, args.device, update)
    keep = ("index", "predicted_efficiency", "simulated_efficiency")
    print(f"design: {summary['verification']}", file=sys.stderr)
    return {"designs": [{k: d[k] for k in keep} for d in summary["designs"]],
            "training_best_efficiency": summary["training_best_efficiency"], "out": summary["out"]}


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crrecon", description="Color-router surrogate pipeline (data, training, analysis).")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write seed-format raw shards from the built-in simulator")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--rows", required=True, type=int)
    s.add_argument("--shards", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--unfinished-fraction", type=float, default=0.47)
    s.add_argument("--chunk", type=int, default=1024, help="rows simulated at a time (bounds memory)")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("preprocess", help="raw shards -> filtered Bayer arrays + rotated set")
    s.add_argument("--raw", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--binning", choices=["mean", "subsample"], default="mean")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("train", help="train a surrogate from a YAML config")
    s.add_argument("--config", required=True, type=Path)
    src = s.add_mutually_exclusive_group()
    src.add_argument("--raw", type=Path, help="raw shard folder (preprocessed into OUT/prepared)")
    src.add_argument("--prepared", type=Path, help="folder written by `crrecon preprocess`")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--resume", default=None, help="auto (latest checkpoint in OUT) or a checkpoint path")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. training.epochs=4")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("analyze", help="diagnose a train_log.txt and suggest the next run")
    s.add_argument("--log", required=True, type=Path)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("predict", help="predict Bayer spectra for structures with a checkpoint")
    s.add_argument("--checkpoint", required=True, type=Path)
    s.add_argument("--structures", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("design", help="design structures with a trained surrogate; verify them with the simulator")
    s.add_argument("--checkpoint", required=True, type=Path)
    s.add_argument("--prepared", required=True, type=Path, help="the prepared folder the model was trained on")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--designs", type=int, default=8)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shard-index", type=int, default=None, help="k of the written shard (default: next free in OUT)")
    s.add_argument("--blur-sigma-px", type=float, default=3.0, help="minimum feature size (periodic Gaussian blur)")
    s.add_argument("--band-edges", default="400,500,600,700", help="B|G|R band boundaries in nm")
    s.add_argument("--band-weights", default="1,1,1", help="weights of the B, G, R bands")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_design)
    return p


def _json_safe(value):
    """Strict JSON: NaN and Inf (a diverged run's losses) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"crrecon {args.command}: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crrecon {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(_json_safe(result), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
