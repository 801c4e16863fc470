"""The trainer's records, typed: what a run emits while it trains and what it ends with. They travel as these
objects (the sinks in train/sinks.py, the CLI bar, the Dagster reporter, the log analysis); they become plain dicts
only where written to a file (`metrics.jsonl`, one JSON object a line, `"kind"` naming the type), to Dagster
metadata or to a Pipes message, and are parsed back here (`parse_record`, `read_records`).

    ProgressRecord  ~every 10 % of an epoch or every 30 s: the loss and terms since the previous one, samples/s
    EpochRecord     once per epoch: train / val loss and terms, best so far, lr, throughput, sample figures
    ResumeRecord    when a resume changed what is trained (loss weights, freeze, patience): [ResumeChange]
    ControlRecord   when `crrecon control` changed a running run (loss weights, grad_clip) or asked it to stop
                    after the epoch: [ResumeChange], from the next epoch
    StopRecord      a run stopped before its last epoch (SIGINT/SIGTERM at a batch boundary, or a stop after the
                    epoch): where, the checkpoint that resumes it, the config and the command that do
    FinalRecord     once at the end: the RunMetrics (val_mse, baseline_val_mse, val_pearson, ...)

Loss terms (`*_terms`) are {term name: weighted value} and sum to the loss. `progress` is text for people ("run 7 %
· epoch 3/30, batch 8/77 · ETA 4 min 12 s", the percentage is of the run); code reads `run_fraction` and `eta_s`.
A diverged loss is NaN in memory and null in the file. Imports: pydantic and the project's errors only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from crrecon_pipeline.errors import DataError

FILENAME = "metrics.jsonl"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict:
        """Plain, strict-JSON data (NaN and infinities as null) for files, metadata and Pipes messages."""
        return json_safe(self.model_dump())


def _nan_for_null(value: Any) -> Any:
    return float("nan") if value is None else value


class ProgressRecord(_Record):
    kind: Literal["progress"] = "progress"
    epoch: int
    epochs: int
    batch: int
    batches: int
    lr: float
    train_loss: float | None = None  # None: no batch since the previous record
    train_terms: dict[str, float | None] = {}
    samples_per_s: float | None = None
    elapsed_s: float
    eta_s: float | None
    run_fraction: float
    progress: str


class EpochRecord(_Record):
    kind: Literal["epoch"] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    best_val: float = float("nan")  # the fields below may be missing from research-code text logs only
    lr: float | None = None
    samples_per_s: float | None = None
    seconds: float | None = None
    train_terms: dict[str, float | None] = {}
    val_terms: dict[str, float | None] = {}
    val_mse_per_pixel: float | None = None
    sample_figures: dict[str, str] = {}  # {"val" | "train": png} on the epochs the sample views were drawn
    elapsed_s: float = 0.0
    eta_s: float | None = None
    run_fraction: float = 0.0
    progress: str = ""

    _nan = field_validator("train_loss", "val_loss", "best_val", mode="before")(_nan_for_null)

    @field_validator("epoch", "epochs", "train_loss", "val_loss", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true is not an epoch count nor a loss
            raise ValueError("is not a number")
        return value


class ResumeChange(_Record):
    key: str
    old: Any
    new: Any
    epoch: int  # the last epoch trained with the old value


class ResumeRecord(_Record):
    kind: Literal["resume_changes"] = "resume_changes"
    epoch: int
    changes: list[ResumeChange]


class ControlRecord(_Record):
    kind: Literal["control"] = "control"
    epoch: int  # the last epoch trained before the request applies
    changes: list[ResumeChange] = []
    stop_after_epoch: bool = False
    request: str = ""  # the request's file name in the run folder's control/


class StopRecord(_Record):
    kind: Literal["stop"] = "stop"
    epoch: int  # the epoch it stopped in (a stop after the epoch: the epoch it finished)
    epochs: int
    batch: int  # batches of `epoch` trained (= batches: the epoch is complete)
    batches: int
    reason: str  # "SIGTERM", "SIGINT" or "stop after epoch (crrecon control)"
    checkpoint: str  # last.pt: it resumes the run exactly where it stopped
    resume_command: str  # the CLI command that resumes it
    resume_config: dict[str, Any]  # the run config with training.resume_from = checkpoint (the launchpad's YAML)

    @property
    def complete_epochs(self) -> int:
        return self.epoch if self.batch >= self.batches else self.epoch - 1

    def line(self) -> str:
        """One line for people: where it stopped and how to go on."""
        where = (f"after epoch {self.epoch}/{self.epochs}" if self.batch >= self.batches
                 else f"at epoch {self.epoch}/{self.epochs}, batch {self.batch}/{self.batches}")
        return f"stopped {where} ({self.reason}); {self.checkpoint} resumes it: {self.resume_command}"


class RunMetrics(_Record):
    """A finished run's numbers: the best weights on the validation split, and where the run put its files."""

    val_mse: float
    baseline_val_mse: float  # the mean-spectrum predictor on the same split
    val_pearson: float
    val_mae: float
    val_mse_R: float | None = None
    val_mse_G1: float | None = None
    val_mse_G2: float | None = None
    val_mse_B: float | None = None
    val_peak_error_nm: float | None = None
    val_routing_error: float | None = None
    val_routing_efficiency: float | None = None
    val_terms: dict[str, float | None] = {}
    epochs_completed: int
    best_epoch: int
    best_val: float
    best_checkpoint: str
    n_params: int
    device: str
    train_samples: int
    val_samples: int
    samples_per_s: float
    seconds_per_epoch: float
    model: str
    loss: str
    run_dir: str
    log: str
    training_set: dict[str, dict[str, Any]] = {}
    metrics_log: str
    tensorboard: str | None = None
    loss_curves: str
    predictions: str
    predictions_train: str
    stopped_early: bool = False
    stopped_at_epoch: int | None = None
    resume_changes: list[ResumeChange] = []  # every resume's and every `crrecon control` change, oldest first
    stopped: str | None = None  # stopped after an epoch by `crrecon control --stop-after-epoch`: where, how to go on
    init_from: str | None = None  # the checkpoint whose weights started the run
    init_skipped: list[str] = []  # its tensors of another shape, not loaded
    trainable_params: int | None = None
    frozen_params: int | None = None
    frozen_groups: list[str] = []

    _nan = field_validator("best_val", mode="before")(_nan_for_null)

    @property
    def mse_vs_baseline(self) -> float:
        return self.val_mse / self.baseline_val_mse if self.baseline_val_mse else float("nan")


