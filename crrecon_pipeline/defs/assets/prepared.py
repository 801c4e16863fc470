"""filtered_bayer and rotated_bayer, one partition per shard: the core's single streaming pass and the 180-degree
turn, each committing an immutable version to the prepared store. The data checks are computed in the same step,
on the staged data, and reported with the materialization they judge (blocking: a failed one stops rotated_bayer
and keeps the shard out of training)."""


import dagster as dg

from crrecon_pipeline.data.prepare import prepare_shard, rotate_version
from crrecon_pipeline.data.rawfiles import open_shard
from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.checks import FILTER_CHECKS, ROTATION_CHECKS, check_results_from
from crrecon_pipeline.defs.handoff import latest_prepared_version, version_metadata
from crrecon_pipeline.defs.lineage import shard_of
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings
from crrecon_pipeline.numbers import percent, rounded
from crrecon_pipeline.plots import markdown_image
from crrecon_pipeline.report.profile import rotation_preview, shard_preview
from crrecon_pipeline.report.tables import channel_table


@dg.asset(
    partitions_def=shards,
    deps=["raw_structures", "raw_spectra"],
    check_specs=FILTER_CHECKS,
    group_name="prepared",
    kinds={"numpy"},
    description="Unfinished (all-zero) and non-finite rows dropped and counted, sign flipped, 301 -> 30 bins, "
                "arranged [[R, G], [G, B]]; structures bit-packed (2 KiB a row). Each materialization is one "
                "immutable version of the shard in CRRECON_HOME/prepared (see `version`).",
)
def filtered_bayer(context: dg.AssetExecutionContext, paths: CrreconPaths, filtering: FilterSettings):
    settings = filtering.prepare_settings()
    with bad_input_fails_step():
        shard = shard_of(context.partition_key)
        raw_dir = paths.raw_path_for(shard)  # a design-made shard has its own folder in CRRECON_HOME
        rows = open_shard(raw_dir, shard, settings.n_wavelengths).rows
        version = prepare_shard(raw_dir, shard, paths.prepared_path(), settings, filtering.check_limits(),
                                progress=LogProgress(context.log, rows, f"filter shard {shard}"))
    record = version.record
    context.log.info(f"shard {shard}: kept {record.kept_rows} of {record.raw_rows} "
                     f"(unfinished {record.dropped_unfinished}, non-finite {record.dropped_nonfinite}) "
                     f"-> {version.version}")
    metadata = {
        "shard": shard,  # the overview shows one partition's materialization: say which
        **record.counts(),
        "kept_fraction_pct": percent(record.kept_fraction),
        "mean_fill": rounded(record.mean_fill),
        "structure_encoding": record.structure_values or "none",
        "binning": settings.binning,
        "spectra_by_channel": dg.MetadataValue.md(channel_table(record)),
        **version_metadata(version),
    }
    if record.kept_rows:
        picture = shard_preview(version, settings)
        metadata["preview"] = dg.MetadataValue.md(markdown_image(picture, "kept structures and spectra"))
    yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version.version))
    yield from check_results_from(version, FILTER_CHECKS)


@dg.asset(
    partitions_def=shards,
    deps=[filtered_bayer],
    check_specs=ROTATION_CHECKS,
    group_name="prepared",
    kinds={"numpy"},
    description="The 180-degree set: each structure turned, its Bayer pixels turned with it (R <-> B, G1 <-> G2); "
                "a new version holding the filtered arrays (hard links) and the turned ones.",
)
def rotated_bayer(context: dg.AssetExecutionContext, paths: CrreconPaths):
    with bad_input_fails_step():
        shard = shard_of(context.partition_key)
        latest = latest_prepared_version(context.instance, "filtered_bayer", context.partition_key)
        if latest is None or latest.version is None:
            raise dg.Failure(description=f"shard {shard}: filtered_bayer has no materialization to turn")
        parent = latest.version
        filtered = PreparedStore(paths.prepared_path()).open(shard, parent)
        version = rotate_version(paths.prepared_path(), filtered)
    context.log.info(f"shard {shard}: {version.rows} rotated rows -> {version.version} (from {parent})")
    metadata = {"shard": shard, "rows": version.rows, "parent_version": parent, **version_metadata(version)}
    if version.rows:
        picture = rotation_preview(version, PrepareSettings(**version.manifest["settings"]).bin_centers_nm())
        metadata["preview"] = dg.MetadataValue.md(markdown_image(picture, "structures and their 180° twins"))
    yield dg.MaterializeResult(metadata=metadata,
                               data_version=dg.DataVersion(version.version))
    yield from check_results_from(version, ROTATION_CHECKS)
