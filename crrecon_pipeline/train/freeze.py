"""training.freeze: parameter groups kept fixed while the rest trains (the research group's fine-tuning strategies:
head only, or encoder frozen).

Every registered model declares PARAM_GROUPS (group -> attribute prefixes of its parameters). A frozen parameter
has requires_grad False and is left out of the optimizer (so it gets no gradient, no AdamW state and no weight
decay), and every module whose parameters are all frozen is kept in eval mode during training, so dropout is off
there and running norm statistics (BatchNorm) stay fixed: a frozen part computes exactly what it did when it was
pretrained."""

from __future__ import annotations

from torch import nn


def group_of(model: nn.Module, param_name: str) -> str | None:
    for group, prefixes in getattr(type(model), "PARAM_GROUPS", {}).items():
        if any(param_name == p or param_name.startswith(p + ".") for p in prefixes):
            return group
    return None


def apply_freeze(model: nn.Module, groups: list[str] | tuple[str, ...]) -> dict:
    """Freeze the parameters of `groups`; returns {"trainable_params", "frozen_params", "frozen_groups"}."""
    frozen = trainable = 0
    for name, param in model.named_parameters():
        keep = group_of(model, name) in groups
        param.requires_grad_(not keep)
        if keep:
            frozen += param.numel()
        else:
            trainable += param.numel()
    return {"trainable_params": trainable, "frozen_params": frozen, "frozen_groups": list(groups)}


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Modules with parameters, all of them frozen (and their children): put in eval mode at every epoch start."""
    out = []
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(module)
    return out


def hold_frozen(model: nn.Module) -> None:
    """After model.train(): frozen parts back to eval mode (dropout off, norm statistics fixed)."""
    for module in frozen_modules(model):
        module.eval()
