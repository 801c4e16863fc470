"""Where the trainer's records go: a `Recorder` hands each typed record (records.py) to every `RecordSink`. The
trainer emits from a few call sites and never knows who listens; a new sink (MLflow, W&B) is one class with
`write` and `close`.

Sinks of a run (`open_recorder`): metrics.jsonl (`JsonlSink`), the research code's text log (`TextLogSink`,
output.log_file), TensorBoard (`TensorBoardSink`, unless output.tensorboard is false) and the caller's `on_record`
(`CallbackSink`: the CLI bar, the Dagster reporter, Pipes), last, so it sees a record once the files hold it. A
resumed run opens the file sinks with the epoch it resumes after: each forgets what a killed session wrote past its
checkpoint, so every file holds each epoch once.

TensorBoard layout (TensorBoardSink, docs/training.md): two runs, `train/` and `val/`, under the same tags
(`loss`, `loss_terms/<term>`, `loss_raw/<term>`, `loss_share/<term>`), x = optimizer step, and a Custom Scalars
layout (`LAYOUT`)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Protocol

from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.train import trainlog
from crrecon_pipeline.train.records import (
    FILENAME,
    EpochRecord,
    FinalRecord,
    ProgressRecord,
    Record,
    RecordCallback,
    StopRecord,
    read_records,
    to_line,
)

TENSORBOARD_DIR = "tensorboard"


class RecordSink(Protocol):
    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """Hands every record to a callable (the CLI bar, the Dagster reporter, Pipes)."""

    def __init__(self, callback: RecordCallback):
        self.callback = callback

    def write(self, record: Record) -> None:
        self.callback(record)

    def close(self) -> None:
        pass


class JsonlSink:
    """run_dir/metrics.jsonl, appended one JSON line a record; epoch and final records are fsynced (a kill loses
    at most progress lines). Resuming after epoch k: records of later epochs and earlier final records go first."""

    def __init__(self, path: Path, resumed_after: int | None = None):
        if resumed_after is not None and path.is_file():
            kept = [r for r in read_records(path)  # a stop record stays: the history of where the run stopped
                    if not isinstance(r, FinalRecord) and (isinstance(r, StopRecord) or r.epoch <= resumed_after)]
            write_text_atomic(path, "".join(to_line(r) for r in kept))
        self.path, self._file = path, open(path, "a")

    def write(self, record: Record) -> None:
        self._file.write(to_line(record))
        self._file.flush()
        if not isinstance(record, ProgressRecord):
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TextLogSink:
    """output.log_file: one line per epoch in the research code's format (trainlog.log_line), fsynced."""

    def __init__(self, path: Path, resumed_after: int | None = None):
        if resumed_after is not None:
            trainlog.drop_epochs_after(path, resumed_after)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")

    def write(self, record: Record) -> None:
        if isinstance(record, EpochRecord):
            self._file.write(trainlog.log_line(record.epoch, record.epochs, record.train_loss, record.val_loss,
                                               record.best_val, record.lr) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _scalar(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


LAYOUT = {"crrecon": {  # TensorBoard's Custom Scalars tab: tag regexes, every run's series in one chart
    "loss, train and val": ["Multiline", [r"^loss$"]],
    "each loss term, weighted (they sum to the loss)": ["Multiline", [r"^loss_terms/"]],
    "each loss term, raw (unweighted)": ["Multiline", [r"^loss_raw/"]],
    "each loss term's share of the loss": ["Multiline", [r"^loss_share/"]],
    "learning rate": ["Multiline", [r"^lr$"]],
    "training loss per step (since the previous progress record)": ["Multiline", [r"^step/loss$"]],
}}


class TensorBoardSink:
    """Train and val as two runs of TensorBoard (`train/`, `val/`, one writer each) under the same tags, so one
    card overlays them: `loss`, `loss_terms/<term>` (weighted), `loss_raw/<term>` (term / its weight, from the
    loss's `term_weights`), `loss_share/<term>` (term / loss). x is the optimizer step everywhere: an epoch's
    numbers sit at its last step (epoch x steps_per_epoch), `epoch` names it; `train/` also holds `lr`,
    `samples_per_s`, `seconds` and the per-step curves `step/*` (the loss and each weighted term since the previous
    progress record, lr, samples/s); `val/` holds `best_loss`, `mse_per_pixel`, the images (`dashboard` every
    epoch, `samples/val` and `samples/train` when drawn), `final/*` and the hyper-parameters (HParams tab, written
    into `val/` itself: no extra run folder). The Custom Scalars tab gets `LAYOUT`.

    One x axis per writer is what makes a resume clean: TensorBoard hides an earlier process's events from a
    step on only through a writer's `purge_step`, one number for every tag of a folder; both writers purge from the
    first step of the first epoch this process trains, so a resumed run shows each step once, with its redone
    value, instead of a zigzag back in x."""

    FINAL_HPARAMS = ("val_mse", "baseline_val_mse", "val_pearson", "val_mae", "best_val", "best_epoch")

    def __init__(self, log_dir: Path, hparams: dict, steps_per_epoch: int = 1,
                 term_weights: Callable[[], dict[str, float]] | None = None):
        self.log_dir, self.hparams, self.steps_per_epoch = Path(log_dir), hparams, max(int(steps_per_epoch), 1)
        self.term_weights = term_weights or dict
        self.writers: dict = {}
        self._split = "train"

    def _writer(self, split: str, first_step: int):
        """The split's writer, opened at its first event: events of an earlier process at >= first_step are hidden."""
        self._split = split  # the events file an error is reported against
        if split not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[split] = SummaryWriter(log_dir=str(self.log_dir / split), purge_step=first_step)
            if split == "train":
                self.writers[split].add_custom_scalars(LAYOUT)
        return self.writers[split]

    def write(self, record: Record) -> None:
        try:
            if isinstance(record, ProgressRecord):
                self._progress(record)
            elif isinstance(record, EpochRecord):
                self._epoch(record)
            elif isinstance(record, FinalRecord):
                self._final(record)
        except OSError as exc:  # a full disk, met by the writer's thread and raised here: one line naming the file
            raise self._named(exc) from None

    def _named(self, exc: OSError) -> OSError:
        writer = self.writers.get(self._split)
        where = getattr(getattr(getattr(writer, "file_writer", None), "event_writer", None), "_file_name", None)
        where = where or str(self.log_dir / self._split / "events.out.tfevents.*")
        return OSError(exc.errno, f"cannot write TensorBoard events ({exc.strerror or exc})", where)

    def _first_step(self, epoch: int) -> int:
        return (epoch - 1) * self.steps_per_epoch + 1

    def _progress(self, record: ProgressRecord) -> None:
        step = (record.epoch - 1) * record.batches + record.batch
        writer = self._writer("train", self._first_step(record.epoch))
        for key, tag in (("train_loss", "step/loss"), ("lr", "step/lr"), ("samples_per_s", "step/samples_per_s")):
            if (value := _scalar(getattr(record, key))) is not None:
                writer.add_scalar(tag, value, step)
        for name, value in record.train_terms.items():
            if value is not None:
                writer.add_scalar(f"step/loss_terms/{name}", value, step)
        writer.flush()

    def _losses(self, writer, loss: float, terms: dict, step: int) -> None:
        """`loss` and, per term, its weighted value, raw value and share of the loss."""
        if (loss := _scalar(loss)) is None:
            return
        writer.add_scalar("loss", loss, step)
        weights = self.term_weights()
        for name, value in terms.items():
            if value is None:
                continue
            writer.add_scalar(f"loss_terms/{name}", value, step)
            if weights.get(name):
                writer.add_scalar(f"loss_raw/{name}", value / weights[name], step)
            if loss:
                writer.add_scalar(f"loss_share/{name}", value / loss, step)

    def _epoch(self, record: EpochRecord) -> None:
        step = record.epoch * self.steps_per_epoch
        train = self._writer("train", self._first_step(record.epoch))
        val = self._writer("val", self._first_step(record.epoch))
        self._losses(train, record.train_loss, record.train_terms, step)
        self._losses(val, record.val_loss, record.val_terms, step)
        for writer, key, tag in ((train, "lr", "lr"), (train, "samples_per_s", "samples_per_s"),
                                 (train, "seconds", "seconds"), (val, "best_val", "best_loss"),
                                 (val, "val_mse_per_pixel", "mse_per_pixel")):
            if (value := _scalar(getattr(record, key))) is not None:
                writer.add_scalar(tag, value, step)
        train.add_scalar("epoch", record.epoch, step)
        for split, path in record.sample_figures.items():
            self._image(val, "dashboard" if split == "dashboard" else f"samples/{split}", path, step)
        train.flush()
        val.flush()

    @staticmethod
    def _image(writer, tag: str, path: str, step: int) -> None:
        import matplotlib.image as mpimg

        picture = mpimg.imread(path)  # (H, W, 4) floats in [0, 1] for a PNG
        writer.add_image(tag, picture[..., :3], step, dataformats="HWC")

    def _final(self, record: FinalRecord) -> None:
        """At the last epoch's step (a resumed, finished run keeps one final point); the HParams summaries go into
        the val writer's own file (SummaryWriter.add_hparams would open a run folder of its own)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        step = record.epochs_completed * self.steps_per_epoch
        writer = self._writer("val", step + 1)  # opened here only when no epoch ran: hide nothing
        final = {k: float(v) for k, v in record.model_dump().items() if k != "kind" and _scalar(v) is not None}
        for key, value in final.items():
            writer.add_scalar(f"final/{key}", value, step)
        for name, value in record.val_terms.items():
            if value is not None:
                writer.add_scalar(f"final/loss_terms/{name}", value, step)
        metrics = {f"hparam/{k}": final[k] for k in self.FINAL_HPARAMS if k in final}
        for summary in hparams_summary(self.hparams, metrics):
            writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        writer.flush()

    def close(self) -> None:
        try:
            for writer in self.writers.values():
                writer.close()
        except OSError as exc:
            raise self._named(exc) from None


def _quiet_event_writer_threads(args) -> None:
    """TensorBoard's writer thread dies on a full disk with a traceback; the sink raises the error on the main
    thread, naming the file, so the thread's own traceback is left out."""
    if not (type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError)):
        _PREVIOUS_HOOK(args)


_PREVIOUS_HOOK = threading.excepthook
threading.excepthook = _quiet_event_writer_threads


def hparams(config) -> dict:
    """The run config flattened to scalars and strings (TensorBoard's HParams tab accepts nothing else)."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in config.flat().items()}


class Recorder:
    """Hands each record to every sink; a sink that raises is the run's error (nothing is silently lost)."""

    def __init__(self, sinks: list[RecordSink]):
        self.sinks = sinks

    def emit(self, record: Record) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_recorder(run_dir: Path, config, on_record: RecordCallback | None, enabled: bool,
                  resumed_after: int | None = None, steps_per_epoch: int = 1,
                  term_weights: Callable[[], dict[str, float]] | None = None) -> Recorder:
    """The sinks of a run (none on torchrun ranks other than 0): metrics.jsonl, the text log, TensorBoard unless
    output.tensorboard is false, then `on_record`. `resumed_after`: the epoch of the checkpoint resumed from;
    `steps_per_epoch` and `term_weights` (the loss's, read at each epoch) for TensorBoard."""
    if not enabled:
        return Recorder([])
    log_file = trainlog.confined_path(run_dir, config.output.log_file, "output.log_file")
    sinks: list[RecordSink] = [JsonlSink(run_dir / FILENAME, resumed_after), TextLogSink(log_file, resumed_after)]
    if config.output.tensorboard:
        sinks.append(TensorBoardSink(run_dir / TENSORBOARD_DIR, hparams(config), steps_per_epoch, term_weights))
    if on_record is not None:
        sinks.append(CallbackSink(on_record))
    return Recorder(sinks)
