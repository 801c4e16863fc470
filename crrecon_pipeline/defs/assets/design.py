"""designed_structures: inverse design with the latest trained surrogate, verified by the built-in simulator
(crrecon_pipeline/design/ does the work; this is the Dagster face: run config, pictures, the check)."""


from pathlib import Path

import dagster as dg
from pydantic import Field

from crrecon_pipeline.data.checks import Stage
from crrecon_pipeline.defs.assets.training import trained_model
from crrecon_pipeline.defs.checks import DESIGN_VERIFIED_CHECKS, judged
from crrecon_pipeline.defs.handoff import required_trained_model
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, TrainingDevice
from crrecon_pipeline.defs.settings import build, generated
from crrecon_pipeline.design.optimize import DESIGN_FIELDS, DesignSettings
from crrecon_pipeline.design.run import run_design
from crrecon_pipeline.design.summary import DesignSummary
from crrecon_pipeline.design.verify import DESIGN_CHECKS, DesignCheckLimits
from crrecon_pipeline.numbers import percent, rounded
from crrecon_pipeline.physics.bands import BAND_EDGES_NM, BAND_WEIGHTS, bayer_bands
from crrecon_pipeline.plots import markdown_image
from crrecon_pipeline.report.tables import design_table
from crrecon_pipeline.settings import pydantic_fields


class DesignConfig(generated("DesignFields", dg.Config, pydantic_fields(DesignSettings, DESIGN_FIELDS),
                             pydantic_fields(DesignCheckLimits))):
    """The design run: DesignSettings (design/optimize.py) and the check's tolerance (design/verify.py)."""

    band_edges_nm: list[float] = Field(default_factory=lambda: list(BAND_EDGES_NM),
                                       description="B | G | R band boundaries")
    band_weights: list[float] = Field(default_factory=lambda: list(BAND_WEIGHTS), description="weights of B, G, R")

    def settings(self) -> DesignSettings:
        return build(DesignSettings, self, bands=bayer_bands(self.band_edges_nm, self.band_weights))


@dg.asset(
    deps=[trained_model],
    group_name="design",
    kinds={"pytorch"},
    check_specs=DESIGN_VERIFIED_CHECKS,
    description="Color routers designed through the latest trained surrogate (Bayer routing efficiency), simulated "
                "with the training data's own simulator settings; written as a raw shard for the active-learning loop.",
)
def designed_structures(context: dg.AssetExecutionContext, config: DesignConfig, paths: CrreconPaths,
                        device: TrainingDevice):
    model = required_trained_model(context.instance)
    out = Path(paths.home) / "designs" / context.run.run_id
    try:
        settings = config.settings()
        summary = run_design(model.checkpoint, paths.prepared_path(), out, settings, device=device.device,
                             progress=LogProgress(context.log, settings.steps, "design", unit="steps"),
                             versions=model.versions())  # the data it trained on
    except (ValueError, FileNotFoundError) as exc:  # DataError included: bad input fails with its one line
        raise dg.Failure(description=str(exc)) from None
    context.log.info(summary.verification)
    yield dg.MaterializeResult(metadata=design_metadata(summary, out))
    yield from judged(DESIGN_CHECKS, Stage.DESIGNS, summary, build(DesignCheckLimits, config))


def design_metadata(summary: DesignSummary, out: Path) -> dict:
    best = summary.best  # None: no design counts
    metadata = {
        "designs": len(summary.designs),
        "best_design": summary.best_design,
        "counted_designs": summary.counted_designs,
        "min_feature_px": summary.min_feature_px,
        "objective": summary.objective,
        "best_predicted_efficiency": rounded(best.predicted_efficiency) if best else None,
        "training_best_efficiency": rounded(summary.training_best_efficiency),
        "verified": summary.verified,
        "verification": summary.verification,
        "efficiencies": dg.MetadataValue.md(design_table(summary.designs)),
        "designs_picture": dg.MetadataValue.md(markdown_image(out / "designs.png",
                                                              "designs: simulated vs predicted spectra")),
        "progress_picture": dg.MetadataValue.md(markdown_image(out / "design_progress.png", "efficiency per step")),
        "out": dg.MetadataValue.path(summary.out),
        "shard_files": dg.MetadataValue.json(summary.files),
    }
    if summary.verified:
        metadata |= {"max_abs_gap": rounded(max(summary.gaps()))}
    if summary.verified and best:
        metadata |= {"best_simulated_efficiency": rounded(best.simulated_efficiency),
                     "best_simulated_min_band": rounded(best.simulated_min_band),
                     "best_pct_of_training_best": percent(best.simulated_efficiency
                                                          / summary.training_best_efficiency)}
    return metadata
