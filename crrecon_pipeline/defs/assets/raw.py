"""raw_structures + raw_spectra: one shard's two files in the research code's raw format, from CRRECON_RAW_DIR or the
built-in simulator. The step reads both files once: content digests (BLAKE3, hashed while scanning; the data
version), value ranges, and the raw-data checks (the same function `crrecon preprocess` applies)."""


import json

import dagster as dg

from crrecon_pipeline.data.checks import raw_checks, scan_raw_shard
from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.data.rawfiles import shard_pair
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.checks import RAW_CHECKS, check_result
from crrecon_pipeline.defs.lineage import shard_of
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource
from crrecon_pipeline.numbers import rounded, rounded_all, shape_text
from crrecon_pipeline.physics.shards import write_shard
from crrecon_pipeline.report.tables import settings_table


@dg.multi_asset(
    specs=[
        dg.AssetSpec("raw_structures", group_name="raw", kinds={"numpy"},
                     description="`binary_dataset_128_<k>.npy`: (N, 1, 128, 128) uint8 structures of one shard "
                                 "(partition = shard index k)"),
        dg.AssetSpec("raw_spectra", group_name="raw", kinds={"numpy"},
                     description="`spectra_latest_<k>.npy`: (N, 3, 301) float32 R, G, B spectra of one shard, "
                                 "stored negative"),
    ],
    partitions_def=shards,
    check_specs=RAW_CHECKS,
)
def raw_shard(context: dg.AssetExecutionContext, paths: CrreconPaths, simulator: SimulatorResource,
              filtering: FilterSettings):
    with bad_input_fails_step():
        shard = shard_of(context.partition_key)
    design_made = paths.design_made(shard)
    raw_dir = paths.raw_path_for(shard)
    sim_meta = {}
    if design_made is not None:  # verified designs of a design_round: read, never simulated over
        if not paths.uses_simulator and any(p.exists() for p in shard_pair(paths.raw_path(), shard)):
            raise dg.Failure(description=f"shard {shard}: in {paths.raw_path()} and design-made in {raw_dir}; "
                                         "rename the CRRECON_RAW_DIR shard", allow_retries=False)
        context.log.info(f"shard {shard}: design-made by {design_made['checkpoint']} (design_round run "
                         f"{design_made['design_run_id'][:8]}, round {design_made['round']})")
        sim_meta = {"source": "design-made", "designed_by": dg.MetadataValue.path(design_made["checkpoint"]),
                    "design_made": dg.MetadataValue.json(design_made)}
    elif paths.uses_simulator:
        start, stop = shard * simulator.rows_per_shard, (shard + 1) * simulator.rows_per_shard
        with bad_input_fails_step():
            settings = simulator.settings()
        context.log.info(f"simulating shard {shard}: rows {start}..{stop - 1} of seed {settings.seed} into {raw_dir}")
        write_shard(raw_dir, shard, start, stop, settings, device=simulator.device,
                    progress=LogProgress(context.log, stop - start, f"simulate shard {shard}"))
        # as `crrecon simulate` does: inverse design re-simulates its designs with exactly these settings
        write_text_atomic(raw_dir / "simulation.json", json.dumps(settings.to_dict(), indent=2) + "\n")
        sim_meta = {"source": "built-in simulator", "simulator_fidelity": settings.physics.fidelity,
                    "simulator": dg.MetadataValue.md(settings_table(settings)),
                    "simulation_settings": dg.MetadataValue.json(
                        rounded_all(settings.to_dict() | {"rows": {"start": start, "stop": stop}}))}
    else:
        sim_meta = {"source": "CRRECON_RAW_DIR"}
    with bad_input_fails_step():
        scan = scan_raw_shard(raw_dir, shard, filtering.n_wavelengths)
    context.log.info(f"shard {shard}: {scan.rows} rows, {scan.unfinished_rows} unfinished, "
                     f"{scan.nonfinite_rows} non-finite")
    common = {"rows": scan.rows, **sim_meta}
    yield dg.MaterializeResult(asset_key="raw_structures", data_version=dg.DataVersion(scan.structures_blake3),
                               metadata=common | {
        "path": dg.MetadataValue.path(scan.structures_path),
        "digest": scan.structures_blake3,
        "digest_algorithm": "blake3",
        "shape": shape_text(scan.structures_shape),
        "dtype": scan.structures_dtype,
        "encoding": scan.structure_encoding,
    })
    yield dg.MaterializeResult(asset_key="raw_spectra", data_version=dg.DataVersion(scan.spectra_blake3),
                               metadata=common | {
        "path": dg.MetadataValue.path(scan.spectra_path),
        "digest": scan.spectra_blake3,
        "digest_algorithm": "blake3",
        "shape": shape_text(scan.spectra_shape),
        "dtype": scan.spectra_dtype,
        "spectra_min": rounded(scan.spectra_min),
        "spectra_max": rounded(scan.spectra_max),
        "unfinished_rows": scan.unfinished_rows,
        "nonfinite_rows": scan.nonfinite_rows,
    })
    for name, result in raw_checks(scan, filtering.check_limits()).items():
        yield check_result(name, result)
    context.log.debug(json.dumps(scan.to_json()))
