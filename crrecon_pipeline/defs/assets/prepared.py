"""filtered_bayer and rotated_bayer, one partition per shard: the core's single streaming pass and the 180-degree
turn, each committing an immutable version to the prepared store. The data checks are computed in the same step,
on the staged data, and reported with the materialization they judge (blocking: a failed one stops rotated_bayer
and keeps the shard out of training)."""


import dagster as dg
import numpy as np

from crrecon_pipeline.data.prepare import prepare_shard, rotate_version
from crrecon_pipeline.data.rawfiles import open_shard
from crrecon_pipeline.data.store import PreparedStore, ShardVersion
from crrecon_pipeline.data.transforms import PrepareSettings, unpack_structures
from crrecon_pipeline.defs.assets.common import bad_input_fails_step, check_results_from, version_metadata
from crrecon_pipeline.defs.lineage import latest_version, shard_of
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings
from crrecon_pipeline.numbers import fmt, percent, rounded
from crrecon_pipeline.plots import markdown_image, plot_predictions

FILTER_CHECKS = [
    dg.AssetCheckSpec("check_row_counts", asset="filtered_bayer", partitions_def=shards, blocking=True,
                      description="kept + dropped_unfinished + dropped_nonfinite = raw_rows"),
    dg.AssetCheckSpec("check_no_bad_rows", asset="filtered_bayer", partitions_def=shards, blocking=True,
                      description="no all-zero, non-finite or negative row is left in the written Bayer file"),
    dg.AssetCheckSpec("check_greens_equal", asset="filtered_bayer", partitions_def=shards, blocking=True,
                      description="the two green pixels agree (diagonal-symmetric structures)"),
    dg.AssetCheckSpec("check_kept_fraction", asset="filtered_bayer", partitions_def=shards, blocking=True,
                      description="the kept fraction lies in FilterSettings [kept_fraction_min, kept_fraction_max]"),
]
ROTATION_CHECKS = [
    dg.AssetCheckSpec("check_rotation_exact", asset="rotated_bayer", partitions_def=shards, blocking=True,
                      description="turning the rotated set once more gives back the originals exactly"),
]


def channel_table(record: dict) -> str:
    """The kept spectra per raw channel (power fraction, ~4 significant figures) as a markdown table."""
    rows = "".join(f"| {name} | {fmt(rounded(m))} | {fmt(rounded(lo))} | {fmt(rounded(hi))} |\n" for name, m, lo, hi
                   in zip("RGB", record["bayer_mean"], record["bayer_min"], record["bayer_max"]))
    return "| channel | mean | min | max |\n|---|---|---|---|\n" + rows


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
        rows = open_shard(paths.raw_path(), shard, settings.n_wavelengths).rows
        version = prepare_shard(paths.raw_path(), shard, paths.prepared_path(), settings, filtering.check_limits(),
                                progress=LogProgress(context.log, rows, f"filter shard {shard}"))
    record = version.manifest["record"]
    context.log.info(f"shard {shard}: kept {record['kept_rows']} of {record['raw_rows']} "
                     f"(unfinished {record['dropped_unfinished']}, non-finite {record['dropped_nonfinite']}) -> {version.version}")
    metadata = {
        "shard": shard,  # the overview shows one partition's materialization: say which
        "raw_rows": record["raw_rows"],
        "kept_rows": record["kept_rows"],
        "dropped_unfinished": record["dropped_unfinished"],
        "dropped_nonfinite": record["dropped_nonfinite"],
        "kept_fraction_pct": percent(record["kept_fraction"]),
        "mean_fill": rounded(record["mean_fill"]),
        "structure_encoding": record["structure_values"] or "none",
        "binning": settings.binning,
        "spectra_by_channel": dg.MetadataValue.md(channel_table(record)),
        **version_metadata(version),
    }
    if record["kept_rows"]:
        metadata["preview"] = dg.MetadataValue.md(markdown_image(_preview(version, settings), "kept structures and spectra"))
    yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version.version))
    yield from check_results_from(version, FILTER_CHECKS)


def _preview(version: ShardVersion, settings: PrepareSettings):
    path = version.path.parent / f"preview_{version.version}.png"  # beside the version: the version stays as committed
    if not path.exists():
        bayer = np.load(version.file("bayer.npy"), mmap_mode="r")
        packed = np.load(version.file("structures.npy"), mmap_mode="r")
        pick = np.linspace(0, version.rows - 1, min(3, version.rows)).astype(int)
        plot_predictions(unpack_structures(np.asarray(packed[pick])), np.asarray(bayer[pick]), None,
                         settings.bin_centers_nm(), path,
                         title=f"Shard {version.shard}: kept structures and their Bayer spectra")
    return path


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
        parent = latest_version(context.instance, "filtered_bayer", context.partition_key)
        if parent is None:
            raise dg.Failure(description=f"shard {shard}: filtered_bayer has no materialization to turn")
        filtered = PreparedStore(paths.prepared_path()).open(shard, parent)
        version = rotate_version(paths.prepared_path(), filtered)
    context.log.info(f"shard {shard}: {version.rows} rotated rows -> {version.version} (from {parent})")
    yield dg.MaterializeResult(metadata={"shard": shard, "rows": version.rows, "parent_version": parent, **version_metadata(version)},
                               data_version=dg.DataVersion(version.version))
    yield from check_results_from(version, ROTATION_CHECKS)
