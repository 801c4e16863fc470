"""The training losses: (pred, target) Bayer spectra -> a scalar, one loss per file, registered by name in LOSSES
(a registry.Registry: a new loss is one module here and one line below, or an entry point `crrecon_pipeline.losses`
of another installed package; docs/extending.md). Every loss is a losses.terms.TermLoss: named weighted terms that
sum to the total.

Two families: the research group's losses under the research code's names, parameters and values (research/:
`mse_pearson`, `mse_corr_l1`, `weighted_smooth`, `multiscale_spectral`, `adaptive_spectral`, `abs_dc_shape`), and
this project's (`spectral`, `multiscale`, and `crrecon_mse_pearson` / `crrecon_mse_corr_l1` /
`crrecon_weighted_smooth`, which differ from the research losses of the same root name and so carry a name of their
own). May import: errors, registry, torch. Never data/, train/ or Dagster."""

from torch import nn

from crrecon_pipeline.losses.crrecon_mse_corr_l1 import CrreconMSECorrL1
from crrecon_pipeline.losses.crrecon_mse_pearson import CrreconMSEPearson
from crrecon_pipeline.losses.crrecon_weighted_smooth import CrreconWeightedSmooth
from crrecon_pipeline.losses.multiscale import MultiScale
from crrecon_pipeline.losses.research import RESEARCH_LOSSES
from crrecon_pipeline.losses.spectral import Spectral
from crrecon_pipeline.registry import Registry, build

PROJECT_LOSSES = {"crrecon_mse_pearson": CrreconMSEPearson, "crrecon_weighted_smooth": CrreconWeightedSmooth,
                  "multiscale": MultiScale, "spectral": Spectral, "crrecon_mse_corr_l1": CrreconMSECorrL1}
LOSSES = Registry("loss", "crrecon_pipeline.losses", {**RESEARCH_LOSSES, **PROJECT_LOSSES})


def get_loss(name: str, **params) -> nn.Module:
    return build(LOSSES, "loss", name, params)
