"""new_shard_sensor: registers each new, complete and stable raw shard as a partition and asks once for its
preparation. With the built-in simulator it registers the simulator's initial shards.

design_loop_sensor: drives the active-learning design loop after its first round (design_loop_job): the latest
design_round's shard -> prepare_data_job for that partition -> design_finetune_job (trained_model from the
designing checkpoint, on every shard whose checks passed) -> design_loop_job for the next round, until `rounds`.
Each request has a run key per loop, round and step, so every step runs once; a shard that fails its checks or a
fine-tuning that fails stops the loop (the sensor says why)."""


import json
import time

import dagster as dg

from crrecon_pipeline.data.rawfiles import SPECTRA_RE, STRUCTURE_RE, open_shard
from crrecon_pipeline.defs.assets.design_loop import loop_state
from crrecon_pipeline.defs.assets.training import TrainedModelConfig
from crrecon_pipeline.defs.handoff import latest_materialization, latest_trained_model
from crrecon_pipeline.defs.jobs import design_finetune_job, design_loop_job, prepare_data_job
from crrecon_pipeline.defs.lineage import shard_lineage
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource
from crrecon_pipeline.errors import DataError

STABLE_SECONDS = 10.0


def complete_shards(raw_dir, n_wavelengths: int, now: float, stable_seconds: float = STABLE_SECONDS,
                    problems: list | None = None) -> dict[str, list]:
    """{shard: [sizes, mtimes]} of shard pairs whose headers are valid, whose sizes match their headers (not
    half-written) and which nobody touched for `stable_seconds`. Shards that are bad for good (two spellings of
    one index, a folder named like a shard) are appended to `problems` with the reason, not silently skipped."""
    if not raw_dir.is_dir():
        return {}
    names = {p.name for p in raw_dir.iterdir()}
    keys = ({int(m.group(1)) for n in names if (m := STRUCTURE_RE.match(n))}
            & {int(m.group(1)) for n in names if (m := SPECTRA_RE.match(n))})
    found = {}
    for k in sorted(keys):
        try:
            raw = open_shard(raw_dir, k, n_wavelengths)  # a truncated (still copying) file fails its size check here
        except DataError as exc:
            if problems is not None and "truncated" not in str(exc):
                problems.append(str(exc))
            continue
        stats = [raw.structures.path.stat(), raw.spectra.path.stat()]
        if now - max(s.st_mtime for s in stats) < stable_seconds:
            continue
        found[str(k)] = [[s.st_size for s in stats], [s.st_mtime for s in stats]]
    return found


@dg.sensor(job=prepare_data_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="New shard pair in CRRECON_RAW_DIR (both files complete and stable) -> add partition, "
                       "prepare once.")
def new_shard_sensor(context: dg.SensorEvaluationContext, paths: CrreconPaths, simulator: SimulatorResource,
                     filtering: FilterSettings) -> dg.SensorResult | dg.SkipReason:
    seen = json.loads(context.cursor) if context.cursor else {}
    problems: list[str] = []
    if paths.uses_simulator and not simulator.sensor_simulates:  # a fresh `make dev` starts no simulation by itself
        return dg.SkipReason("no CRRECON_RAW_DIR: the built-in simulator makes data only when asked (make demo; "
                             "or CRRECON_SIM_SENSOR=1 for this sensor to simulate CRRECON_SIM_SHARDS shards)")
    if paths.uses_simulator:
        current = {str(k): "simulated" for k in range(simulator.initial_shards)}
    else:
        current = complete_shards(paths.raw_path(), filtering.n_wavelengths, time.time(), problems=problems)
    for problem in problems:
        context.log.warning(problem)
    changed = [k for k, fingerprint in current.items() if seen.get(k) != fingerprint]
    if not changed:
        trouble = f"; not usable: {' | '.join(problems)}" if problems else ""
        return dg.SkipReason(f"looked at {paths.raw_path()}: {len(current)} complete shard(s) "
                             f"({', '.join(sorted(current, key=int)) or 'none'}), all already requested{trouble}")
    registered = set(context.instance.get_dynamic_partitions(shards.name))
    # first sight of a shard that is already prepared (e.g. by `make demo`): remember it, do not redo it
    prepared = registered & set(context.instance.get_materialized_partitions(dg.AssetKey("rotated_bayer")))
    to_run = [k for k in changed if k in seen or k not in prepared]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"shard-{k}-{json.dumps(current[k])}") for k in to_run],
        dynamic_partitions_requests=[shards.build_add_request([k for k in changed if k not in registered])],
        cursor=json.dumps(seen | {k: current[k] for k in changed}),
    )


@dg.sensor(jobs=[prepare_data_job, design_finetune_job, design_loop_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="The design loop's next step after each design_round: prepare its shard, fine-tune, the next "
                       "round.")
def design_loop_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return next_loop_step(context.instance)


def next_loop_step(instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    """The one step the latest design round waits for, as a run request (or why there is none)."""
    state = loop_state(instance)
    if state is None:
        return dg.SkipReason("no design_round yet (launch design_loop_job to start a loop)")
    loop, r, shard = state["loop_id"], state["round"], str(state["shard"])
    key = f"design-loop-{loop}-round-{r}"
    rotated = latest_materialization(instance, "rotated_bayer", shard)
    if rotated is None or rotated.timestamp < state["timestamp"]:
        return dg.RunRequest(job_name=prepare_data_job.name, partition_key=shard, run_key=f"{key}-prepare")
    version, reason = shard_lineage(instance, shard, augment_180=True)
    if version is None:
        return dg.SkipReason(f"design loop {loop[:8]} stopped at round {r}: shard {shard}: {reason}")
    if r + 1 >= state["rounds"]:
        return dg.SkipReason(f"design loop {loop[:8]} finished: {state['rounds']} round(s)")
    model = latest_trained_model(instance)
    if model is None or model.run_id == state["model_run_id"] or shard not in model.training_set:
        config = dg.RunConfig({"trained_model": TrainedModelConfig(**state["finetune_run_config"])})
        return dg.RunRequest(job_name=design_finetune_job.name, run_config=config, run_key=f"{key}-finetune")
    config = state["loop_config"] | {"round": r + 1}
    return dg.RunRequest(job_name=design_loop_job.name, run_config={"ops": {"design_round": {"config": config}}},
                         run_key=f"design-loop-{loop}-round-{r + 1}-design")
