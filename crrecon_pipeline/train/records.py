"""Structured training metrics: the records the trainer emits and appends to `metrics.jsonl` in the run folder.

    {"kind": "progress", "epoch", "epochs", "batch", "batches", "lr", "train_loss", "train_terms", "samples_per_s",
     "elapsed_s", "eta_s", "run_fraction", "progress"}
                                                ~every 10 % of an epoch or every 30 s, whichever first; train_loss,
                                                train_terms and samples_per_s cover the batches since the last one
    {"kind": "epoch", "epoch", "epochs", "train_loss", "val_loss", "best_val", "lr", "samples_per_s", "seconds",
     "train_terms", "val_terms", "val_mse_per_pixel", "sample_figures", "elapsed_s", "eta_s", "run_fraction",
     "progress"}                                                                                 once per epoch
    (`*_terms`: {term name: weighted value}, summing to the loss; `sample_figures`: {"val"|"train": png} on the
     epochs the sample views were drawn, train/samples.py)
    {"kind": "final", ...the final metrics (val_mse, baseline_val_mse, val_pearson, ...)}         once at the end

`progress` is text for people ("run 7 % · epoch 3/30, batch 8/77 · ETA 4 min 12 s": the percentage is of the
run), `eta_s` float seconds, `run_fraction` the done share of the run (0..1): code reads these numbers, people
the text. The CLI's bar, the Dagster observations (one process or torchrun under Pipes),
TensorBoard (metric_log.py fans the records out to every sink), the log analysis and run_comparison read these.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable

from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.errors import DataError

FILENAME = "metrics.jsonl"
RecordCallback = Callable[[dict], None]


def duration(seconds: float) -> str:
    """4 min 12 s, 1 h 3 min, 12 s."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def progress_text(epoch: int, epochs: int, done_fraction: float, eta_s: float | None,
                  batch: int | None = None, batches: int | None = None) -> str:
    """"run 2 % · epoch 1/40, batch 8/77 · ETA 5 min 19 s": the percentage is the whole run's, and says so."""
    eta = f" · ETA {duration(eta_s)}" if eta_s is not None else ""
    where = f"epoch {epoch}/{epochs}" + (f", batch {batch}/{batches}" if batch is not None and batches else "")
    return f"run {done_fraction:.0%}".replace("%", " %") + f" · {where}{eta}"


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON: a diverged loss is written as null
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class Clock:
    """Elapsed time and ETA of this session of a run (a resumed run estimates from its own pace)."""

    def __init__(self, first_epoch: int, epochs: int, batches: int | None = None):
        self.t0, self.first_epoch, self.epochs, self.batches = time.perf_counter(), first_epoch, epochs, batches

    def stamp(self, epoch: int, epoch_fraction: float, batch: int | None = None) -> dict:
        elapsed = time.perf_counter() - self.t0
        done_here = (epoch - self.first_epoch) + epoch_fraction  # epochs done in this session
        remaining = self.epochs - (epoch - 1) - epoch_fraction
        eta = elapsed / done_here * remaining if done_here > 0 else None
        overall = (epoch - 1 + epoch_fraction) / self.epochs
        text = progress_text(epoch, self.epochs, overall, eta, batch, self.batches)
        return {"elapsed_s": elapsed, "eta_s": eta, "run_fraction": overall, "progress": text}


class ProgressPacer:
    """Which batches send a progress record: about every 1/parts of the epoch, or when `every_s` seconds passed
    since the last one (a slow epoch on a busy machine still shows a sign of life). One clock read per batch."""

    def __init__(self, n_batches: int, parts: int = 10, every_s: float = 30.0):
        self.n_batches, self.every_s = n_batches, every_s
        self.marks = {math.ceil(k * n_batches / parts) for k in range(1, parts + 1)}
        self.last = time.perf_counter()

    def due(self, batch: int) -> bool:
        """True after `batch` (1-based) when a record is due; the epoch's last batch is the epoch record's."""
        if batch >= self.n_batches:
            self.last = time.perf_counter()
            return False
        now = time.perf_counter()
        if batch in self.marks or now - self.last >= self.every_s:
            self.last = now
            return True
        return False


class MetricsLog:
    """Appends records to run_dir/metrics.jsonl (epoch and final records are fsynced) and passes them on."""

    def __init__(self, path: Path, callback: RecordCallback | None = None, enabled: bool = True):
        self.path, self.callback, self.enabled = path, callback, enabled
        self._file = open(path, "a") if enabled else None

    def emit(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self._file.flush()
        if record["kind"] != "progress":
            os.fsync(self._file.fileno())
        if self.callback:
            self.callback(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | Path) -> list[dict]:
    """Every record; a truncated last line (a killed run) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metrics file not found")
    out = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "kind" in record:
            check_record(record, path, number)
            out.append(record)
    return out


EPOCH_KEYS = {"epoch": int, "epochs": int, "train_loss": (int, float, type(None)), "val_loss": (int, float, type(None))}


def check_record(record: dict, path: Path, number: int) -> None:
    """An epoch record has what the analysis reads, with the right types; otherwise one line naming the line."""
    if record["kind"] != "epoch":
        return
    for key, kind in EPOCH_KEYS.items():
        if key not in record:
            raise DataError(f"{path}: line {number}: an epoch record without {key!r}")
        if isinstance(record[key], bool) or not isinstance(record[key], kind):
            raise DataError(f"{path}: line {number}: {key}={record[key]!r} is not a number")


def epoch_history(records: list[dict]) -> list[dict]:
    """Epoch records in epoch order, NaN restored for null losses; a repeated epoch (resume): the later wins."""
    latest = {}
    for r in records:
        if r["kind"] == "epoch":
            latest[r["epoch"]] = {k: (float("nan") if v is None and k in ("train_loss", "val_loss") else v)
                                  for k, v in r.items()} | {"total": r["epochs"]}
    return [latest[e] for e in sorted(latest)]


def final_record(records: list[dict]) -> dict | None:
    finals = [r for r in records if r["kind"] == "final"]
    return finals[-1] if finals else None


def drop_epochs_after(path: Path, epoch: int) -> None:
    """Before resuming from epoch `epoch`: forget records of later epochs and earlier final records."""
    if not path.is_file():
        return
    kept = [r for r in read_records(path) if r["kind"] != "final" and r.get("epoch", 0) <= epoch]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
