"""Training-log analysis: the seed's optimize_hyperparams.py and model-optimizer playbook, made explicit.

epoch records (a run's metrics.jsonl, or an old run's seed-format text log)
      -> metrics (best, improvement rate, plateau, overfitting gap, divergence, generalization gap)
      -> diagnosis  subset of {overfitting, plateau, divergence, still_improving, too_short, not_learning}
      -> suggestions [{parameter, action, value, reason}]: `value` is the new setting (None: keep as is), `action`
         the same for people; the next run's config is built from the values.
The suggestions reason from the run's RunConfig (the schema's defaults when a log comes without one) and switch
models and losses among the registered ones (MODELS, LOSSES): nothing here restates a default or a name.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crrecon_pipeline.errors import DataError
from crrecon_pipeline.losses import LOSSES
from crrecon_pipeline.models import MODELS, count_parameters
from crrecon_pipeline.numbers import fmt, pct
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

DIAGNOSES = ("overfitting", "plateau", "divergence", "still_improving", "too_short", "not_learning")
WINDOW = 5  # epochs looked at for trends
MIN_EPOCHS = WINDOW  # fewer epochs than one trend window: too short to judge
NOT_LEARNING_MOVE = 0.05  # the val loss moved less than this over the whole run ...
NOT_LEARNING_RATIO = 0.9  # ... or the val MSE stays above this share of the mean-spectrum baseline's
EXPLAIN = {
    "overfitting": "validation loss rising while training loss falls",
    "plateau": f"validation loss flat over the last {WINDOW} epochs",
    "divergence": "non-finite or exploding loss",
    "still_improving": "validation loss still falling and the best epoch is the latest",
    "too_short": f"fewer than {MIN_EPOCHS} epochs: too few to judge a trend",
    "not_learning": f"validation loss moved less than {NOT_LEARNING_MOVE:.0%} over the run, or val MSE stays above "
                    f"{NOT_LEARNING_RATIO:.0%} of the mean-spectrum baseline's",
}


def _rel_change(a: float, b: float) -> float:
    """Relative improvement from a to b (positive = b is lower)."""
    return (a - b) / abs(a) if a and math.isfinite(a) and math.isfinite(b) else 0.0


def compute_metrics(records: list[EpochRecord], final: RunMetrics | None = None) -> dict:
    """Trend metrics of the epoch records; `final` (the run's final record) adds the val MSE's ratio to baseline."""
    if not records:
        return {"epochs_completed": 0, "best_val": None, "best_epoch": None}
    epochs = np.array([r.epoch for r in records])
    train = np.array([r.train_loss for r in records])
    val = np.array([r.val_loss for r in records])
    finite = np.isfinite(val)
    best_i = int(np.nanargmin(np.where(finite, val, np.nan))) if finite.any() else None
    w = min(WINDOW, len(records) - 1) if len(records) > 1 else 0
    recent_val, recent_train = val[-w - 1:], train[-w - 1:]
    improvement = _rel_change(recent_val[0], recent_val[-1]) / max(w, 1) if w else 0.0
    best_before = float(np.nanmin(val[:-w])) if w and np.isfinite(val[:-w]).any() else float("nan")
    gap = (val[-1] - train[-1]) / abs(train[-1]) if math.isfinite(train[-1]) and train[-1] else float("nan")
    first_val = val[finite][0] if finite.any() else float("nan")
    return {
        "epochs_completed": len(records),
        "total_epochs": int(records[-1].epochs),
        "best_val": float(val[best_i]) if best_i is not None else None,
        "best_epoch": int(epochs[best_i]) if best_i is not None else None,
        "final_train": float(train[-1]),
        "final_val": float(val[-1]),
        "improvement_rate": float(improvement),  # relative val improvement per epoch over the last window
        "window_improvement": float(_rel_change(best_before, float(np.nanmin(recent_val))) if w else 0.0),
        "total_improvement": float(_rel_change(first_val, float(np.nanmin(val[finite])))) if finite.any() else 0.0,
        "generalization_gap": float(gap),  # (val - train) / train at the end
        "val_trend": float(_rel_change(recent_val[0], recent_val[-1])) if w else 0.0,
        "train_trend": float(_rel_change(recent_train[0], recent_train[-1])) if w else 0.0,
        "nonfinite_epochs": int((~np.isfinite(train) | ~finite).sum()),
        "max_val_over_best": (float(np.nanmax(val[best_i:]) / val[best_i])
                              if best_i is not None and val[best_i] > 0 else float("nan")),
        "epochs_since_best": int(epochs[-1] - epochs[best_i]) if best_i is not None else None,
        "mse_vs_baseline": final.mse_vs_baseline if final is not None and final.baseline_val_mse else None,
    }


def diagnose(m: dict) -> list[str]:
    if not m.get("epochs_completed"):
        return []
    found = []
    n = m["epochs_completed"]
    diverged = m["nonfinite_epochs"] > 0 or m["max_val_over_best"] > 3.0 or (
        m["train_trend"] < -0.5 and n > 2)  # training loss up by more than half over the window
    if diverged:
        found.append("divergence")
    if n >= 4 and not diverged and m["val_trend"] < -0.05 and m["train_trend"] > 0.0 and m["epochs_since_best"] >= 2:
        found.append("overfitting")
    if n >= WINDOW + 1 and not diverged and abs(m["window_improvement"]) < 0.01 and "overfitting" not in found:
        found.append("plateau")
    ratio = m.get("mse_vs_baseline")
    not_learning = not diverged and ((n >= 2 and m["total_improvement"] < NOT_LEARNING_MOVE)
                                     or (ratio is not None and ratio > NOT_LEARNING_RATIO))
    if not_learning and "plateau" in found:  # flat from the start: it never learned, rather than stalled
        found.remove("plateau")
    if not diverged and "overfitting" not in found and "plateau" not in found and m["window_improvement"] > 0.01 \
            and m["epochs_since_best"] <= 1 and not not_learning:
        found.append("still_improving")
    if not diverged and n < MIN_EPOCHS:
        found.append("too_short")
    if not_learning:
        found.append("not_learning")
    return found


@dataclass
class Advice:
    """The suggestions so far, in order; the first diagnosis to touch a setting decides it."""

    items: list[dict] = field(default_factory=list)

    def add(self, parameter: str, action: str, value, reason: str) -> None:
        if all(s["parameter"] != parameter for s in self.items):
            self.items.append({"parameter": parameter, "action": action, "value": value, "reason": reason})

    def change(self, parameter: str, verb: str, value, reason: str) -> None:
        self.add(parameter, f"{verb} to {value:.2g}" if isinstance(value, float) else f"{verb} to {value}", value,
                 reason)


@functools.cache
def model_sizes() -> dict[str, int]:
    """Parameters of each registered model at its constructor's defaults: what "lighter" and "more capacity" mean
    when a suggestion switches models (a model added to MODELS takes part as it is; the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        return {name: count_parameters(cls()) for name, cls in MODELS.items()}


def neighbour_model(name: str, step: int) -> str | None:
    """The registered model next in size to `name` (step -1: the next lighter, +1: the next larger), or None."""
    sizes = model_sizes()
    order = sorted(sizes, key=sizes.__getitem__)
    i = order.index(name) + step
    return order[i] if 0 <= i < len(order) else None


def other_loss(name: str) -> str | None:
    """The loss a stuck run tries: the schema's default one, or from that the next registered loss."""
    default, names = RunConfig().loss.name, list(LOSSES)
    other = default if name != default else names[(names.index(name) + 1) % len(names)]
    return other if other != name else None


def _divergence(advice: Advice, m: dict, cfg: RunConfig) -> None:
    advice.change("training.lr", "decrease", float(f"{cfg.training.lr * 0.3:.2g}"),
                  f"{m['nonfinite_epochs']} non-finite epochs; val rose to {m['max_val_over_best']:.1f}x its best "
                  f"after epoch {m['best_epoch']}")
    advice.change("training.grad_clip", "set", 0.5, "clipping harder bounds the update that blew up")
    advice.change("data.batch_size", "increase", cfg.data.batch_size * 2, "larger batches give less noisy gradients")


def _overfitting(advice: Advice, m: dict, cfg: RunConfig) -> None:
    decay = cfg.training.weight_decay * 4 or RunConfig().training.weight_decay  # from 0: the schema's default
    advice.change("training.weight_decay", "increase", float(f"{decay:.2g}"),
                  f"val loss rose {-m['val_trend']:.0%} over the last {WINDOW} epochs while train fell "
                  f"{m['train_trend']:.0%}")
    advice.add("training.epochs", f"stop near epoch {m['best_epoch']}", int(m["best_epoch"]),
               f"the best validation loss came {m['epochs_since_best']} epochs before the end")
    lighter = neighbour_model(cfg.model.name, -1)
    if lighter:
        advice.change("model.name", "switch", lighter, f"a lighter model ({model_sizes()[lighter]:,} parameters at "
                      f"its defaults, {cfg.model.name} {model_sizes()[cfg.model.name]:,}) has less capacity to "
                      f"memorise the training set")
    if cfg.data.augment_180:
        advice.add("data.augment_180", "keep true", None, "the 180-degree twins double the data for free")
    else:
        advice.add("data.augment_180", "set to true", True, "the 180-degree twins double the data for free")


def _plateau(advice: Advice, m: dict, cfg: RunConfig) -> None:
    lr = cfg.training.lr
    advice.add("training.lr", f"decrease to {lr * 0.5:.2g} (or restart warmup)", float(f"{lr * 0.5:.2g}"),
               f"val loss changed {m['window_improvement']:.2%} over the last {WINDOW} epochs")
    larger = neighbour_model(cfg.model.name, +1)
    if larger:
        advice.change("model.name", "switch", larger, f"a larger model ({model_sizes()[larger]:,} parameters at its "
                      f"defaults, {cfg.model.name} {model_sizes()[cfg.model.name]:,}) has more capacity")
    loss = other_loss(cfg.loss.name)
    if loss:
        advice.change("loss.name", "switch", loss, "a different objective can move a run stuck on one")
    advice.change("data.batch_size", "decrease", max(cfg.data.batch_size // 2, 8),
                  "smaller batches add gradient noise that can escape a plateau")


def _still_improving(advice: Advice, m: dict, cfg: RunConfig) -> None:
    epochs = m.get("total_epochs") or cfg.training.epochs
    advice.change("training.epochs", "increase", int(epochs * 1.5),
                  f"val loss still fell {m['window_improvement']:.1%} over the last {WINDOW} epochs and the best is "
                  f"the latest")


def _not_learning(advice: Advice, m: dict, cfg: RunConfig) -> None:
    ratio = m.get("mse_vs_baseline")
    seen = (f"val MSE is {pct(ratio)} of the mean-spectrum baseline's"
            if ratio is not None and ratio > NOT_LEARNING_RATIO
            else f"val loss moved only {pct(m['total_improvement'])} in {m['epochs_completed']} epochs")
    advice.change("training.lr", "increase", float(f"{cfg.training.lr * 3:.2g}"),
                  f"{seen}: larger steps, or check the data and the loss")


def _too_short(advice: Advice, m: dict, cfg: RunConfig) -> None:
    epochs = m.get("total_epochs") or cfg.training.epochs
    advice.change("training.epochs", "increase", max(2 * WINDOW, 2 * epochs),
                  f"{m['epochs_completed']} epochs are too few to judge a trend (the diagnosis looks at the last "
                  f"{WINDOW})")


# In this order: the first diagnosis to touch a setting decides it (a diverged run's lr goes down, not up).
ADVICE = (("divergence", _divergence), ("overfitting", _overfitting), ("plateau", _plateau),
          ("still_improving", _still_improving), ("not_learning", _not_learning), ("too_short", _too_short))


def suggest(m: dict, diagnosis: list[str], config: RunConfig | None = None) -> list[dict]:
    """[{parameter, action, value, reason}] for the diagnosed problems, reasoned from the run's config (the
    schema's defaults when the log came without one)."""
    cfg = config if config is not None else RunConfig()
    advice = Advice()
    for name, advise in ADVICE:
        if name in diagnosis:
            advise(advice, m, cfg)
    if not advice.items and m.get("epochs_completed"):
        advice.add("training.epochs", "keep", None,
                   "no problem detected; compare against other runs before changing settings")
    return advice.items


def load_history(path: str | Path) -> list[EpochRecord]:
    """Epoch records from a metrics.jsonl (new runs) or a seed-format text log (old runs, the research code's)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return epoch_history(read_records(path))
    return parse_train_log(path)


def stored_config(run_dir: str | Path) -> RunConfig | None:
    """The run's config.json (the trainer writes it) validated into its RunConfig; None when there is none (a
    seed-format log on its own). One that does not validate is a one-line ConfigError naming the file."""
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


def analyze_log(path: str | Path, config: RunConfig | None = None) -> dict:
    """Analyse a metrics.jsonl or a text log (the run's config.json beside it informs the suggestions; a
    metrics.jsonl's final record gives the ratio to baseline that `not_learning` also looks at)."""
    path = Path(path)
    if config is None:
        config = stored_config(path.parent)
    history = load_history(path)
    refuse_unrecognized(path, history)
    final = last_final(read_records(path)) if path.suffix == ".jsonl" else None
    metrics = compute_metrics(history, final)
    diagnosis = diagnose(metrics)
    return {
        "log": str(path),
        "epochs_completed": metrics["epochs_completed"],
        "best_val": metrics["best_val"],
        "best_epoch": metrics["best_epoch"],
        "diagnosis": diagnosis,
        "suggestions": suggest(metrics, diagnosis, config),
        "metrics": metrics,
        "history": history,
    }


def analyze_run(run_dir: str | Path) -> dict:
    """A run folder's analysis, from its structured records when it has them."""
    run_dir = Path(run_dir)
    config = stored_config(run_dir)
    final = _final_metrics(run_dir)
    return analyze_log(run_history_file(run_dir, config), config) | {"final": final.to_json() if final else None}


def _summary_lines(result: dict) -> list[str]:
    m = result["metrics"]
    lines = [f"Epochs completed: {result['epochs_completed']}"
             + (f" of {m['total_epochs']}" if m.get("total_epochs") else "")]
    if result["best_val"] is not None:
        lines += [f"Best val loss: {result['best_val']:.4g} at epoch {result['best_epoch']}",
                  f"Final train / val loss: {m['final_train']:.4g} / {m['final_val']:.4g} "
                  f"(generalization gap {m['generalization_gap']:+.1%}: val above train)",
                  f"Val loss improvement over the last {WINDOW} epochs: {m['window_improvement']:.2%}; "
                  f"over the whole run: {m['total_improvement']:.1%}"]
    if m.get("mse_vs_baseline") is not None:
        lines.append(f"Val MSE: {pct(m['mse_vs_baseline'])} of the mean-spectrum baseline's")
    return lines


def format_report(result: dict) -> str:
    lines = [f"Log: {result['log']}", *_summary_lines(result)]
    lines.append("Diagnosis: " + (", ".join(result["diagnosis"]) or "none"))
    lines.append("Suggestions:")
    lines += [f"  - {s['parameter']}: {s['action']} ({s['reason']})" for s in result["suggestions"]]
    return "\n".join(lines)


def report_markdown(result: dict) -> str:
    """The same report for the Dagster UI: each diagnosis explained, one bullet a line, suggestions as a table."""
    diagnosis = ", ".join(f"**{d}** ({EXPLAIN[d]})" for d in result["diagnosis"]) or "none"
    table = "".join(f"| `{s['parameter']}` | {s['action']} | {fmt(s['value'])} | {s['reason']} |\n"
                    for s in result["suggestions"])
    return (f"**Diagnosis:** {diagnosis}\n\n" + "".join(f"- {line}\n" for line in _summary_lines(result))
            + f"\n| parameter | action | value | reason |\n|---|---|---|---|\n{table}")


def _params_for(section: str, name: str, params: dict) -> dict:
    """Keep the parameters the new model/loss also takes (widths, dropouts...), drop the others."""
    accepted = inspect.signature((MODELS if section == "model" else LOSSES)[name]).parameters
    return {k: v for k, v in params.items() if k in accepted}


def apply_suggestions(config: RunConfig, suggestions: list[dict]) -> RunConfig:
    """The next run's config: each suggestion's `value` set (None means keep), as a new validated RunConfig;
    `config` is left as it is. A new model or loss keeps the parameters it also takes."""
    changes = {}
    for s in suggestions:
        if s.get("value") is None:
            continue
        section, _, key = s["parameter"].partition(".")
        if key == "name":
            changes[f"{section}.params"] = _params_for(section, s["value"], getattr(config, section).params)
        changes[s["parameter"]] = s["value"]
    return config.with_overrides(changes, "next run")


# ------------------------------------------------------------------------------------------------ across runs

SETTING_COLUMNS = {"model": "model.name", "loss": "loss.name", "lr": "training.lr", "batch_size": "data.batch_size",
                   "epochs": "training.epochs", "weight_decay": "training.weight_decay",
                   "augment_180": "data.augment_180"}


def _final_metrics(run: Path) -> RunMetrics | None:
    """A finished run's final record (metrics.jsonl), or metrics.json for runs from before the records."""
    if (run / FILENAME).is_file():
        final = last_final(read_records(run / FILENAME))
        if final is not None:
            return final.metrics()
    if not (run / "metrics.json").is_file():
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    return parse_record({**metrics, "kind": "final"}, str(run / "metrics.json")).metrics()


def collect_runs(runs_dir: str | Path) -> list[dict]:
    """Every finished run under runs_dir (a folder with a final record and config.json), oldest first."""
    rows = []
    candidates = [p for p in Path(runs_dir).glob("*") if (p / "config.json").is_file()]
    for run in sorted(candidates, key=lambda p: (p / "config.json").stat().st_mtime):
        metrics = _final_metrics(run)
        if metrics is None:
            continue
        config = stored_config(run)
        settings = config.flat()
        row = {"run": run.name, "config": config} | {col: settings[key] for col, key in SETTING_COLUMNS.items()}
        row["params"] = metrics.n_params
        for key in ("val_mse", "baseline_val_mse", "val_pearson", "best_epoch", "epochs_completed", "samples_per_s"):
            row[key] = getattr(metrics, key)
        row["mse_vs_baseline"] = metrics.mse_vs_baseline if metrics.baseline_val_mse else None
        rows.append(row)
    return rows


# The leaderboard's columns, key ones first (what people compare runs by), with their headers.
LEADERBOARD = {"run": "run", "val_mse": "val MSE", "mse_vs_baseline": "% of baseline", "model": "model", "loss": "loss",
               "epochs_completed": "epochs", "val_pearson": "Pearson", "best_epoch": "best epoch (val loss)",
               "lr": "lr", "batch_size": "batch", "weight_decay": "weight decay", "augment_180": "180° twins",
               "params": "parameters", "samples_per_s": "samples/s"}
LEADERBOARD_KEY = ("run", "val_mse", "mse_vs_baseline", "model", "loss", "epochs_completed")  # fit at 1,000 px
RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def run_link(name: str) -> str:
    """A Dagster run's folder (named by its run id) as a short link to its run page; other folders by name."""
    return f"[{name[:8]}](/runs/{name})" if RUN_ID.match(name) else name


def markdown_table(rows: list[dict], columns=tuple(LEADERBOARD)) -> str:
    """The leaderboard for people: key columns first, short linked run ids, ratios as %, integers with separators;
    `columns`: which of LEADERBOARD's (the short one: LEADERBOARD_KEY)."""
    if not rows:
        return ""
    cols = [c for c in columns if c in rows[0]]

    def cell(col, v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if col == "run":
            return run_link(str(v))
        if col == "mse_vs_baseline":
            return pct(v)
        return fmt(int(v) if isinstance(v, float) and v.is_integer()
                   and col in ("params", "epochs_completed", "best_epoch", "batch_size") else v)

    lines = ["| " + " | ".join(LEADERBOARD[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(c, r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def compare_runs(runs_dir: str | Path, max_ratio: float = 0.5) -> dict:
    """Leaderboard, which settings went with better runs, and a recommended next config from the best run that
    passes check_beats_baseline (ratio <= max_ratio); with none passing there is no best run to build on."""
    import pandas as pd
    import yaml

    rows = collect_runs(runs_dir)
    if not rows:
        return {"runs": 0, "table": [], "effects": {}, "best_run": None, "best_mse_vs_baseline": None,
                "next_config": None, "next_config_yaml": ""}
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "config"} for r in rows]).sort_values("mse_vs_baseline")
    effects = {}
    for col in SETTING_COLUMNS:
        values = table[col].astype(str)
        if values.nunique() > 1:
            effects[col] = table.groupby(values)["mse_vs_baseline"].mean().sort_values().round(4).to_dict()
    passing = table[table["mse_vs_baseline"] <= max_ratio]
    best = next(r for r in rows if r["run"] == passing.iloc[0]["run"]) if len(passing) else None
    base = best or next(r for r in rows if r["run"] == table.iloc[0]["run"])  # none passed: build on the least bad
    history_file = run_history_file(Path(runs_dir) / base["run"], base["config"])
    suggestions = analyze_log(history_file, base["config"])["suggestions"] if history_file.exists() else []
    nxt = apply_suggestions(base["config"], suggestions)
    return {
        "runs": len(rows),
        "table": table.to_dict(orient="records"),
        "markdown": markdown_table(table.to_dict(orient="records"), LEADERBOARD_KEY),
        "markdown_full": markdown_table(table.drop(columns=["baseline_val_mse"]).to_dict(orient="records")),
        "effects": effects,
        "best_run": best["run"] if best else None,
        "best_mse_vs_baseline": float(passing.iloc[0]["mse_vs_baseline"]) if best else None,
        "suggestions_applied": suggestions,
        "next_config": nxt,
        "next_config_yaml": yaml.safe_dump(nxt.to_dict(), sort_keys=False),
    }
