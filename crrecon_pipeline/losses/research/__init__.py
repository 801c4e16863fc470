"""The research group's six loss families (hyoseokp/data_CR, code/CR_recon/losses at debe903) under their names,
with their parameters, defaults and values, each a TermLoss whose named terms sum to the research code's total
(`clamp` carries its clamp to [0, 100]). Registered in LOSSES under these names
(losses/__init__.py); this project's losses of the same root name and other parameters are crrecon_mse_pearson,
crrecon_mse_corr_l1 and crrecon_weighted_smooth."""

from crrecon_pipeline.losses.research.abs_dc_shape import AbsDCShape
from crrecon_pipeline.losses.research.adaptive_spectral import AdaptiveSpectral
from crrecon_pipeline.losses.research.mse_corr_l1 import MSECorrL1
from crrecon_pipeline.losses.research.mse_pearson import MSEPearson
from crrecon_pipeline.losses.research.multiscale_spectral import MultiscaleSpectral
from crrecon_pipeline.losses.research.weighted_smooth import WeightedSmooth

RESEARCH_LOSSES = {"mse_pearson": MSEPearson, "mse_corr_l1": MSECorrL1, "weighted_smooth": WeightedSmooth,
                   "multiscale_spectral": MultiscaleSpectral, "adaptive_spectral": AdaptiveSpectral,
                   "abs_dc_shape": AbsDCShape}
