"""designed_structures: inverse design with the latest trained surrogate, verified by the built-in simulator
(crrecon_pipeline/design.py does the work; this is the Dagster face: run config, pictures, the check)."""


from pathlib import Path

import dagster as dg
from pydantic import Field

from crrecon_pipeline.defs.assets.common import latest_metadata
from crrecon_pipeline.defs.assets.training import trained_model
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, TrainingDevice
from crrecon_pipeline.design.optimize import DesignSettings
from crrecon_pipeline.design.run import run_design
from crrecon_pipeline.numbers import percent, rounded
from crrecon_pipeline.physics.bands import bayer_bands
from crrecon_pipeline.plots import markdown_image

DEFAULTS = DesignSettings()


class DesignConfig(dg.Config):
    designs: int = Field(default=DEFAULTS.designs, description="structures optimized together, from random starts")
    steps: int = Field(default=DEFAULTS.steps, description="Adam steps on the latent density")
    seed: int = Field(default=DEFAULTS.seed, description="random starts (the generator's rows 0..designs-1 of this seed)")
    blur_sigma_px: float = Field(default=DEFAULTS.blur_sigma_px, description="minimum feature size (periodic Gaussian blur)")
    band_edges_nm: list[float] = Field(default_factory=lambda: [400.0, 500.0, 600.0, 700.0],
                                       description="B | G | R band boundaries")
    band_weights: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], description="weights of B, G, R")
    tolerance: float = Field(default=0.05, description="check_design_verified: largest |predicted - simulated| allowed")

    def settings(self) -> DesignSettings:
        return DesignSettings(designs=self.designs, steps=self.steps, seed=self.seed, blur_sigma_px=self.blur_sigma_px,
                              bands=bayer_bands(self.band_edges_nm, self.band_weights))


@dg.asset(
    deps=[trained_model],
    group_name="design",
    kinds={"pytorch"},
    check_specs=[dg.AssetCheckSpec("check_design_verified", asset="designed_structures",
                                   description="every design's surrogate efficiency is within `tolerance` of the simulator's")],
    description="Color routers designed through the latest trained surrogate (Bayer routing efficiency), simulated "
                "with the training data's own simulator settings; written as a raw shard for the active-learning loop.",
)
def designed_structures(context: dg.AssetExecutionContext, config: DesignConfig, paths: CrreconPaths,
                        device: TrainingDevice):
    model = latest_metadata(context, "trained_model")
    checkpoint = model["checkpoint"]
    versions = {k: v["version"] for k, v in (model.get("training_set") or {}).items()} or None  # what it trained on
    out = Path(paths.home) / "designs" / context.run.run_id
    try:
        settings = config.settings()
        summary = run_design(checkpoint, paths.prepared_path(), out, settings, device=device.device,
                             progress=LogProgress(context.log, settings.steps, "design", unit="steps"), versions=versions)
    except (ValueError, FileNotFoundError) as exc:  # DataError included: bad input fails with its one line
        raise dg.Failure(description=str(exc)) from None
    context.log.info(summary["verification"])
    designs = summary["designs"]
    verified = summary["verified"]
    best = designs[summary["best_design"]]
    gaps = [abs(d["predicted_efficiency"] - d["simulated_efficiency"]) for d in designs] if verified else []
    rows = "\n".join(f"| {d['index']} | {d['initial_predicted_efficiency']:.4f} | {d['predicted_efficiency']:.4f} | "
                     f"{'-' if d['simulated_efficiency'] is None else format(d['simulated_efficiency'], '.4f')} | {d['fill']:.3f} |"
                     for d in designs)
    table = "| design | start (predicted) | predicted | simulated | fill |\n|---|---|---|---|---|\n" + rows
    metadata = {
        "designs": len(designs),
        "best_design": summary["best_design"],
        "best_predicted_efficiency": rounded(best["predicted_efficiency"]),
        "training_best_efficiency": rounded(summary["training_best_efficiency"]),
        "verified": verified,
        "verification": summary["verification"],
        "efficiencies": dg.MetadataValue.md(table),
        "designs_picture": dg.MetadataValue.md(markdown_image(out / "designs.png", "designs: simulated vs predicted spectra")),
        "progress_picture": dg.MetadataValue.md(markdown_image(out / "design_progress.png", "efficiency per step")),
        "out": dg.MetadataValue.path(summary["out"]),
        "shard_files": dg.MetadataValue.json(summary["files"]),
    }
    if verified:
        metadata |= {"best_simulated_efficiency": rounded(best["simulated_efficiency"]),
                     "best_pct_of_training_best": percent(best["simulated_efficiency"] / summary["training_best_efficiency"]),
                     "max_abs_gap": rounded(max(gaps))}
    yield dg.MaterializeResult(metadata=metadata)
    if not verified:
        yield dg.AssetCheckResult(check_name="check_design_verified", passed=False, severity=dg.AssetCheckSeverity.WARN,
                                  description=f"not verified: {summary['verification']}")
        return
    yield dg.AssetCheckResult(
        check_name="check_design_verified", passed=bool(max(gaps) <= config.tolerance),
        description=f"largest |predicted - simulated| {max(gaps):.4f} (tolerance {config.tolerance})",
        metadata={"max_abs_gap": rounded(max(gaps)), "tolerance": config.tolerance,
                  "gaps": dg.MetadataValue.json([rounded(g) for g in gaps])})
