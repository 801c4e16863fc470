"""The research group's four architectures (hyoseokp/data_CR, code/CR_recon/models at debe903) under their names,
checkpoint-compatible: the same constructor parameters and defaults, the same state-dict names and shapes (their
trainer's `model` state dict loads with strict=True) and the same computation. Each ends in `scale`, a FixedScale
with no tensors (identity; set_stats ignored, model.constraint applied as their trainer's projection), so this
project's trainer drives them and their state dict stays exactly theirs. Registered in MODELS under
these names (models/__init__.py)."""

from crrecon_pipeline.models.research.cnn_diffraction import CNNDiffraction
from crrecon_pipeline.models.research.cnn_gru import CNNGRU
from crrecon_pipeline.models.research.cnn_xattn import CNNXAttn
from crrecon_pipeline.models.research.se_disco import SEDiSCO

RESEARCH_MODELS = {"cnn_xattn": CNNXAttn, "cnn_gru": CNNGRU, "cnn_diffraction": CNNDiffraction, "se_disco": SEDiSCO}
