"""Loss registry: a plain dict."""

from torch import nn

from .mse_pearson import MSEPearson, pearson_per_spectrum
from .weighted_smooth import WeightedSmooth

LOSSES = {"mse_pearson": MSEPearson, "weighted_smooth": WeightedSmooth}

__all__ = ["LOSSES", "get_loss", "pearson_per_spectrum"]


def get_loss(name: str, **params) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (one of {sorted(LOSSES)})")
    try:
        return LOSSES[name](**params)
    except TypeError as exc:
        raise ValueError(f"loss {name}: bad parameters ({exc})") from None
