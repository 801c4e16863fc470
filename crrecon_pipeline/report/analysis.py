"""Training-log analysis: a run's epoch records (its metrics.jsonl, or an old run's text log in the research
code's format) read, diagnosed (report.diagnosis) and advised on (report.advice), and the result as text for the
terminal and markdown for the UI.

      epoch records -> Trends -> diagnosis -> Suggestions, together a LogAnalysis

May import: train/ (records, config, trainlog), report.diagnosis, report.advice, the bottom modules.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from crrecon_pipeline.errors import DataError
from crrecon_pipeline.numbers import fmt, pct
from crrecon_pipeline.report.advice import Suggestion, suggest
from crrecon_pipeline.report.diagnosis import EXPLAIN, WINDOW, Trends, compute_metrics, diagnose
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.records import (
    FILENAME,
    EpochRecord,
    RunMetrics,
    epoch_history,
    last_final,
    parse_record,
    read_records,
)
from crrecon_pipeline.train.trainlog import parse_train_log


@dataclass(frozen=True)
class LogAnalysis:
    """One run's analysis: its trends, what they show and what to change; `final` is the run's final record
    when it has one (analyze_run)."""

    log: str
    trends: Trends
    diagnosis: list[str]
    suggestions: list[Suggestion]
    history: list[EpochRecord]
    final: RunMetrics | None = None

    def to_json(self, with_history: bool = False) -> dict:
        """What analysis.json holds (the history stays in metrics.jsonl); `crrecon analyze --json` adds the
        epoch records it read (a text log's are nowhere else as records)."""
        t = self.trends
        out = {"log": self.log, "epochs_completed": t.epochs_completed, "best_val": t.best_val,
               "best_epoch": t.best_epoch, "diagnosis": self.diagnosis,
               "suggestions": [s.to_json() for s in self.suggestions], "metrics": t.to_json()}
        return out | {"history": [h.model_dump() for h in self.history]} if with_history else out


def load_history(path: str | Path) -> list[EpochRecord]:
    """Epoch records from a metrics.jsonl (new runs) or a text log in the research code's format (old runs)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return epoch_history(read_records(path))
    return parse_train_log(path)


def stored_config(run_dir: str | Path) -> RunConfig | None:
    """The run's config.json (the trainer writes it) validated into its RunConfig; None when there is none (a
    text log on its own). One that does not validate is a one-line ConfigError naming the file."""
    path = Path(run_dir) / "config.json"
    return RunConfig.from_dict(json.loads(path.read_text()), str(path)) if path.is_file() else None


def run_history_file(run_dir: str | Path, config: RunConfig | None = None) -> Path:
    """The run's metrics.jsonl, or for runs from before it existed, its text log (output.log_file)."""
    run_dir = Path(run_dir)
    if (run_dir / FILENAME).is_file():
        return run_dir / FILENAME
    return run_dir / (config or RunConfig()).output.log_file


def refuse_unrecognized(path: Path, history: list[EpochRecord]) -> None:
    """A log with no epoch yet is fine (a run that just started); a file that is no log at all is bad input,
    not "0 epochs": a metrics.jsonl without a single record, or a text log that is binary."""
    if history:
        return
    if path.suffix == ".jsonl":
        if not read_records(path):
            raise DataError(f"{path}: no crrecon records in it (not a metrics.jsonl)")
        return
    head = path.read_bytes()[:65536]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the end of the sample
            raise DataError(f"{path}: not a text log (binary content)") from None
    if b"\0" in head:
        raise DataError(f"{path}: not a text log (binary content)")


def analyze_log(path: str | Path, config: RunConfig | None = None) -> LogAnalysis:
    """Analyse a metrics.jsonl or a text log (the run's config.json beside it informs the suggestions; a
    metrics.jsonl's final record gives the ratio to baseline that `not_learning` also looks at)."""
    path = Path(path)
    if config is None:
        config = stored_config(path.parent)
    history = load_history(path)
    refuse_unrecognized(path, history)
    final = last_final(read_records(path)) if path.suffix == ".jsonl" else None
    trends = compute_metrics(history, final)
    diagnosis = diagnose(trends)
    return LogAnalysis(str(path), trends, diagnosis, suggest(trends, diagnosis, config), history,
                       final.metrics() if final is not None else None)


def analyze_run(run_dir: str | Path) -> LogAnalysis:
    """A run folder's analysis, from its structured records when it has them."""
    run_dir = Path(run_dir)
    config = stored_config(run_dir)
    result = analyze_log(run_history_file(run_dir, config), config)
    if result.final is not None:  # read with the metrics.jsonl it analysed
        return result
    return dataclasses.replace(result, final=final_metrics(run_dir))  # a run from before the records: metrics.json


def final_metrics(run: Path) -> RunMetrics | None:
    """A finished run's final record (metrics.jsonl), or metrics.json for runs from before the records."""
    if (run / FILENAME).is_file():
        final = last_final(read_records(run / FILENAME))
        if final is not None:
            return final.metrics()
    if not (run / "metrics.json").is_file():
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    return parse_record({**metrics, "kind": "final"}, str(run / "metrics.json")).metrics()


def _summary_lines(result: LogAnalysis) -> list[str]:
    m = result.trends
    lines = [f"Epochs completed: {m.epochs_completed}" + (f" of {m.total_epochs}" if m.total_epochs else "")]
    if m.best_val is not None:
        lines += [f"Best val loss: {m.best_val:.4g} at epoch {m.best_epoch}",
                  f"Final train / val loss: {m.final_train:.4g} / {m.final_val:.4g} "
                  f"(generalization gap {m.generalization_gap:+.1%}: val above train)",
                  f"Val loss improvement over the last {WINDOW} epochs: {m.window_improvement:.2%}; "
                  f"over the whole run: {m.total_improvement:.1%}"]
    if m.mse_vs_baseline is not None:
        lines.append(f"Val MSE: {pct(m.mse_vs_baseline)} of the mean-spectrum baseline's")
    return lines


def format_report(result: LogAnalysis) -> str:
    lines = [f"Log: {result.log}", *_summary_lines(result)]
    lines.append("Diagnosis: " + (", ".join(result.diagnosis) or "none"))
    lines.append("Suggestions:")
    lines += [f"  - {s.parameter}: {s.action} ({s.reason})" for s in result.suggestions]
    return "\n".join(lines)


def report_markdown(result: LogAnalysis) -> str:
    """The same report for the Dagster UI: each diagnosis explained, one bullet a line, suggestions as a table."""
    diagnosis = ", ".join(f"**{d}** ({EXPLAIN[d]})" for d in result.diagnosis) or "none"
    table = "".join(f"| `{s.parameter}` | {s.action} | {fmt(s.value)} | {s.reason} |\n" for s in result.suggestions)
    return (f"**Diagnosis:** {diagnosis}\n\n" + "".join(f"- {line}\n" for line in _summary_lines(result))
            + f"\n| parameter | action | value | reason |\n|---|---|---|---|\n{table}")
