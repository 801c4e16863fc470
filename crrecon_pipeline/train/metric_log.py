"""Where the trainer's records go: one `MetricLogger` fans each record out to every `MetricSink`.

Sinks: metrics.jsonl (JsonlSink, records.py's format), the caller's `on_record` (CallbackSink: the CLI bar, the
Dagster reporter, the Pipes worker) and TensorBoard (TensorBoardSink, on by default into <run>/tensorboard; one
`tensorboard --logdir $CRRECON_HOME/runs` shows every run live). The trainer emits through the logger from a few
call sites and never knows which sinks are listening; a new sink (MLflow, W&B) is one class with `write`/`close`.

TensorBoard layout: `step/*` (x = optimizer step: the loss and each weighted loss term since the previous
progress record, lr, samples/s), `epoch/*` (x = epoch: train_loss, val_loss, best_val, lr, samples/s, each loss term
for train and val), `final/*` and the hyper-parameters (HParams tab), `samples/val` and `samples/train` images (the
fixed sample structures' true vs predicted spectra, as the live observation shows them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Protocol

import torch

from crrecon_pipeline.train import records

TENSORBOARD_DIR = "tensorboard"


class TermAccumulator:
    """Per-batch loss terms summed ON THE DEVICE (no host sync per batch); `window()` reads them, with the
    samples/s, once per progress record, `epoch_means()` once per epoch."""

    def __init__(self):
        self.names: list[str] = []
        self.window_sum = self.epoch_sum = None
        self.window_n = self.epoch_n = 0
        self.window_t = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """Take one batch's terms (n samples); returns the loss to optimize, their sum."""
        values = torch.stack(list(terms.values()))
        if self.window_sum is None:
            self.names = list(terms)
            self.window_sum = torch.zeros_like(values, dtype=torch.float32)
            self.epoch_sum = torch.zeros_like(values, dtype=torch.float32)
        weighted = values.detach().float() * n
        self.window_sum += weighted
        self.epoch_sum += weighted
        self.window_n += n
        self.epoch_n += n
        return values.sum()

    def window(self) -> dict:
        """{"train_loss", "train_terms", "samples_per_s"} since the previous call (this rank), then reset."""
        if not self.window_n:
            return {}
        means = (self.window_sum / self.window_n).tolist()
        now = time.perf_counter()
        out = {"train_loss": sum(means), "train_terms": dict(zip(self.names, means)),
               "samples_per_s": self.window_n / max(now - self.window_t, 1e-9)}
        self.window_sum.zero_()
        self.window_n, self.window_t = 0, now
        return out

    def epoch_means(self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        """Each term's mean over the epoch; `reduce` sums over torchrun ranks (every rank calls it)."""
        if self.epoch_sum is None:
            return {}
        n = reduce(torch.tensor(float(self.epoch_n), device=self.epoch_sum.device))
        return dict(zip(self.names, (reduce(self.epoch_sum.clone()) / n).tolist()))


class MetricSink(Protocol):
    def write(self, record: dict) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """Hands every record to a callable (the CLI bar, the Dagster reporter, Pipes)."""

    def __init__(self, callback: records.RecordCallback):
        self.callback = callback

    def write(self, record: dict) -> None:
        self.callback(record)

    def close(self) -> None:
        pass


class JsonlSink:
    """run_dir/metrics.jsonl, appended; epoch and final records are fsynced (records.MetricsLog)."""

    def __init__(self, path: Path):
        self.log = records.MetricsLog(path)

    def write(self, record: dict) -> None:
        self.log.emit(record)

    def close(self) -> None:
        self.log.close()


def _scalar(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class TensorBoardSink:
    """Scalars per step and per epoch, the sample figures as images, the hyper-parameters with the final numbers.

    Two event folders, one per x axis: `step/` (optimizer steps) and `epoch/` (epochs, images, final numbers, the
    HParams). Why two: a resumed run redoes the steps after its last checkpoint, and TensorBoard hides the killed
    run's events from a step on only through a writer's `purge_step`, which is one number for every tag of a
    folder; with one axis per folder each writer purges from the first step (or epoch) this process writes, so a
    resumed run's curves show each step once, with its redone value, instead of a zigzag back in x."""

    EPOCH_KEYS = ("train_loss", "val_loss", "best_val", "lr", "samples_per_s", "seconds", "val_mse_per_pixel")
    AXES = ("step", "epoch")

    def __init__(self, log_dir: Path, hparams: dict):
        self.log_dir, self.hparams = Path(log_dir), hparams
        self.writers: dict = {}

    def _writer(self, axis: str, first_step: int):
        """The axis's writer, opened at its first event: events of an earlier process at >= first_step are hidden."""
        if axis not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[axis] = SummaryWriter(log_dir=str(self.log_dir / axis), purge_step=first_step)
        return self.writers[axis]

    def write(self, record: dict) -> None:
        kind = record["kind"]
        if kind == "progress":
            step = (record["epoch"] - 1) * record["batches"] + record["batch"]
            writer = self._writer("step", (record["epoch"] - 1) * record["batches"] + 1)
            for key in ("train_loss", "lr", "samples_per_s"):
                if _scalar(record.get(key)) is not None:
                    writer.add_scalar(f"step/{key}", record[key], step)
            for name, value in (record.get("train_terms") or {}).items():
                writer.add_scalar(f"step/term/{name}", value, step)
            writer.flush()
        elif kind == "epoch":
            self._epoch(record)
        elif kind == "final":
            self._final(record)

    def _epoch(self, record: dict) -> None:
        epoch = record["epoch"]
        writer = self._writer("epoch", epoch)
        for key in self.EPOCH_KEYS:
            if _scalar(record.get(key)) is not None:
                writer.add_scalar(f"epoch/{key}", record[key], epoch)
        for split in ("train", "val"):
            for name, value in (record.get(f"{split}_terms") or {}).items():
                if value is not None:
                    writer.add_scalar(f"epoch/{split}_term/{name}", value, epoch)
        for split, path in (record.get("sample_figures") or {}).items():
            self._image(writer, f"samples/{split}", path, epoch)
        writer.flush()

    @staticmethod
    def _image(writer, tag: str, path: str, step: int) -> None:
        import matplotlib.image as mpimg

        picture = mpimg.imread(path)  # (H, W, 4) floats in [0, 1] for a PNG
        writer.add_image(tag, picture[..., :3], step, dataformats="HWC")

    def _final(self, record: dict) -> None:
        """At the last epoch's step of the epoch axis (a resumed, finished run keeps one final point)."""
        epoch = int(record.get("epochs_completed") or 0)
        writer = self._writer("epoch", epoch + 1)  # opened here only when no epoch ran: hide nothing
        final = {k: float(v) for k, v in record.items() if k != "kind" and _scalar(v) is not None}
        for key, value in final.items():
            writer.add_scalar(f"final/{key}", value, epoch)
        for name, value in (record.get("val_terms") or {}).items():
            writer.add_scalar(f"final/val_term/{name}", value, epoch)
        keep = ("val_mse", "baseline_val_mse", "val_pearson", "val_mae", "best_val", "best_epoch")
        writer.add_hparams(self.hparams, {f"hparam/{k}": final[k] for k in keep if k in final}, run_name="hparams")
        writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def hparams(config) -> dict:
    """The run config flattened to scalars and strings (TensorBoard's HParams tab accepts nothing else)."""
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    walk("", config.to_dict())
    return flat


class MetricLogger:
    """Fans each record out to every sink; a sink that raises is the run's error (nothing is silently lost)."""

    def __init__(self, sinks: list[MetricSink]):
        self.sinks = sinks

    def emit(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_logger(run_dir: Path, config, on_record: records.RecordCallback | None, enabled: bool) -> MetricLogger:
    """The sinks of a run: none on ranks other than 0; metrics.jsonl always; TensorBoard unless
    output.tensorboard is false; `on_record` last (it sees a record once the files hold it)."""
    if not enabled:
        return MetricLogger([])
    sinks: list[MetricSink] = [JsonlSink(run_dir / records.FILENAME)]
    if config.output.tensorboard:
        sinks.append(TensorBoardSink(run_dir / TENSORBOARD_DIR, hparams(config)))
    if on_record is not None:
        sinks.append(CallbackSink(on_record))
    return MetricLogger(sinks)
