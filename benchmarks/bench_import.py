"""`crrecon import` against the research code itself: for each of the research group's run configs, build their
model with THEIR code (DIR/code/CR_recon/models, seeded), save it in their trainer's checkpoint format, run
`crrecon import --config THEIRS.yaml --checkpoint THEIRS.pt --out ...`, then `crrecon predict` on random binary
structures, and compare with their model's own output after their trainer's projection (their constraints.py, with
their defaults where the config has no `constraints` block): max |Δ| absolute and relative (to the largest
|output|), projection included, and the share of outputs the projection moved. Also: which of their configs import
(the target is all of them), and the contract warnings.

DIR is a clone of hyoseokp/data_CR (the research code is only read from there, never copied into this repository).

    python benchmarks/bench_import.py --research DIR [--rows 16] [--configs default.yaml,smoke.yaml]
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def research_modules(code_dir: Path):
    """Their model registry and projection, imported from their folder (their package names: models, constraints)."""
    sys.path.insert(0, str(code_dir))
    import constraints  # noqa: PLC0415 - the research code's module
    import models  # noqa: PLC0415

    return models.get_model, constraints.enforce_intensity_sum_range


def their_checkpoint(get_model, cfg: dict, path: Path, seed: int) -> torch.nn.Module:
    """Their model, seeded, saved as their trainer's save_checkpoint writes it (after a 5-epoch run, say)."""
    torch.manual_seed(seed)
    model = get_model(cfg["model"]["name"], **cfg["model"]["params"]).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["training"]["lr"], betas=(0.9, 0.95), eps=1e-8)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 4, "val_loss": 0.011,
                "best_val_loss": 0.0105, "train_losses": [0.05, 0.03, 0.02, 0.015, 0.012],
                "val_losses": [0.04, 0.025, 0.018, 0.0105, 0.011]}, path)
    return model


@torch.no_grad()
def their_prediction(model, project, cfg: dict, structures: np.ndarray) -> np.ndarray:
    """Their forward as their trainer validates: inputs {0,1} -> 2x - 1 (map_to_pm1), then the projection with
    their trainer's defaults."""
    x = torch.from_numpy(structures.astype(np.float32))
    if cfg["data"].get("map_to_pm1", True):
        x = x * 2.0 - 1.0
    block = cfg.get("constraints", {}) or {}
    raw = model(x)
    out = project(raw, sum_min=float(block.get("sum_min", 0.45)), sum_max=float(block.get("sum_max", 0.95)),
                  physical_is_negative=bool(block.get("physical_is_negative", False)))
    return out.float().numpy(), float((out != raw).float().mean())


def crrecon(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def one_config(config: Path, get_model, project, structures: Path, tmp: Path) -> dict:
    cfg = yaml.safe_load(config.read_text())
    ckpt = tmp / f"{config.stem}_best.pt"
    model = their_checkpoint(get_model, cfg, ckpt, seed=0)
    theirs, projected = their_prediction(model, project, cfg, np.load(structures))
    t0 = time.perf_counter()
    res = crrecon("import", "--config", config, "--checkpoint", ckpt, "--out", tmp / config.stem)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        return {"config": config.name, "imported": False, "error": res.stderr.strip().splitlines()[-1]}
    report = json.loads(res.stdout.strip().splitlines()[-1])
    pred = tmp / f"{config.stem}_pred.npy"
    res = crrecon("predict", "--checkpoint", report["checkpoint"], "--structures", structures, "--out", pred,
                  "--device", "cpu")
    if res.returncode != 0:
        return {"config": config.name, "imported": True, "error": res.stderr.strip().splitlines()[-1]}
    ours = np.load(pred)
    delta = float(np.abs(ours - theirs).max())
    return {"config": config.name, "model": cfg["model"]["name"], "loss": cfg["loss"]["name"], "imported": True,
            "import_s": round(seconds, 1), "max_abs_delta": delta,
            "max_rel_delta": delta / float(np.abs(theirs).max()), "projected": round(projected, 3),
            "mapped": len(report["mapped"]),
            "dropped": len(report["dropped"]), "filled": len(report["filled"]), "warnings": report["warnings"]}


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        keep = ("Model name", "CPU(s)", "L2 cache", "L3 cache")
        return ", ".join(f"{k} {fields[k].strip()}" for k in keep if k in fields)
    except OSError:
        return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--research", required=True, type=Path, help="a clone of hyoseokp/data_CR")
    p.add_argument("--rows", type=int, default=16, help="random binary structures predicted per model")
    p.add_argument("--configs", default="", help="comma-separated config file names (default: all)")
    args = p.parse_args()
    code_dir = args.research / "code" / "CR_recon"
    get_model, project = research_modules(code_dir)
    configs = sorted((code_dir / "configs").glob("*.yaml"))
    if args.configs:
        configs = [c for c in configs if c.name in args.configs.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        structures = Path(tmp) / "structures.npy"
        np.save(structures, (rng.random((args.rows, 1, 128, 128)) > 0.5).astype(np.uint8))
        for config in configs:
            rows.append(one_config(config, get_model, project, structures, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    imported = sum(r["imported"] and "error" not in r for r in rows)
    print(f"machine: {machine()}; torch {torch.__version__}; {args.rows} structures per model", file=sys.stderr)
    for r in rows:
        if "error" in r:
            print(f"{r['config']:40s} FAILED: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['config']:40s} {r['model']:16s} max|Δ| {r['max_abs_delta']:.3g} "
                  f"(relative {r['max_rel_delta']:.3g})  projected {r['projected']:.0%}  import {r['import_s']} s  "
                  f"warnings {len(r['warnings'])}",
                  file=sys.stderr)
    print(json.dumps({"configs": len(rows), "imported": imported, "rows": rows,
                      "worst_rel_delta": max((r["max_rel_delta"] for r in rows if "error" not in r), default=None)}))


if __name__ == "__main__":
    main()
