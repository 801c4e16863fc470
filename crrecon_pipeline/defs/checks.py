"""Asset checks on the filtering, per shard. The ones that protect training are blocking: when they fail, the
rotated set (and so training) is not built from that shard in the same run."""


import dagster as dg

from .. import quality
from .assets.common import check_result
from .assets.prepared import filtered_bayer, rotated_bayer
from .partitions import shards
from .resources import CrreconPaths, FilterSettings


def _record(context, paths: CrreconPaths) -> dict:
    return quality.shard_record(paths.prepared_path(), int(context.partition_key))


@dg.asset_check(asset=filtered_bayer, partitions_def=shards, blocking=True,
                description="kept + dropped_unfinished + dropped_nonfinite = raw_rows")
def check_row_counts(context: dg.AssetCheckExecutionContext, paths: CrreconPaths) -> dg.AssetCheckResult:
    record = _record(context, paths)
    return check_result("filtered_bayer", "check_row_counts", quality.check_counts_consistent(record))


@dg.asset_check(asset=filtered_bayer, partitions_def=shards, blocking=True,
                description="no all-zero, non-finite or negative row is left in the written Bayer file")
def check_no_bad_rows(context: dg.AssetCheckExecutionContext, paths: CrreconPaths) -> dg.AssetCheckResult:
    shard = int(context.partition_key)
    return check_result("filtered_bayer", "check_no_bad_rows", quality.check_no_bad_rows_left(paths.prepared_path(), shard))


@dg.asset_check(asset=filtered_bayer, partitions_def=shards, blocking=True,
                description="the two green pixels agree (diagonal-symmetric structures)")
def check_greens_equal(context: dg.AssetCheckExecutionContext, paths: CrreconPaths) -> dg.AssetCheckResult:
    record = _record(context, paths)
    return check_result("filtered_bayer", "check_greens_equal", quality.check_greens_equal(record))


@dg.asset_check(asset=filtered_bayer, partitions_def=shards, blocking=True,
                description="the kept fraction lies in FilterSettings [kept_fraction_min, kept_fraction_max]")
def check_kept_fraction(context: dg.AssetCheckExecutionContext, paths: CrreconPaths,
                        filtering: FilterSettings) -> dg.AssetCheckResult:
    record = _record(context, paths)
    outcome = quality.check_kept_fraction(record, filtering.kept_fraction_min, filtering.kept_fraction_max)
    return check_result("filtered_bayer", "check_kept_fraction", outcome)


@dg.asset_check(asset=rotated_bayer, partitions_def=shards, blocking=True,
                description="turning the rotated set once more gives back the originals exactly")
def check_rotation_exact(context: dg.AssetCheckExecutionContext, paths: CrreconPaths) -> dg.AssetCheckResult:
    shard = int(context.partition_key)
    return check_result("rotated_bayer", "check_rotation_exact", quality.check_rotation_exact(paths.prepared_path(), shard))


data_checks = [check_row_counts, check_no_bad_rows, check_greens_equal, check_kept_fraction, check_rotation_exact]
