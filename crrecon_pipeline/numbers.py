"""Numbers for people in metadata and reports: ~4 significant figures, percentages for ratios and gaps, integers
with thousands separators. Values that plots read stay numbers (rounded, never strings). No Dagster import."""

from __future__ import annotations

import math


def rounded(x):
    """~4 significant figures as a float (the Plots tab can still draw it); None and non-finite pass through."""
    if x is None or isinstance(x, bool):
        return x
    x = float(x)
    return float(f"{x:.4g}") if math.isfinite(x) else x


def percent(ratio):
    """A ratio as a percentage with ~4 significant figures (0.1923 -> 19.23); None passes through."""
    return None if ratio is None else rounded(100.0 * float(ratio))


def rounded_all(value):
    """Every float inside dicts and lists rounded (JSON metadata: settings, check details)."""
    if isinstance(value, float):
        return rounded(value)
    if isinstance(value, dict):
        return {k: rounded_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded_all(v) for v in value]
    return value


def fmt(x) -> str:
    """Text: ~4 significant figures for floats, thousands separators for integers."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def pct(ratio: float) -> str:
    """Text: a ratio as a percentage, 3 significant figures (0.1923 -> '19.2 %')."""
    return f"{100 * ratio:.3g} %"


def shape_text(shape) -> str:
    """(300, 1, 128, 128) -> '300 × 1 × 128 × 128'."""
    return " × ".join(f"{n:,}" for n in shape)
