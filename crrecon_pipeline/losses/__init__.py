"""Loss registry: a plain dict."""

from torch import nn

from ..registry import build
from .mse_pearson import MSEPearson, pearson_per_spectrum
from .multiscale import MultiScale
from .weighted_smooth import WeightedSmooth

LOSSES = {"mse_pearson": MSEPearson, "weighted_smooth": WeightedSmooth, "multiscale": MultiScale}

__all__ = ["LOSSES", "get_loss", "pearson_per_spectrum"]


def get_loss(name: str, **params) -> nn.Module:
    return build(LOSSES, "loss", name, params)
