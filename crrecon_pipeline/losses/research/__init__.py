"""The research group's six loss families (hyoseokp/data_CR, code/CR_recon/losses at debe903) under their names,
with their parameters, defaults and values, each a TermLoss whose named terms sum to the research code's total
(`clamp` carries its clamp to [0, 100]). Not yet in LOSSES: RESEARCH_LOSSES is wired into the registry with the
import (issue #32); where this project has a same-named loss with other parameters (mse_pearson, mse_corr_l1,
weighted_smooth), the project's keeps a name of its own then."""

from crrecon_pipeline.losses.research.abs_dc_shape import AbsDCShape
from crrecon_pipeline.losses.research.adaptive_spectral import AdaptiveSpectral
from crrecon_pipeline.losses.research.mse_corr_l1 import MSECorrL1
from crrecon_pipeline.losses.research.mse_pearson import MSEPearson
from crrecon_pipeline.losses.research.multiscale_spectral import MultiscaleSpectral
from crrecon_pipeline.losses.research.weighted_smooth import WeightedSmooth

RESEARCH_LOSSES = {"mse_pearson": MSEPearson, "mse_corr_l1": MSECorrL1, "weighted_smooth": WeightedSmooth,
                   "multiscale_spectral": MultiscaleSpectral, "adaptive_spectral": AdaptiveSpectral,
                   "abs_dc_shape": AbsDCShape}
