"""The training losses: (pred, target) Bayer spectra -> a scalar, one loss per file, registered by name in LOSSES
(a plain dict: a new loss is one module here and one line below; docs/extending.md). Every loss is a
losses.terms.TermLoss: named weighted terms that sum to the total. May import: errors,
registry, torch. Never data/, train/ or Dagster."""

from torch import nn

from crrecon_pipeline.losses.mse_corr_l1 import MSECorrL1
from crrecon_pipeline.losses.mse_pearson import MSEPearson
from crrecon_pipeline.losses.multiscale import MultiScale
from crrecon_pipeline.losses.spectral import Spectral
from crrecon_pipeline.losses.weighted_smooth import WeightedSmooth
from crrecon_pipeline.registry import build

LOSSES = {"mse_pearson": MSEPearson, "weighted_smooth": WeightedSmooth, "multiscale": MultiScale,
          "spectral": Spectral, "mse_corr_l1": MSECorrL1}


def get_loss(name: str, **params) -> nn.Module:
    return build(LOSSES, "loss", name, params)
