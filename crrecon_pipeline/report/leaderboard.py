"""Across runs: the leaderboard of every finished run under a runs folder, which settings went with better runs,
and the recommended next config, built from the best run's suggestions.

May import: pandas, yaml (lazily), report.analysis, report.next_config, report.tables, the bottom modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from crrecon_pipeline.numbers import fmt, pct
from crrecon_pipeline.report.advice import Suggestion
from crrecon_pipeline.report.analysis import analyze_log, final_metrics, run_history_file, stored_config
from crrecon_pipeline.report.next_config import apply_suggestions
from crrecon_pipeline.report.tables import markdown_table
from crrecon_pipeline.train.config import RunConfig

SETTING_COLUMNS = {"model": "model.name", "loss": "loss.name", "lr": "training.lr", "batch_size": "data.batch_size",
                   "epochs": "training.epochs", "weight_decay": "training.weight_decay",
                   "augment_180": "data.augment_180"}


def collect_runs(runs_dir: str | Path) -> list[dict]:
    """Every finished run under runs_dir (a folder with a final record and config.json), oldest first."""
    rows = []
    candidates = [p for p in Path(runs_dir).glob("*") if (p / "config.json").is_file()]
    for run in sorted(candidates, key=lambda p: (p / "config.json").stat().st_mtime):
        metrics = final_metrics(run)
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


def _cell(col: str, v) -> str:
    """One leaderboard cell: "–" for no value, a linked run id, a ratio as %, integer counts with separators."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if col == "run":
        return run_link(str(v))
    if col == "mse_vs_baseline":
        return pct(v)
    return fmt(int(v) if isinstance(v, float) and v.is_integer()
               and col in ("params", "epochs_completed", "best_epoch", "batch_size") else v)


def leaderboard_table(rows: list[dict], columns=tuple(LEADERBOARD)) -> str:
    """The leaderboard for people: key columns first, short linked run ids, ratios as %, integers with separators;
    `columns`: which of LEADERBOARD's (the short one: LEADERBOARD_KEY)."""
    if not rows:
        return ""
    cols = [c for c in columns if c in rows[0]]
    return markdown_table([LEADERBOARD[c] for c in cols], [[_cell(c, r[c]) for c in cols] for r in rows])


@dataclass(frozen=True)
class Comparison:
    """Every finished run side by side: the table (best first) for people as markdown (the key columns, and all),
    the mean ratio to baseline by each setting's values, the best run that passed, and the next config built from
    it with the suggestions it applied."""

    runs: int
    table: list[dict] = field(default_factory=list)
    markdown: str = ""
    markdown_full: str = ""
    effects: dict[str, dict] = field(default_factory=dict)
    best_run: str | None = None
    best_mse_vs_baseline: float | None = None
    suggestions_applied: list[Suggestion] = field(default_factory=list)
    next_config: RunConfig | None = None
    next_config_yaml: str = ""


def compare_runs(runs_dir: str | Path, max_ratio: float = 0.5) -> Comparison:
    """Leaderboard, which settings went with better runs, and a recommended next config from the best run that
    passes check_beats_baseline (ratio <= max_ratio); with none passing there is no best run to build on."""
    import pandas as pd
    import yaml

    rows = collect_runs(runs_dir)
    if not rows:
        return Comparison(runs=0)
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "config"} for r in rows]).sort_values("mse_vs_baseline")
    effects = {}
    for col in SETTING_COLUMNS:
        values = table[col].astype(str)
        if values.nunique() > 1:
            effects[col] = table.groupby(values)["mse_vs_baseline"].mean().sort_values().round(4).to_dict()
    passing = table[table["mse_vs_baseline"] <= max_ratio]
    by_name = {r["run"]: r for r in rows}
    best = by_name[passing.iloc[0]["run"]] if len(passing) else None
    base = best or by_name[table.iloc[0]["run"]]  # none passed: build on the least bad
    history_file = run_history_file(Path(runs_dir) / base["run"], base["config"])
    suggestions = analyze_log(history_file, base["config"]).suggestions if history_file.exists() else []
    nxt = apply_suggestions(base["config"], suggestions)
    return Comparison(
        runs=len(rows),
        table=table.to_dict(orient="records"),
        markdown=leaderboard_table(table.to_dict(orient="records"), LEADERBOARD_KEY),
        markdown_full=leaderboard_table(table.drop(columns=["baseline_val_mse"]).to_dict(orient="records")),
        effects=effects,
        best_run=best["run"] if best else None,
        best_mse_vs_baseline=float(passing.iloc[0]["mse_vs_baseline"]) if best else None,
        suggestions_applied=suggestions,
        next_config=nxt,
        next_config_yaml=yaml.safe_dump(nxt.to_dict(), sort_keys=False),
    )
