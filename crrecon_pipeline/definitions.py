"""The crrecon_pipeline code location: assets, checks, jobs, schedule, sensor and resources. Every environment
variable it reads is validated by name (settings.py): a bad value stops the load with one line naming it."""

import os

import dagster as dg

from crrecon_pipeline.defs.assets.analysis import dataset_profile, run_comparison, training_log_analysis
from crrecon_pipeline.defs.assets.design import designed_structures
from crrecon_pipeline.defs.assets.design_loop import design_round
from crrecon_pipeline.defs.assets.prepared import filtered_bayer, rotated_bayer
from crrecon_pipeline.defs.assets.pretrain import pretrained_model
from crrecon_pipeline.defs.assets.raw import raw_shard
from crrecon_pipeline.defs.assets.training import trained_model
from crrecon_pipeline.defs.jobs import (
    design_finetune_job,
    design_job,
    design_loop_job,
    prepare_data_job,
    pretrain_job,
    train_job,
)
from crrecon_pipeline.defs.resources import (
    CrreconPaths,
    FilterSettings,
    ModelChecks,
    SimulatorResource,
    TrainingDevice,
    default_home,
)
from crrecon_pipeline.defs.schedules import weekly_retraining
from crrecon_pipeline.defs.sensors import design_loop_sensor, new_shard_sensor
from crrecon_pipeline.settings import EXECUTORS, env_choice, env_device, env_flag, env_integer


def _executor():
    """CRRECON_EXECUTOR=k8s runs every step in its own pod (pip install crrecon_pipeline[k8s]); trained_model's
    op tags then request a GPU for its pod. Unset or `multiprocess`: Dagster's default multiprocess executor;
    anything else is refused naming the variable."""
    if env_choice("CRRECON_EXECUTOR", "", EXECUTORS) == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None


def _env(name: str, default: str):
    """dg.EnvVar when the variable is set (the UI shows where the value comes from), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


defs = dg.Definitions(
    assets=[raw_shard, filtered_bayer, rotated_bayer, pretrained_model, trained_model, training_log_analysis,
            run_comparison, dataset_profile, designed_structures, design_round],
    jobs=[prepare_data_job, pretrain_job, train_job, design_job, design_loop_job, design_finetune_job],
    schedules=[weekly_retraining],
    sensors=[new_shard_sensor, design_loop_sensor],
    executor=_executor(),
    resources={
        "paths": CrreconPaths(home=_env("CRRECON_HOME", default_home()), raw_dir=_env("CRRECON_RAW_DIR", "")),
        "simulator": SimulatorResource(rows_per_shard=env_integer("CRRECON_SIM_ROWS_PER_SHARD", 2500, 1, 10**8),
                                       initial_shards=env_integer("CRRECON_SIM_SHARDS", 2, 0, 10**6),
                                       sensor_simulates=env_flag("CRRECON_SIM_SENSOR")),
        "filtering": FilterSettings(),
        "device": TrainingDevice(device=_env("CRRECON_DEVICE", env_device("CRRECON_DEVICE", "auto"))),
        "model_checks": ModelChecks(),
    },
)
