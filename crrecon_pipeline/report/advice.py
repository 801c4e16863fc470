"""Advice from a diagnosis (the research code's model-optimizer playbook): the Suggestions
(parameter, action, value, reason) for the diagnosed problems, where `value` is the new setting (None: keep as
is) and `action` the same for people. They reason from the run's RunConfig (the schema's defaults when a log comes
without one) and switch models and losses among the registered ones (MODELS, LOSSES): nothing here restates a
default or a name.

May import: torch, models/, losses/, train.config, report.diagnosis, the bottom modules.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from crrecon_pipeline.losses import LOSSES
from crrecon_pipeline.models import MODELS, count_parameters
from crrecon_pipeline.numbers import pct
from crrecon_pipeline.report.diagnosis import NOT_LEARNING_RATIO, WINDOW, Trends
from crrecon_pipeline.train.config import RunConfig


@dataclass(frozen=True)
class Suggestion:
    """One setting to change: `parameter` a dotted config key, `value` its new setting (None: keep as is),
    `action` the same for people, `reason` what in the run led to it."""

    parameter: str
    action: str
    value: Any
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Advice:
    """The suggestions so far, in order; the first diagnosis to touch a setting decides it."""

    items: list[Suggestion] = field(default_factory=list)

    def add(self, parameter: str, action: str, value, reason: str) -> None:
        if all(s.parameter != parameter for s in self.items):
            self.items.append(Suggestion(parameter, action, value, reason))

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


def _divergence(advice: Advice, m: Trends, cfg: RunConfig) -> None:
    advice.change("training.lr", "decrease", float(f"{cfg.training.lr * 0.3:.2g}"),
                  f"{m.nonfinite_epochs} non-finite epochs; val rose to {m.max_val_over_best:.1f}x its best "
                  f"after epoch {m.best_epoch}")
    advice.change("training.grad_clip", "set", 0.5, "clipping harder bounds the update that blew up")
    advice.change("data.batch_size", "increase", cfg.data.batch_size * 2, "larger batches give less noisy gradients")


def _overfitting(advice: Advice, m: Trends, cfg: RunConfig) -> None:
    decay = cfg.training.weight_decay * 4 or RunConfig().training.weight_decay  # from 0: the schema's default
    advice.change("training.weight_decay", "increase", float(f"{decay:.2g}"),
                  f"val loss rose {-m.val_trend:.0%} over the last {WINDOW} epochs while train fell "
                  f"{m.train_trend:.0%}")
    advice.add("training.epochs", f"stop near epoch {m.best_epoch}", int(m.best_epoch),
               f"the best validation loss came {m.epochs_since_best} epochs before the end")
    lighter = neighbour_model(cfg.model.name, -1)
    if lighter:
        advice.change("model.name", "switch", lighter, f"a lighter model ({model_sizes()[lighter]:,} parameters at "
                      f"its defaults, {cfg.model.name} {model_sizes()[cfg.model.name]:,}) has less capacity to "
                      f"memorise the training set")
    if cfg.data.augment_180:
        advice.add("data.augment_180", "keep true", None, "the 180-degree twins double the data for free")
    else:
        advice.add("data.augment_180", "set to true", True, "the 180-degree twins double the data for free")


def _plateau(advice: Advice, m: Trends, cfg: RunConfig) -> None:
    lr = cfg.training.lr
    advice.add("training.lr", f"decrease to {lr * 0.5:.2g} (or restart warmup)", float(f"{lr * 0.5:.2g}"),
               f"val loss changed {m.window_improvement:.2%} over the last {WINDOW} epochs")
    larger = neighbour_model(cfg.model.name, +1)
    if larger:
        advice.change("model.name", "switch", larger, f"a larger model ({model_sizes()[larger]:,} parameters at its "
                      f"defaults, {cfg.model.name} {model_sizes()[cfg.model.name]:,}) has more capacity")
    loss = other_loss(cfg.loss.name)
    if loss:
        advice.change("loss.name", "switch", loss, "a different objective can move a run stuck on one")
    advice.change("data.batch_size", "decrease", max(cfg.data.batch_size // 2, 8),
                  "smaller batches add gradient noise that can escape a plateau")


def _still_improving(advice: Advice, m: Trends, cfg: RunConfig) -> None:
    epochs = m.total_epochs or cfg.training.epochs
    advice.change("training.epochs", "increase", int(epochs * 1.5),
                  f"val loss still fell {m.window_improvement:.1%} over the last {WINDOW} epochs and the best is "
                  f"the latest")


def _not_learning(advice: Advice, m: Trends, cfg: RunConfig) -> None:
    ratio = m.mse_vs_baseline
    seen = (f"val MSE is {pct(ratio)} of the mean-spectrum baseline's"
            if ratio is not None and ratio > NOT_LEARNING_RATIO
            else f"val loss moved only {pct(m.total_improvement)} in {m.epochs_completed} epochs")
    advice.change("training.lr", "increase", float(f"{cfg.training.lr * 3:.2g}"),
                  f"{seen}: larger steps, or check the data and the loss")


def _too_short(advice: Advice, m: Trends, cfg: RunConfig) -> None:
    epochs = m.total_epochs or cfg.training.epochs
    advice.change("training.epochs", "increase", max(2 * WINDOW, 2 * epochs),
                  f"{m.epochs_completed} epochs are too few to judge a trend (the diagnosis looks at the last "
                  f"{WINDOW})")


# In this order: the first diagnosis to touch a setting decides it (a diverged run's lr goes down, not up).
ADVICE = (("divergence", _divergence), ("overfitting", _overfitting), ("plateau", _plateau),
          ("still_improving", _still_improving), ("not_learning", _not_learning), ("too_short", _too_short))


def suggest(m: Trends, diagnosis: list[str], config: RunConfig | None = None) -> list[Suggestion]:
    """The Suggestions for the diagnosed problems, reasoned from the run's config (the
    schema's defaults when the log came without one)."""
    cfg = config if config is not None else RunConfig()
    advice = Advice()
    for name, advise in ADVICE:
        if name in diagnosis:
            advise(advice, m, cfg)
    if not advice.items and m.epochs_completed:
        advice.add("training.epochs", "keep", None,
                   "no problem detected; compare against other runs before changing settings")
    return advice.items
