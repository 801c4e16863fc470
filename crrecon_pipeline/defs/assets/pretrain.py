"""pretrained_model: a surrogate trained on built-in simulator rows in the user's geometry, for trained_model to
start from (`training.init_from: pretrained_model`) when the user's own (rigorous) set is small. Its run config is
trained_model's schema plus a `simulator` section; geometry left empty there comes from the SimulatorResource (the
user's geometry). The rows live in CRRECON_HOME/pretrain/<settings digest>/ and are reused by later runs; the
training runs as trained_model's does (defs/launch.py: in process, or in torchrun ranks with `device.processes > 1`)."""

import dagster as dg
from pydantic import Field

from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.assets.training import TrainedModelConfig, launchpad_values
from crrecon_pipeline.defs.launch import GPU_TAGS, train_model
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource, TrainingDevice
from crrecon_pipeline.defs.settings import build, generated
from crrecon_pipeline.physics.params import GEOMETRY, PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings
from crrecon_pipeline.physics.structures import StructureParams
from crrecon_pipeline.report.tables import settings_table
from crrecon_pipeline.settings import pydantic_fields
from crrecon_pipeline.train.config import validate
from crrecon_pipeline.train.pretrain import PRETRAIN_PHYSICS, PRETRAIN_SEED, PretrainData, prepare_pretraining

PretrainSimulatorFields = generated(
    "PretrainSimulatorFields", dg.Config,
    pydantic_fields(PretrainData, ["rows", "shards"]),
    pydantic_fields(SimulationSettings, ["seed"], defaults={"seed": PRETRAIN_SEED}),
    pydantic_fields(PhysicsParams, PRETRAIN_PHYSICS, defaults=PRETRAIN_PHYSICS),
    pydantic_fields(PhysicsParams, GEOMETRY, optional=True, note="; empty: the simulator resource's"))


class PretrainSimulator(PretrainSimulatorFields):
    """The pretraining rows: how many, which fidelity; geometry fields left empty take the SimulatorResource's."""


class PretrainedModelConfig(TrainedModelConfig):
    """trained_model's run config (configs/*.yaml) plus the simulator settings of the pretraining rows."""

    simulator: PretrainSimulator = Field(PretrainSimulator(), description="the pretraining rows")


def pretrain_data(sim: PretrainSimulator, resource: SimulatorResource) -> PretrainData:
    """The user's geometry (the resource) with this config's overrides, a coarse multislice by default."""
    geometry = {k: getattr(resource, k) if getattr(sim, k) is None else getattr(sim, k) for k in GEOMETRY}
    settings = SimulationSettings(seed=sim.seed, physics=build(PhysicsParams, sim, **geometry),
                                  structures=StructureParams(unfinished_fraction=0.0))
    return PretrainData(settings=settings, rows=sim.rows, shards=sim.shards)


@dg.asset(
    group_name="training",
    kinds={"pytorch", "gpu"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Train the surrogate on built-in simulator rows in the user's geometry (a coarse multislice by "
                "default: cheap) for trained_model to fine-tune (training.init_from: pretrained_model); rows and "
                "prepared store in CRRECON_HOME/pretrain/<settings digest>, reused when present.",
)
def pretrained_model(context: dg.AssetExecutionContext, config: PretrainedModelConfig, paths: CrreconPaths,
                     simulator: SimulatorResource, filtering: FilterSettings, device: TrainingDevice):
    with bad_input_fails_step():
        cfg = validate(launchpad_values(context, config, exclude=("simulator",)), "run config")
        data = pretrain_data(config.simulator, simulator)
        prepare = PrepareSettings(binning=filtering.binning, n_bins=cfg.data.out_len)
        prepared, reused = prepare_pretraining(data, paths.home, prepare, simulator.device,
                                               LogProgress(context.log, data.rows, "simulate pretraining rows"),
                                               log=context.log.info)
    folder = data.folder(paths.home)
    run_dir = folder / "runs" / (context.run.root_run_id or context.run.run_id)
    metadata, _ = train_model(context, cfg, prepared, folder / "prepared", run_dir, device)
    return dg.MaterializeResult(metadata={
        **metadata,
        "pretrain_rows": len(prepared),
        "pretrain_dir": dg.MetadataValue.path(str(folder)),
        "rows_reused": reused,
        "simulation": dg.MetadataValue.md(settings_table(data.settings)),
    })
