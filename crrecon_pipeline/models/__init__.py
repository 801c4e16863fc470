"""The surrogate models: structure (B, 1, 128, 128) -> Bayer spectra (B, 2, 2, out_len), one model per file with
shapes in comments, registered by name in MODELS (a plain dict: a new model is one module here and one line below;
docs/extending.md). May import: grid, errors, registry, torch. Never data/, train/ or Dagster."""

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
