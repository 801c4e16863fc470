"""trained_model: the GPU-tagged training step. Hyper-parameters come from run config, whose schema is the core
config.RunConfig mirrored as dg.Config classes (defaults: the packaged quick preset), so a preset pastes into the
launchpad. It trains on the shard versions the lineage says passed their checks; defs/launch.py runs the training
(in process, or in torchrun ranks through Dagster Pipes with `device.processes > 1`) and streams its records."""

import typing

import dagster as dg
from pydantic import Field, create_model

from crrecon_pipeline.data.checks import Stage
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.checks import BASELINE_CHECKS, judged
from crrecon_pipeline.defs.handoff import CHECKPOINT_SELECTORS, run_config
from crrecon_pipeline.defs.launch import GPU_TAGS, train_model
from crrecon_pipeline.defs.lineage import training_versions
from crrecon_pipeline.defs.resources import CrreconPaths, ModelChecks, TrainingDevice
from crrecon_pipeline.defs.settings import launchpad_class
from crrecon_pipeline.losses import LOSSES
from crrecon_pipeline.models import MODELS
from crrecon_pipeline.registry import describe
from crrecon_pipeline.train.config import RunConfig, load_config, preset_names, preset_with_overrides
from crrecon_pipeline.train.metrics import MODEL_CHECKS

LAUNCHPAD_PRESET = "quick"

REGISTRY_CHOICES = {
    "model.name": (sorted(MODELS), "registered model (crrecon_pipeline/models); its parameters: model.params"),
    "model.params:description": describe(MODELS, "model"),
    "loss.name": (sorted(LOSSES), "registered loss (crrecon_pipeline/losses); its parameters: loss.params (a "
                                  "loss's parameters do not carry over to another: clear them when changing it)"),
    "loss.params:description": describe(LOSSES, "loss"),
    **CHECKPOINT_SELECTORS,
}
PRESET_FIELD = (typing.Literal[tuple(preset_names())],
                Field(default=LAUNCHPAD_PRESET, description="the packaged preset (crrecon_pipeline/presets) the run "
                      "starts from; every key given beside it overrides the preset's value (sections merge key by "
                      "key; a model.name or loss.name of its own drops the preset's params: only those given apply)"))
TrainedModelConfig = create_model("TrainedModelConfig", preset=PRESET_FIELD, __base__=launchpad_class(
    RunConfig, load_config(LAUNCHPAD_PRESET), "TrainedModelSections", REGISTRY_CHOICES))
TrainedModelConfig.__doc__ = (f"Pick a `preset`, then override any key (configs/*.yaml paste in too); the defaults "
                              f"shown are the {LAUNCHPAD_PRESET} preset (CPU, minutes).")


def run_config_for_preset(name: str) -> dg.RunConfig:
    """A RunConfig for train_job from a packaged preset (used by the schedule and the demo)."""
    return dg.RunConfig({"trained_model": TrainedModelConfig(preset=name, **load_config(name).to_dict())})


def launchpad_values(context: dg.AssetExecutionContext, config: dg.Config, exclude: tuple[str, ...] = ()) -> dict:
    """The run config's plain values: the chosen preset with the keys the run config gives on top. The keys given
    are read from the run's own run config (what the launchpad sent), not from `config`, which Dagster has
    filled with the defaults shown (the quick preset's values) and would hide the chosen preset. `exclude`: sections
    that are not the run config's (pretrained_model's `simulator`)."""
    given = (context.run.run_config.get("ops") or {}).get(context.op_def.name, {}).get("config")
    if not isinstance(given, dict):  # not given as run config: everything in `config` counts as given
        given = config.model_dump()
    return preset_with_overrides(config.preset, {k: v for k, v in given.items() if k not in ("preset", *exclude)})


def training_data(context: dg.AssetExecutionContext, paths: CrreconPaths, augment_180: bool):
    """The shard versions the lineage says passed their checks, loaded exactly; the others named with a reason.
    A version whose own manifest records a failed blocking check (a shard re-prepared into a version committed
    earlier with failed checks) is left out with that reason too, not failing the run."""
    chosen, excluded = training_versions(context.instance, augment_180)
    chosen, refused = _manifest_refusals(paths, chosen)
    excluded = dict(sorted((excluded | refused).items(), key=lambda kv: (len(kv[0]), kv[0])))
    for partition, reason in excluded.items():
        context.log.warning(f"shard {partition} left out of training: {reason}")
    if not chosen:
        detail = "; ".join(f"{k}: {r}" for k, r in excluded.items()) or "no shard partitions registered"
        raise dg.Failure(description=f"nothing to train on: no shard passed its checks ({detail})", allow_retries=False)
    with bad_input_fails_step():
        prepared = load_prepared(paths.prepared_path(), chosen)
    return prepared, excluded


def _manifest_refusals(paths: CrreconPaths, chosen: dict[int, str]) -> tuple[dict[int, str], dict[str, str]]:
    """Split the lineage's choice by what each version's manifest records: ({shard: version}, {partition: reason})."""
    store, kept, refused = PreparedStore(paths.prepared_path()), {}, {}
    for shard, version in chosen.items():
        with bad_input_fails_step():
            reason = store.open(shard, version).refusal()
        if reason:
            refused[str(shard)] = f"the manifest records a failed check: {reason}"
        else:
            kept[shard] = version
    return kept, refused


@dg.asset(
    deps=["rotated_bayer"],
    check_specs=BASELINE_CHECKS,
    group_name="training",
    kinds={"pytorch", "gpu"},
    pool="gpu",
    op_tags=GPU_TAGS,
    retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
    description="Train the surrogate on the shard versions whose checks passed (rotated_bayer, or filtered_bayer "
                "without augment_180); checkpoints, log and plots in `CRRECON_HOME/runs/<run id>`.",
)
def trained_model(context: dg.AssetExecutionContext, config: TrainedModelConfig, paths: CrreconPaths,
                  device: TrainingDevice, model_checks: ModelChecks):
    with bad_input_fails_step():
        cfg = run_config(context.instance, launchpad_values(context, config), paths.runs_path())
    prepared, excluded = training_data(context, paths, cfg.data.augment_180)
    # A retry or a re-execution of a failed run keeps the root run's folder and resumes from its last checkpoint.
    run_dir = paths.runs_path() / (context.run.root_run_id or context.run.run_id)
    metadata, metrics = train_model(context, cfg, prepared, paths.prepared_path(), run_dir, device)
    yield dg.MaterializeResult(metadata={**metadata, "training_set": dg.MetadataValue.json(prepared.training_set()),
                                         "excluded_shards": dg.MetadataValue.json(excluded)})
    yield from judged(MODEL_CHECKS, Stage.MODEL, metrics, model_checks.limits())