class FinalRecord(RunMetrics):
    kind: Literal["final"] = "final"

    def metrics(self) -> RunMetrics:
        return RunMetrics.model_validate(self.model_dump(exclude={"kind"}))


Record = Union[ProgressRecord, EpochRecord, ResumeRecord, ControlRecord, StopRecord, FinalRecord]
RecordCallback = Callable[[Record], None]
_KINDS = {cls.model_fields["kind"].default: cls for cls in (ProgressRecord, EpochRecord, ResumeRecord, ControlRecord,
                                                                   StopRecord, FinalRecord)}


def final_record(metrics: RunMetrics) -> FinalRecord:
    return FinalRecord.model_validate(metrics.model_dump())


def parse_record(data: dict, source: str = "record") -> Record:
    """A record from its plain form (a metrics.jsonl line, a Pipes message); keys a newer version added are
    ignored; DataError naming `source` and the key when it is not a record."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _KINDS:
        raise DataError(f"{source}: not a training record (kind {kind!r})")
    cls = _KINDS[kind]
    try:
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "missing":
            raise DataError(f"{source}: a {kind} record without {key!r}") from None
        raise DataError(f"{source}: {key}={error.get('input')!r} {error['msg'].lower()}") from None


def json_safe(value):
    """Plain strict-JSON data of records, dicts and lists (NaN and infinities as null)."""
    if isinstance(value, BaseModel):
        return json_safe(value.model_dump())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON: a diverged loss is written as null
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def to_line(record: Record) -> str:
    return json.dumps(record.to_json(), allow_nan=False) + "\n"


def read_records(path: str | Path) -> list[Record]:
    """Every record of a metrics.jsonl; a truncated last line (a killed run) and lines that are no JSON object are
    skipped; a record of a known kind that does not validate is one DataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metrics file not found")
    out = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("kind") in _KINDS:
            out.append(parse_record(data, f"{path}: line {number}"))
    return out


def epoch_history(records: list[Record]) -> list[EpochRecord]:
    """Epoch records in epoch order; a repeated epoch (a resume redid it): the later wins."""
    latest = {r.epoch: r for r in records if isinstance(r, EpochRecord)}
    return [latest[e] for e in sorted(latest)]


def last_final(records: list[Record]) -> FinalRecord | None:
    finals = [r for r in records if isinstance(r, FinalRecord)]
    return finals[-1] if finals else None


# ---------------------------------------------------------------------------------------------------- time

def duration(seconds: float) -> str:
    """15 min 07 s, 1 h 03 min, 12 s: the smaller unit two digits wide, so the text keeps its width as it ticks."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def progress_text(epoch: int, epochs: int, done_fraction: float, eta_s: float | None,
                  batch: int | None = None, batches: int | None = None) -> str:
    """"run 2 % · epoch 1/40, batch 8/77 · ETA 5 min 19 s": the percentage is the whole run's, and says so."""
    eta = f" · ETA {duration(eta_s)}" if eta_s is not None else ""
    where = f"epoch {epoch}/{epochs}" + (f", batch {batch}/{batches}" if batch is not None and batches else "")
    return f"run {done_fraction:.0%}".replace("%", " %") + f" · {where}{eta}"


class Clock:
    """Elapsed time and ETA of this session of a run (a resumed run estimates from its own pace)."""

    def __init__(self, first_epoch: int, epochs: int, batches: int | None = None):
        self.t0, self.first_epoch, self.epochs, self.batches = time.perf_counter(), first_epoch, epochs, batches

    def stamp(self, epoch: int, epoch_fraction: float, batch: int | None = None) -> dict:
        """{elapsed_s, eta_s, run_fraction, progress}: the timing fields of a progress or epoch record."""
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
