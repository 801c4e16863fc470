"""The per-epoch dashboard figure (plots.Dashboard): its drawing time over ~20 draws (the first, which builds the
figure, reported apart), its PNG size, and its share of an epoch's wall time, the epoch timed in a real short run of
the quick preset on simulated rows on the same machine. Target: <= 0.5 s a draw on a loaded 2-core machine.

    python benchmarks/bench_dashboard.py [--rows 1000] [--epochs 3] [--draws 20] [--png dashboard.png]
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.plots import Dashboard
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.records import EpochRecord
from crrecon_pipeline.train.samples import N_DASHBOARD


def cpu_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}"


def short_run(tmp: Path, rows: int, epochs: int) -> tuple[list[EpochRecord], np.ndarray, np.ndarray]:
    """The quick preset for `epochs` epochs: its epoch records, the wavelengths and the validation targets."""
    write_dataset(tmp / "raw", rows, 1, SimulationSettings(seed=0))
    preprocess(tmp / "raw", tmp / "prepared")
    prepared = load_prepared(tmp / "prepared")
    config = load_config("quick", [f"training.epochs={epochs}", "output.tensorboard=false"])
    seen = []
    train(config, prepared, tmp / "run", device="cpu", on_record=seen.append, log=lambda m: None)
    epochs_seen = [r for r in seen if isinstance(r, EpochRecord)]
    return epochs_seen, prepared.wavelengths_nm, prepared.bayer[: 2 * N_DASHBOARD]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--png", help="keep the run's own last dashboard here, to look at")
    args = ap.parse_args()
    print(f"machine: {cpu_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        history, wavelengths, true = short_run(tmp, args.rows, args.epochs)
        if args.png:
            shutil.copy(tmp / "run" / "outputs" / "dashboard.png", args.png)
        true = np.asarray(true, dtype=np.float32)
        labels = [f"{s} #{k + 1}" for s in ("val", "train") for k in range(N_DASHBOARD)]
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        dashboard = Dashboard(wavelengths, labels)
        build = time.perf_counter() - t
        times = []
        for i in range(args.draws + 1):
            # the history grows as in a run, one epoch a draw, from the measured epochs
            grown = [h.model_copy(update={"epoch": e + 1}) for e, h in
                     enumerate((history * (i // len(history) + 1))[: i + 1])]
            pred = true + 0.01 * rng.standard_normal(true.shape).astype(np.float32)
            start = time.perf_counter()
            png = dashboard.draw(grown, true, pred, tmp / "dashboard.png", args.draws + 1)
            times.append(time.perf_counter() - start)
        first = build + times.pop(0)  # building the figure and its first draw
        size = png.stat().st_size
    median = statistics.median(times)
    epoch_s = statistics.median(h.seconds for h in history)
    print(f"dashboard draw over {len(times)} draws: median {median:.3f} s, min {min(times):.3f} s, "
          f"max {max(times):.3f} s (target <= 0.5 s); the first, building the figure: {first:.3f} s; "
          f"PNG {size / 1024:.0f} KiB")
    print(f"quick preset on {args.rows} rows: median epoch {epoch_s:.1f} s over {len(history)} epochs -> the "
          f"dashboard costs {median / (epoch_s + median):.1%} of an epoch's wall time")


if __name__ == "__main__":
    main()
