"""The model card of a training run: what was trained, on what, how, and how well — one markdown page for people
(trained_model's `model_card`), built from the run's config and final metrics. No Dagster import."""

from __future__ import annotations

import inspect
import sys

from torch import nn

from crrecon_pipeline.data.symmetry import symmetry_summary
from crrecon_pipeline.losses import LOSSES
from crrecon_pipeline.models import MODELS, count_parameters, get_model
from crrecon_pipeline.numbers import fmt, pct
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.metrics import PIXELS


def architecture(model: nn.Module) -> str:
    """Top-level blocks with their types and parameter counts."""
    rows = [f"| `{name}` | {type(child).__name__} | {count_parameters(child):,} |"
            for name, child in model.named_children()]
    return ("| block | type | parameters |\n|---|---|---|\n" + "\n".join(rows)
            + f"\n| **total** | | **{count_parameters(model):,}** |")


def loss_formula(name: str, params: dict) -> str:
    cls = LOSSES[name]
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    weights = defaults | params
    formula = getattr(cls, "FORMULA", None)
    return formula.format(**weights) if formula else f"{name}({', '.join(f'{k}={v}' for k, v in weights.items())})"


def field_line(metrics: dict) -> str:
    """Per-pixel MSE, peak-wavelength and routing-efficiency errors, where the run reported them."""
    if "val_mse_R" not in metrics:
        return ""
    pixels = ", ".join(f"{p} {fmt(metrics[f'val_mse_{p}'])}" for p in PIXELS)
    routing = (f"; routing efficiency error {fmt(metrics['val_routing_error'])} (true mean "
               f"{fmt(metrics['val_routing_efficiency'])})" if "val_routing_error" in metrics else "")
    return f"\nPer-pixel MSE {pixels}; peak wavelength error {fmt(metrics['val_peak_error_nm'])} nm{routing}."


def finetune_lines(metrics: dict) -> str:
    """Trainable / frozen parameters, early stopping, per-term final losses and resume changes, where reported."""
    lines = []
    if "frozen_params" in metrics:
        groups = ", ".join(metrics.get("frozen_groups") or []) or "none"
        lines.append(f"**Parameters**: {metrics['trainable_params']:,} trainable, {metrics['frozen_params']:,} frozen "
                     f"(frozen groups: {groups}).")
    if metrics.get("stopped_early"):
        lines.append(f"**Early stopping**: stopped after epoch {metrics['stopped_at_epoch']} (no improvement "
                     f"within the patience).")
    if metrics.get("val_terms"):
        terms = ", ".join(f"`{k}` {fmt(v)}" for k, v in metrics["val_terms"].items())
        lines.append(f"**Final loss terms** (validation, weighted, summing to the loss): {terms}.")
    for change in metrics.get("resume_changes") or []:
        after = f" after epoch {change['epoch']}" if "epoch" in change else ""
        lines.append(f"**Resumed with a change**{after}: `{change['key']}` {change['old']!r} → {change['new']!r}.")
    return ("\n\n" + "\n\n".join(lines)) if lines else ""


def model_card(config: RunConfig, metrics: dict, model: nn.Module | None = None) -> str:
    model = model or get_model(config.model.name, **config.model.params)
    ratio = metrics["val_mse"] / metrics["baseline_val_mse"] if metrics.get("baseline_val_mse") else float("nan")
    doc = (sys.modules[MODELS[config.model.name].__module__].__doc__ or "").strip().split("\n\n")[0]
    hyper = "\n".join(f"| `{k}` | {fmt(v)} |" for k, v in config.flat().items())
    d = config.data
    images = symmetry_summary(turn180=d.augment_180, shifts=d.augment_shifts, turn90=d.augment_90)
    training_set = metrics.get("training_set") or {}
    data = "\n".join(f"| {k} | `{v['version']}` | {v['rows']:,} |" for k, v in training_set.items())
    best_epoch, epochs_completed = metrics.get("best_epoch"), metrics.get("epochs_completed")
    baseline = fmt(metrics["baseline_val_mse"])
    return f"""### {config.model.name} · {count_parameters(model):,} parameters

{doc}

**Results** (validation split, best checkpoint (lowest val loss) of epoch {best_epoch} of {epochs_completed}):
val MSE **{fmt(metrics['val_mse'])}** = **{pct(ratio)}** of the mean-spectrum baseline's {baseline};
Pearson {fmt(metrics['val_pearson'])}; MAE {fmt(metrics.get('val_mae'))}.{field_line(metrics)}
Device {metrics.get('device')}, {fmt(metrics.get('samples_per_s'))} samples/s.

**Loss** `{config.loss.name}`: {loss_formula(config.loss.name, config.loss.params)}{finetune_lines(metrics)}

**Split**: {metrics.get('train_samples', 0):,} training samples ({images}),
{metrics.get('val_samples', 0):,} validation structures; split by a structure hash shared by all images of a
structure under the symmetry group (train_ratio {d.train_ratio}).

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
