"""The model card of a training run: what was trained, on what, how, and how well — one markdown page for people
(trained_model's `model_card`), built from the run's config and final metrics. No Dagster import."""

from __future__ import annotations

import inspect
import sys

from torch import nn

from .config import flatten
from .losses import LOSSES
from .models import MODELS, count_parameters, get_model
from .numbers import fmt, pct


def architecture(model: nn.Module) -> str:
    """Top-level blocks with their types and parameter counts."""
    rows = [f"| `{name}` | {type(child).__name__} | {count_parameters(child):,} |" for name, child in model.named_children()]
    return "| block | type | parameters |\n|---|---|---|\n" + "\n".join(rows) + f"\n| **total** | | **{count_parameters(model):,}** |"


def loss_formula(name: str, params: dict) -> str:
    cls = LOSSES[name]
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not inspect.Parameter.empty}
    weights = defaults | params
    formula = getattr(cls, "FORMULA", None)
    return formula.format(**weights) if formula else f"{name}({', '.join(f'{k}={v}' for k, v in weights.items())})"


def model_card(config: dict, metrics: dict, model: nn.Module | None = None) -> str:
    model = model or get_model(config["model"]["name"], **config["model"]["params"])
    ratio = metrics["val_mse"] / metrics["baseline_val_mse"] if metrics.get("baseline_val_mse") else float("nan")
    doc = (sys.modules[MODELS[config["model"]["name"]].__module__].__doc__ or "").strip().split("\n\n")[0]
    hyper = "\n".join(f"| `{k}` | {fmt(v)} |" for k, v in flatten(config).items())
    training_set = metrics.get("training_set") or {}
    data = "\n".join(f"| {k} | `{v['version']}` | {v['rows']:,} |" for k, v in training_set.items())
    return f"""### {config['model']['name']} · {count_parameters(model):,} parameters

{doc}

**Results** (validation split, best checkpoint (lowest val loss) of epoch {metrics.get('best_epoch')} of {metrics.get('epochs_completed')}):
val MSE **{fmt(metrics['val_mse'])}** = **{pct(ratio)}** of the mean-spectrum baseline's {fmt(metrics['baseline_val_mse'])};
Pearson {fmt(metrics['val_pearson'])}; MAE {fmt(metrics.get('val_mae'))}.
Device {metrics.get('device')}, {fmt(metrics.get('samples_per_s'))} samples/s.

**Loss** `{config['loss']['name']}`: {loss_formula(config['loss']['name'], config['loss']['params'])}

**Split**: {metrics.get('train_samples', 0):,} training samples (180° twins {'included' if config['data'].get('augment_180') else 'not used'}),
{metrics.get('val_samples', 0):,} validation structures; split by a structure hash shared with the twin
(train_ratio {config['data'].get('train_ratio')}).

**Architecture**

{architecture(model)}

**Training data** (shard versions from the lineage)

| shard | version | rows |
|---|---|---|
{data or '| – | – | – |'}

**Hyper-parameters** (the full run config)

| key | value |
|---|---|
{hyper}
"""
