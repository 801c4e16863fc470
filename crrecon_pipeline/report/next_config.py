"""The next run's config from a run's config and the suggestions for it: each suggestion's value set, a new model
or loss keeping the parameters it also takes.

May import: models/, losses/, train.config, report.advice (the Suggestion it applies).
"""

from __future__ import annotations

import inspect

from crrecon_pipeline.losses import LOSSES
from crrecon_pipeline.models import MODELS
from crrecon_pipeline.report.advice import Suggestion
from crrecon_pipeline.train.config import RunConfig


def _params_for(section: str, name: str, params: dict) -> dict:
    """Keep the parameters the new model/loss also takes (widths, dropouts...), drop the others."""
    accepted = inspect.signature((MODELS if section == "model" else LOSSES)[name]).parameters
    return {k: v for k, v in params.items() if k in accepted}


def apply_suggestions(config: RunConfig, suggestions: list[Suggestion]) -> RunConfig:
    """The next run's config: each suggestion's `value` set (None means keep), as a new validated RunConfig;
    `config` is left as it is. A new model or loss keeps the parameters it also takes."""
    changes = {}
    for s in suggestions:
        if s.value is None:
            continue
        section, _, key = s.parameter.partition(".")
        if key == "name":
            changes[f"{section}.params"] = _params_for(section, s.value, getattr(config, section).params)
        changes[s.parameter] = s.value
    return config.with_overrides(changes, "next run")
