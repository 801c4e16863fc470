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
from crrecon_pipeline.train.records import RunMetrics


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


def field_line(m: RunMetrics) -> str:
    """Per-pixel MSE, peak-wavelength and routing-efficiency errors, where the run reported them."""
    if m.val_mse_R is None:
        return ""
    pixels = ", ".join(f"{p} {fmt(getattr(m, f'val_mse_{p}'))}" for p in PIXELS)
    routing = (f"; routing efficiency error {fmt(m.val_routing_error)} (true mean "
               f"{fmt(m.val_routing_efficiency)})" if m.val_routing_error is not None else "")
    return f"\nPer-pixel MSE {pixels}; peak wavelength error {fmt(m.val_peak_error_nm)} nm{routing}."


def finetune_lines(m: RunMetrics) -> str:
    """Trainable / frozen parameters, early stopping, per-term final losses and resume changes, where reported."""
    lines = []
    if m.frozen_params is not None:
        groups = ", ".join(m.frozen_groups) or "none"
        lines.append(f"**Parameters**: {m.trainable_params:,} trainable, {m.frozen_params:,} frozen "
                     f"(frozen groups: {groups}).")
    if m.stopped_early:
        lines.append(f"**Early stopping**: stopped after epoch {m.stopped_at_epoch} (no improvement "
                     f"within the patience).")
    if m.val_terms:
        terms = ", ".join(f"`{k}` {fmt(v)}" for k, v in m.val_terms.items())
        lines.append(f"**Final loss terms** (validation, weighted, summing to the loss): {terms}.")
    for change in m.resume_changes:
        lines.append(f"**Resumed with a change** after epoch {change.epoch}: `{change.key}` {change.old!r} → "
                     f"{change.new!r}.")
    return ("\n\n" + "\n\n".join(lines)) if lines else ""


def model_card(config: RunConfig, metrics: RunMetrics, model: nn.Module | None = None) -> str:
    m = metrics
    model = model or get_model(config.model.name, **config.model.params)
    doc = (sys.modules[MODELS[config.model.name].__module__].__doc__ or "").strip().split("\n\n")[0]
    hyper = "\n".join(f"| `{k}` | {fmt(v)} |" for k, v in config.flat().items())
    d = config.data
    images = symmetry_summary(turn180=d.augment_180, shifts=d.augment_shifts, turn90=d.augment_90)
    data = "\n".join(f"| {k} | `{v['version']}` | {v['rows']:,} |" for k, v in m.training_set.items())
    return f"""### {config.model.name} · {count_parameters(model):,} parameters

{doc}

**Results** (validation split, best checkpoint (lowest val loss) of epoch {m.best_epoch} of {m.epochs_completed}):
val MSE **{fmt(m.val_mse)}** = **{pct(m.mse_vs_baseline)}** of the mean-spectrum baseline's {fmt(m.baseline_val_mse)};
Pearson {fmt(m.val_pearson)}; MAE {fmt(m.val_mae)}.{field_line(m)}
Device {m.device}, {fmt(m.samples_per_s)} samples/s.

**Loss** `{config.loss.name}`: {loss_formula(config.loss.name, config.loss.params)}{finetune_lines(m)}

**Split**: {m.train_samples:,} training samples ({images}),
{m.val_samples:,} validation structures; split by a structure hash shared by all images of a
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
