"""The research code's text log format (`[EPOCH] k/N train_loss=... val_loss=... best_val=... lr=...`): written for
humans and read back for logs of old runs. New runs are analysed from their structured metrics.jsonl (records.py)."""

from __future__ import annotations

import re
from pathlib import Path

from crrecon_pipeline.errors import ConfigError, DataError
from crrecon_pipeline.train.records import EpochRecord

LINE_RE = re.compile(r"\[EPOCH\]\s+(\d+)\s*/\s*(\d+)\s+(.*)")
FIELD_RE = re.compile(r"(\w+)=([-+0-9.eE]+|nan|NaN|inf|-inf|Infinity|-Infinity)")
REQUIRED = ("train_loss", "val_loss")


def confined_path(run_dir: Path, relative: str, key: str) -> Path:
    """run_dir / relative, refused when a symlink on the way leads outside the run folder (config.py refuses
    absolute paths and '..'; only the file system can say where a link points)."""
    path = Path(run_dir) / relative
    resolved, root = path.resolve(), Path(run_dir).resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"{key} {relative!r}: leads to {resolved} through a symlink, outside the run folder {root}")
    return path


def log_line(epoch: int, total: int, train_loss: float, val_loss: float, best_val: float, lr: float) -> str:
    """4 significant figures (5.903e-06, not 0.000006: a converging run still shows its improvement); the research
    code's six-decimal lines parse the same (parse_train_log reads any float)."""
    return (f"[EPOCH] {epoch}/{total} train_loss={train_loss:.4g} val_loss={val_loss:.4g} "
            f"best_val={best_val:.4g} lr={lr:.4g}")


def epoch_summary(record) -> str:
    """An epoch record (records.EpochRecord) as people read it live (the CLI's stderr, the Dagster run log): the
    research code's line, then the throughput and the run's progress text."""
    line = log_line(record.epoch, record.epochs, record.train_loss, record.val_loss, record.best_val, record.lr)
    terms = record.val_terms
    parts = " + ".join(f"{k} {v:.4g}" for k, v in terms.items()) if len(terms) > 1 else ""
    return (f"{line}  ({f'val terms: {parts}; ' if parts else ''}{record.samples_per_s:,.4g} samples/s; "
            f"{record.progress})")


def _epoch_of(line: str) -> int | None:
    m = LINE_RE.search(line)
    return int(m.group(1)) if m else None


def parse_train_log(path: str | Path) -> list[EpochRecord]:
    """Epoch records in epoch order. Survives resumed runs (a repeated epoch: the later line wins), junk lines,
    NaN values and a truncated last line (skipped when a required field is missing)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: log file not found")
    records: dict[int, EpochRecord] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = LINE_RE.search(line)
        if not m:
            continue
        fields = {k: float(v) for k, v in FIELD_RE.findall(m.group(3))}
        if not all(k in fields for k in REQUIRED):
            continue
        known = {k: v for k, v in fields.items() if k in EpochRecord.model_fields}
        records[int(m.group(1))] = EpochRecord(epoch=int(m.group(1)), epochs=int(m.group(2)), **known)
    return [records[e] for e in sorted(records)]


def drop_epochs_after(path: Path, epoch: int) -> None:
    """Before resuming from epoch `epoch`: forget the lines of later epochs (written before a crash that came
    before their checkpoint), so the log holds one line per epoch."""
    from crrecon_pipeline.data.npyio import write_text_atomic

    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    kept = [line for line in lines if (_epoch_of(line) or 0) <= epoch]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))
