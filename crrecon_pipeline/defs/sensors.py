"""new_shard_sensor: registers each new, complete and stable raw shard as a partition and asks once for its
preparation. With the built-in simulator it registers the simulator's initial shards."""


import json
import time

import dagster as dg

from crrecon_pipeline.data.rawfiles import SPECTRA_RE, STRUCTURE_RE, open_shard
from crrecon_pipeline.defs.jobs import prepare_data_job
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
