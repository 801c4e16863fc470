"""Training: quick.yaml on 5,000 simulated rows (wall time, validation MSE against the mean baseline), and the
input pipeline's share of a training step (the loader alone vs loader + model step). On a GPU, add
--config configs/default.yaml for samples/s of the research code's model.

    python benchmarks/bench_training.py [--rows 5000] [--config configs/quick.yaml] [--device auto]
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
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.train.batches import DeviceData
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.setup import build_model, resolve_device


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def loader_share(config: dict, prepared, dev, steps: int = 30) -> tuple[float, float]:
    """Seconds per batch for the loader alone and for loader + forward/backward/step."""
    data = DeviceData(prepared, dev, with_rotated=True)
    bs = config.data.batch_size
    model = build_model(config).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = get_loss(config.loss.name, **config.loss.params)
    g = torch.Generator().manual_seed(0)
    idx = [torch.randint(0, len(data.targets), (bs,), generator=g).to(dev) for _ in range(steps)]

    def run(step: bool) -> float:
        sync(dev)
        t = time.perf_counter()
        for i in idx:
            x, y = data.inputs(i), data.targets[i]
            if step:
                loss = loss_fn(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        sync(dev)
        return (time.perf_counter() - t) / steps

    run(True)  # warm-up
    return run(False), run(True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    dev = resolve_device(args.device)
    config = load_config(args.config, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "raw", args.rows, 2, SimulationSettings(seed=0))
        preprocess(tmp / "raw", tmp / "prepared")
        prepared = load_prepared(tmp / "prepared")
        loader, step = loader_share(config, prepared, dev)
        print(f"input pipeline: {loader * 1e3:.2f} ms/batch alone, {step * 1e3:.1f} ms/batch with the model step "
              f"-> {loader / step:.1%} of a step", flush=True)
        t = time.perf_counter()
        metrics = train(config, prepared, tmp / "run", device=args.device, log=lambda m: None)
        wall = time.perf_counter() - t
    print(f"{args.config} on {args.rows} rows ({metrics.train_samples} training samples) on {metrics.device}: "
          f"{wall:.0f} s for {metrics.epochs_completed} epochs, {metrics.samples_per_s:.0f} samples/s")
    print(f"val MSE {metrics.val_mse:.3g} vs mean baseline {metrics.baseline_val_mse:.3g} "
          f"-> {metrics.val_mse / metrics.baseline_val_mse:.3f}x (target <= 0.25); "
          f"Pearson {metrics.val_pearson:.4f}")
    print(json.dumps({k: getattr(metrics, k)
                      for k in ("val_mse", "baseline_val_mse", "val_pearson", "samples_per_s", "n_params")} |
                     {"wall_s": round(wall, 1), "loader_ms": loader * 1e3, "step_ms": step * 1e3}))


if __name__ == "__main__":
    main()
