"""Model registry: a plain dict. A new model is one module here and one line below."""

from torch import nn

from .cnn_gru import CNNGRU
from .cnn_xattn import CNNXAttn

MODELS = {"cnn_xattn": CNNXAttn, "cnn_gru": CNNGRU}


def get_model(name: str, **params) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (one of {sorted(MODELS)})")
    try:
        return MODELS[name](**params)
    except TypeError as exc:
        raise ValueError(f"model {name}: bad parameters ({exc})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
