"""filtered_bayer and rotated_bayer, one partition per shard: the core's streaming filter and rotation."""


import dagster as dg
import numpy as np

from ...data import filter_shard, load_prepared, rotate_shard, unpack_structures
from ...plots import markdown_image, plot_predictions
from ...rawfiles import open_shard
from ..partitions import shards
from ..progress import LogProgress
from ..resources import CrreconPaths, FilterSettings
from .common import bad_input_fails_step


@dg.asset(
    partitions_def=shards,
    deps=["raw_structures", "raw_spectra"],
    group_name="prepared",
    kinds={"numpy"},
    description="Unfinished (all-zero) and non-finite rows dropped and counted, sign flipped, 301 -> 30 bins, "
                "arranged [[R, G], [G, B]]; structures bit-packed (2 KiB a row).",
)
def filtered_bayer(context: dg.AssetExecutionContext, paths: CrreconPaths, filtering: FilterSettings) -> dg.MaterializeResult:
    shard = int(context.partition_key)
    out = paths.prepared_path()
    settings = filtering.prepare_settings()
    with bad_input_fails_step():
        rows = open_shard(paths.raw_path(), shard, settings.n_wavelengths).rows
        record = filter_shard(paths.raw_path(), shard, out, settings, progress=LogProgress(context.log, rows, f"filter shard {shard}"))
    context.log.info(f"shard {shard}: kept {record['kept_rows']} of {record['raw_rows']} "
                     f"(unfinished {record['dropped_unfinished']}, non-finite {record['dropped_nonfinite']})")
    metadata = {
        "raw_rows": record["raw_rows"],
        "kept_rows": record["kept_rows"],
        "dropped_unfinished": record["dropped_unfinished"],
        "dropped_nonfinite": record["dropped_nonfinite"],
        "kept_fraction": round(record["kept_fraction"], 4),
        "mean_fill": round(record["mean_fill"], 4),
        "structure_encoding": record["structure_values"] or "none",
        "binning": settings.binning,
        "bayer_mean_rgb": str([round(x, 4) for x in record["bayer_mean"]]),
        "bayer_range_rgb": str([[round(a, 4), round(b, 4)] for a, b in zip(record["bayer_min"], record["bayer_max"])]),
        "path": dg.MetadataValue.path(str(out / f"bayer_{shard}.npy")),
    }
    if record["kept_rows"]:
        preview = out / f"preview_{shard}.png"
        bayer = np.load(out / f"bayer_{shard}.npy", mmap_mode="r")
        packed = np.load(out / f"structures_{shard}.npy", mmap_mode="r")
        pick = np.linspace(0, record["kept_rows"] - 1, min(3, record["kept_rows"])).astype(int)
        plot_predictions(unpack_structures(np.asarray(packed[pick])), np.asarray(bayer[pick]), None,
                         settings.bin_centers_nm(), preview, title=f"Shard {shard}: kept structures and their Bayer spectra")
        metadata["preview"] = dg.MetadataValue.md(markdown_image(preview, "kept structures and spectra"))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=shards,
    deps=[filtered_bayer],
    group_name="prepared",
    kinds={"numpy"},
    description="The 180-degree set: each structure turned, its Bayer pixels turned with it (R <-> B, G1 <-> G2).",
)
def rotated_bayer(context: dg.AssetExecutionContext, paths: CrreconPaths) -> dg.MaterializeResult:
    shard = int(context.partition_key)
    with bad_input_fails_step():
        record = rotate_shard(paths.prepared_path(), shard)
    context.log.info(f"shard {shard}: {record['rows']} rotated rows")
    return dg.MaterializeResult(metadata={"rows": record["rows"],
                                          "path": dg.MetadataValue.path(str(paths.prepared_path() / f"bayer_rotated_{shard}.npy"))})


def prepared_or_failure(paths: CrreconPaths):
    with bad_input_fails_step():
        return load_prepared(paths.prepared_path())
