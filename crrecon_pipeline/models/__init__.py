"""Model registry: a plain dict. A new model is one module here and one line below."""

from torch import nn

from crrecon_pipeline.models.cnn_field import CNNField
from crrecon_pipeline.models.cnn_gru import CNNGRU
from crrecon_pipeline.models.cnn_xattn import CNNXAttn
from crrecon_pipeline.registry import build

MODELS = {"cnn_xattn": CNNXAttn, "cnn_gru": CNNGRU, "cnn_field": CNNField}


def get_model(name: str, **params) -> nn.Module:
    return build(MODELS, "model", name, params)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
