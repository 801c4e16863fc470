"""The surrogate models: structure (B, 1, 128, 128) -> Bayer spectra (B, 2, 2, out_len), one model per file with
shapes in comments, registered by name in MODELS (a registry.Registry: a new model is one module here and one line
below, or an entry point `crrecon_pipeline.models` of another installed package; docs/extending.md).

Two families: the research group's architectures under the research code's names (`cnn_xattn`, `cnn_gru`,
`cnn_diffraction`, `se_disco`, in research/: their checkpoints load as they are), and this project's designs
(`cnn_field`, and `crrecon_xattn` / `crrecon_gru`, which differ from the research models of similar names and so
carry a name of their own). May import: grid, errors, registry, torch. Never data/, train/ or Dagster."""

from torch import nn

from crrecon_pipeline.models.cnn_field import CNNField
from crrecon_pipeline.models.crrecon_gru import CrreconGRU
from crrecon_pipeline.models.crrecon_xattn import CrreconXAttn
from crrecon_pipeline.models.research import RESEARCH_MODELS
from crrecon_pipeline.registry import Registry, build

PROJECT_MODELS = {"cnn_field": CNNField, "crrecon_xattn": CrreconXAttn, "crrecon_gru": CrreconGRU}
MODELS = Registry("model", "crrecon_pipeline.models", {**RESEARCH_MODELS, **PROJECT_MODELS})


def get_model(name: str, **params) -> nn.Module:
    return build(MODELS, "model", name, params)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
