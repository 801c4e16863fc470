"""pretrained_model: a surrogate trained on built-in simulator rows in the user's geometry, for trained_model to
start from (`training.init_from: pretrained_model`) when the user's own (rigorous) set is small. Its run config is
trained_model's schema plus a `simulator` section; geometry left empty there comes from the SimulatorResource (the
user's geometry). The rows live in CRRECON_HOME/pretrain/<settings digest>/ and are reused by later runs."""

import dagster as dg
from pydantic import Field

from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.assets.training import GPU_TAGS, TrainedModelConfig, dagster_metadata, report_record
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource, TrainingDevice
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, settings_table
from crrecon_pipeline.physics.structures import StructureParams
from crrecon_pipeline.report.run_metadata import final_metadata
from crrecon_pipeline.train.config import validate
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.pretrain import PretrainData, prepare_pretraining

GEOMETRY = ("period_um", "height_um", "depth_um", "n_substrate", "cauchy_a", "cauchy_b")


class PretrainSimulator(dg.Config):
    """The pretraining rows: how many, which fidelity; geometry fields left empty take the SimulatorResource's."""

    rows: int = Field(4000, ge=10, description="simulated rows (every one finished: no unfinished rows)")
    shards: int = Field(1, ge=1, description="raw shard files the rows are written in")
    seed: int = Field(1000, description="structure seed of the pretraining rows")
    fidelity: str = Field("multislice", description="multislice (the default, at the coarse resolution below: as "
                          "cheap as thin and a far better start for rigorous data; README) or thin")
    multislice_slices: int = Field(8, ge=1, description="slices through the pillar layer (multislice only)")
    multislice_grid: int = Field(32, ge=1, description="lateral samples per side in the layer (multislice only; 32 "
                                                       "with 8 slices and a 30 nm step: ~300 rows/s on 2 cores)")
    multislice_step_nm: float = Field(30.0, gt=0, description="wavelength sub-grid of the layer solve (multislice only)")
    period_um: float | None = Field(None, description="cell period; empty: the simulator resource's")
    height_um: float | None = Field(None, description="pillar height; empty: the simulator resource's")
    depth_um: float | None = Field(None, description="detector depth; empty: the simulator resource's")
    n_substrate: float | None = Field(None, description="substrate index; empty: the simulator resource's")
    cauchy_a: float | None = Field(None, description="pillar index A; empty: the simulator resource's")
    cauchy_b: float | None = Field(None, description="pillar index B; empty: the simulator resource's")


class PretrainedModelConfig(TrainedModelConfig):
    """trained_model's run config (configs/*.yaml) plus the simulator settings of the pretraining rows."""

    simulator: PretrainSimulator = Field(PretrainSimulator(), description="the pretraining rows")


def pretrain_data(sim: PretrainSimulator, resource: SimulatorResource) -> PretrainData:
    """The user's geometry (the resource) with this config's overrides, a coarse multislice by default."""
    geometry = {k: getattr(resource, k) if getattr(sim, k) is None else getattr(sim, k) for k in GEOMETRY}
    physics = PhysicsParams(fidelity=sim.fidelity, multislice_slices=sim.multislice_slices,
                            multislice_grid=sim.multislice_grid, multislice_step_nm=sim.multislice_step_nm, **geometry)
    settings = SimulationSettings(seed=sim.seed, physics=physics, structures=StructureParams(unfinished_fraction=0.0))
    return PretrainData(settings, sim.rows, sim.shards)


@dg.asset(
    group_name="training",
    kinds={"pytorch", "gpu"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Train the surrogate on built-in simulator rows in the user's geometry (a coarse multislice by default: cheap) for "
                "trained_model to fine-tune (training.init_from: pretrained_model); rows and prepared store in "
                "CRRECON_HOME/pretrain/<settings digest>, reused when present.",
)
def pretrained_model(context: dg.AssetExecutionContext, config: PretrainedModelConfig, paths: CrreconPaths,
                     simulator: SimulatorResource, filtering: FilterSettings, device: TrainingDevice):
    with bad_input_fails_step():
        cfg = validate(config.model_dump(exclude={"simulator"}), "run config")
        data = pretrain_data(config.simulator, simulator)
        prepare = PrepareSettings(binning=filtering.binning, n_bins=cfg.data.out_len)
        prepared, reused = prepare_pretraining(data, paths.home, prepare, simulator.device,
                                               LogProgress(context.log, data.rows, "simulate pretraining rows"),
                                               log=context.log.info)
        run_dir = data.folder(paths.home) / "runs" / (context.run.root_run_id or context.run.run_id)
        resume = "auto" if (run_dir / "last.pt").exists() else None
        metrics = train(cfg, prepared, run_dir, device=device.device, resume=resume,
                        on_record=lambda record: report_record(context, record), log=context.log.info)
    return dg.MaterializeResult(metadata={
        **dagster_metadata(final_metadata(metrics, cfg)),
        "pretrain_rows": len(prepared),
        "pretrain_dir": dg.MetadataValue.path(str(data.folder(paths.home))),
        "rows_reused": reused,
        "simulation": dg.MetadataValue.md(settings_table(data.settings)),
    })
