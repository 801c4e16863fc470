"""Building a registered module by name: the models and the losses are plain dicts of classes."""

from torch import nn

from crrecon_pipeline.errors import ConfigError


def build(registry: dict, kind: str, name: str, params: dict) -> nn.Module:
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r} (one of {sorted(registry)})")
    try:
        return registry[name](**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name}: bad parameters ({exc})") from None
