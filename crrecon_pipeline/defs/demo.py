"""`make demo`: materialize the whole graph in the project's Dagster instance ($DAGSTER_HOME), so that
`make dev` shows every run: one data run per shard, then training (configs/quick.yaml) and the analyses."""

import sys
import time

import dagster as dg

from crrecon_pipeline.data.rawfiles import discover_shards
from crrecon_pipeline.definitions import defs
from crrecon_pipeline.defs.assets.training import run_config_for_preset
from crrecon_pipeline.defs.partitions import shards


def main(preset: str = "quick") -> int:
    instance = dg.DagsterInstance.get()
    paths = defs.resources["paths"]
    home = paths.home.get_value() if isinstance(paths.home, dg.EnvVar) else paths.home
    raw = paths.raw_dir.get_value() if isinstance(paths.raw_dir, dg.EnvVar) else paths.raw_dir
    keys = [str(k) for k in (discover_shards(raw) if raw else range(defs.resources["simulator"].initial_shards))]
    print(f"data root {home}; raw shards from {raw or 'the built-in simulator'}: {keys}", flush=True)
    instance.add_dynamic_partitions(shards.name,
                                    [k for k in keys if not instance.has_dynamic_partition(shards.name, k)])

    t0 = time.time()
    prepare = defs.resolve_job_def("prepare_data_job")
    for k in keys:
        result = prepare.execute_in_process(partition_key=k, instance=instance, raise_on_error=False)
        if not result.success:
            print(f"shard {k}: data run failed (see `make dev`, run {result.run_id})", file=sys.stderr)
            return 1
        meta = result.asset_materializations_for_node("filtered_bayer")[0].metadata
        print(f"shard {k}: kept {meta['kept_rows'].value} of {meta['raw_rows'].value} rows "
              f"({meta['dropped_unfinished'].value} unfinished, {meta['dropped_nonfinite'].value} non-finite)",
              flush=True)
    print(f"data ready in {time.time() - t0:.0f} s; training {preset}.yaml ...", flush=True)

    result = defs.resolve_job_def("train_job").execute_in_process(
        instance=instance, run_config=run_config_for_preset(preset), raise_on_error=False)
    if not result.success:
        print(f"training run failed (see `make dev`, run {result.run_id})", file=sys.stderr)
        return 1
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    print(f"trained_model: val MSE {meta['val_mse'].value:.3g} vs baseline {meta['baseline_val_mse'].value:.3g} "
          f"({meta['val_mse_pct_of_baseline'].value:.3g} % of the baseline), Pearson {meta['val_pearson'].value:.4f}; "
          f"checkpoint {meta['checkpoint'].value}")
    diag = result.asset_materializations_for_node("training_log_analysis")[0].metadata["diagnosis"].value
    print(f"analysis: {diag}. Total {time.time() - t0:.0f} s. Now `make dev` and open http://127.0.0.1:3000")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
