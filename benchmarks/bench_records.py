"""Cost of the live reporting per epoch against one training epoch of the quick preset on the same machine, timed
alternately: the structured metrics (10 progress records + 1 epoch record with its fsync, to metrics.jsonl and
through the observation builder), the progress pacer's clock read after every batch, and the live loss-curve
figure (its drawing cost, amortized over the `every_epochs` it waits; LiveCurves also caps it at 1 % of wall time).

    python benchmarks/bench_records.py [--rows 1000] [--repeats 3]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.report.run_metadata import LiveCurves, observation_metadata, progress_line
from crrecon_pipeline.train import records
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.sinks import CallbackSink, JsonlSink, Recorder


def records_of_one_epoch(folder: Path, epoch: int, clock: records.Clock) -> float:
    def sink(record):  # what the Dagster layer does with each record, minus the event write itself
        observation_metadata(record) if isinstance(record, records.EpochRecord) else progress_line(record)

    t = time.perf_counter()
    with Recorder([JsonlSink(folder / records.FILENAME), CallbackSink(sink)]) as log:
        for b in range(1, 11):
            log.emit(records.ProgressRecord(epoch=epoch, epochs=30, batch=b, batches=10, lr=1e-3,
                                            **clock.stamp(epoch, b / 10)))
        log.emit(records.EpochRecord(epoch=epoch, epochs=30, train_loss=0.01, val_loss=0.01, best_val=0.01, lr=1e-3,
                                     samples_per_s=800.0, seconds=5.0, **clock.stamp(epoch, 1.0)))
    return time.perf_counter() - t


def pacing_of_one_epoch(batches: int) -> float:
    pacer = records.ProgressPacer(batches)
    t = time.perf_counter()
    for b in range(1, batches + 1):
        pacer.due(b)
    return time.perf_counter() - t


def live_figure(folder: Path, epochs: int) -> float:
    """One live figure of an `epochs`-long history (forced due): what LiveCurves spends when it draws."""
    live = LiveCurves(folder / "live.png", every_epochs=1, every_s=0.0, max_share=1e9)
    for e in range(1, epochs + 1):
        live.history.append(records.EpochRecord(epoch=e, epochs=30, train_loss=1 / e, val_loss=1.1 / e, lr=1e-3))
    t = time.perf_counter()
    live.update(records.EpochRecord(epoch=epochs + 1, epochs=30, train_loss=0.01, val_loss=0.01, lr=1e-3))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "raw", args.rows, 1, SimulationSettings(seed=1))
        preprocess(tmp / "raw", tmp / "prepared")
        prepared = load_prepared(tmp / "prepared")
        config = load_config("quick", ["training.epochs=1"])
        clock = records.Clock(1, 30)
        batches = -(-int(0.9 * args.rows * 2) // config.data.batch_size)  # train split, 180-degree twins
        every = LiveCurves(tmp / "x.png").every_epochs
        epoch_s, record_s, pace_s, figure_s = [], [], [], []
        for i in range(args.repeats):  # alternate: one training epoch, then one epoch's reporting
            m = train(config, prepared, tmp / f"run{i}", device="cpu", log=lambda msg: None)
            epoch_s.append(m.seconds_per_epoch)
            record_s.append(records_of_one_epoch(tmp, i + 1, clock))
            pace_s.append(pacing_of_one_epoch(batches))
            figure_s.append(live_figure(tmp, 30))
        e, r, p, f = min(epoch_s), min(record_s), min(pace_s), min(figure_s)
        total = r + p + f / every
        print(f"quick epoch on {args.rows} rows ({batches} batches): {e:.2f} s (min of {args.repeats})")
        print(f"  records {r * 1e3:.2f} ms = {r / e:.3%}; pacer {p * 1e3:.3f} ms = {p / e:.4%}; live figure "
              f"{f * 1e3:.0f} ms per drawing, every {every} epochs: {f / every * 1e3:.1f} ms = {f / every / e:.3%}")
        print(f"  live reporting per epoch: {total * 1e3:.1f} ms = {total / e:.3%} of an epoch (target <= 1 %)")


if __name__ == "__main__":
    main()
