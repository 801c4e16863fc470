"""Raw shards -> filtered Bayer arrays -> the 180-degree rotated set, each committed as an immutable version of
the prepared store (data/store.py).

One streaming pass per shard reads both raw files once, in bounded chunks, and does everything in it: the raw
checks' scan, the sha256 of every byte (on a second thread), the filter (unfinished and non-finite rows dropped and
counted apart), the sign flip, 301 -> n_bins (PrepareSettings.n_bins), the [[R, G], [G, B]] layout and bit
packing (2 KiB a row instead of 16 KiB). The data checks (checks.py) run on the staged result and are recorded in
the version's manifest; LATEST moves only to a version whose blocking checks passed.

A version folder holds
    structures.npy (M, 2048) uint8 packed   bayer.npy (M, 2, 2, n_bins) float32   rows.npy (M,) int64 raw row index
    structures_rotated.npy  bayer_rotated.npy          (rotated versions: the filtered files hard-linked + the turn)
    manifest.json       sources (names, sizes, sha256), settings, counts, statistics, checks, files and sizes"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from crrecon_pipeline.data.checks import (
    CheckLimits,
    RawScan,
    ScanResult,
    checks_json,
    failed_blocking,
    filter_checks,
    manifest_checks,
    raw_checks,
    rotation_checks,
)
from crrecon_pipeline.data.npyio import AtomicNpyWriter, iter_chunks, read_header
from crrecon_pipeline.data.rawfiles import ShardReader, discover_shards, open_shard
from crrecon_pipeline.data.shardrecord import COUNTS, ShardRecord
from crrecon_pipeline.data.store import PreparedStore, ShardVersion, version_id
from crrecon_pipeline.data.transforms import (
    PrepareSettings,
    bin_spectra,
    count_set_bits,
    encoding_from_scan,
    pack_and_scan,
    rotate_bayer,
    rotate_packed,
    row_status,
    to_bayer,
)
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.grid import N_PIX, PACKED_BYTES
from crrecon_pipeline.settings import pause_point

ProgressFn = Callable[[int], None]


FILTERED_FILES = ["structures.npy", "bayer.npy", "rows.npy"]


ROTATED_FILES = ["structures_rotated.npy", "bayer_rotated.npy"]


@dataclass
class ShardStats:
    shard: int
    raw_rows: int = 0
    kept_rows: int = 0
    dropped_unfinished: int = 0
    dropped_nonfinite: int = 0
    structure_values: str | None = None
    fill_sum: float = 0.0
    bayer_min: list = field(default_factory=lambda: [float("inf")] * 3)
    bayer_max: list = field(default_factory=lambda: [float("-inf")] * 3)
    bayer_sum: list = field(default_factory=lambda: [0.0] * 3)
    max_green_mismatch: float = 0.0
    negative_after_flip: int = 0
    n_bins: int = 30

    def summary(self) -> ShardRecord:
        kept = max(self.kept_rows, 1)
        sums = {"fill_sum", "bayer_sum", "n_bins"}
        return ShardRecord(**{k: v for k, v in asdict(self).items() if k not in sums},
                           kept_fraction=self.kept_rows / max(self.raw_rows, 1), mean_fill=self.fill_sum / kept,
                           bayer_mean=[s / (kept * self.n_bins) for s in self.bayer_sum])


def _check_binary(chunk: np.ndarray, path: Path, first_row: int, stats: ShardStats,
                  encoding: str | None) -> str | None:
    """Structures must be {0,1} or {0,255}, one encoding per shard; returns the chunk's encoding (as
    structure_encoding gives it)."""
    if encoding == "non-binary":
        bad = np.argwhere((chunk != 0) & (chunk != 1) & (chunk != 255))[0]
        raise DataError(f"{path}: non-binary structures (value {chunk[tuple(bad)]} at row {first_row + bad[0]})")
    if encoding == "mixed" or (encoding and stats.structure_values and stats.structure_values != encoding):
        raise DataError(f"{path}: structures mix 0/1 and 0/255 encodings "
                        f"(rows {first_row}..{first_row + len(chunk) - 1})")
    stats.structure_values = encoding or stats.structure_values
    return encoding


def _filter_into(raw, staging: Path, settings: PrepareSettings,
                 progress: ProgressFn | None) -> tuple[ShardRecord, ScanResult, list]:
    """The single pass over one raw shard: (shard record, raw scan, sources) and the three arrays in `staging`.
    Every structure row is packed and scanned on the structures' hashing thread, a cache-sized piece at a time
    right after its digest update (cheaper than gathering the kept rows first), then the kept rows are taken."""
    stats = ShardStats(shard=raw.index, raw_rows=raw.rows, n_bins=settings.n_bins)
    scan = RawScan(raw)
    reader = ShardReader(raw, settings.chunk_rows)
    with AtomicNpyWriter(staging / "structures.npy", (None, PACKED_BYTES), np.uint8) as w_struct, \
            AtomicNpyWriter(staging / "bayer.npy", (None, 2, 2, settings.n_bins), np.float32) as w_bayer, \
            AtomicNpyWriter(staging / "rows.npy", (None,), np.int64) as w_rows:
        for first, st, sp, pieces in reader.chunks_with(pack_and_scan):
            encoding = _check_binary(st, raw.structures.path, first, stats,
                                     encoding_from_scan(st, [top for _, top in pieces]))
            finite, unfinished = row_status(sp)
            scan.update(st, sp, finite, unfinished, encoding)
            keep = finite & ~unfinished
            stats.dropped_nonfinite += int(len(keep) - np.count_nonzero(finite))
            stats.dropped_unfinished += int(np.count_nonzero(unfinished))
            idx = np.nonzero(keep)[0]
            if len(idx):
                packed = np.concatenate([p for p, _ in pieces])[idx]
                bayer = to_bayer(-bin_spectra(sp[idx], settings))
                w_struct.write(packed)
                w_bayer.write(bayer)
                w_rows.write(first + idx)
                stats.kept_rows += len(idx)
                stats.fill_sum += count_set_bits(packed) / (N_PIX * N_PIX)
                ch = np.stack([bayer[:, 0, 0], bayer[:, 0, 1], bayer[:, 1, 1]], 1)  # (n, 3, bins)
                stats.bayer_min = np.minimum(stats.bayer_min, ch.min(axis=(0, 2))).tolist()
                stats.bayer_max = np.maximum(stats.bayer_max, ch.max(axis=(0, 2))).tolist()
                stats.bayer_sum = (np.asarray(stats.bayer_sum) + ch.sum(axis=(0, 2), dtype=np.float64)).tolist()
                stats.max_green_mismatch = max(stats.max_green_mismatch,
                                               float(np.abs(bayer[:, 0, 1] - bayer[:, 1, 0]).max()))
                stats.negative_after_flip += int(np.count_nonzero(bayer < 0))
            if progress:
                progress(len(st))
    return stats.summary(), scan.result(reader.sha256), reader.sources()


def _store(store_root: str | Path | PreparedStore) -> PreparedStore:
    return store_root if isinstance(store_root, PreparedStore) else PreparedStore(store_root)


def prepare_shard(raw_dir: str | Path, shard: int, store_root: str | Path | PreparedStore,
                  settings: PrepareSettings | None = None, limits: CheckLimits | None = None,
                  progress: ProgressFn | None = None, make_latest: bool = True,
                  started_ns: int | None = None) -> ShardVersion:
    """Filter one raw shard into a new committed version (or the identical one already there). The version's
    manifest records the raw and filter checks, and when the preparation started (`started_ns`, default now:
    LATEST never moves back to a preparation that started earlier); LATEST moves to it only when every blocking
    check passed."""
    settings, limits = settings or PrepareSettings(), limits or CheckLimits()
    started_ns = time.time_ns() if started_ns is None else started_ns
    store = _store(store_root)
    raw = open_shard(raw_dir, shard, settings.n_wavelengths)
    with store.stage("filtered") as staging:
        record, scan, sources = _filter_into(raw, staging, settings, progress)
        raw = raw_checks(scan, limits)
        checks = raw | filter_checks(record, staging, limits, raw)
        identity = {"kind": "filtered", "shard": shard, "settings": settings.identity(),
                    "sources": [{k: s[k] for k in ("name", "size", "sha256")} for s in sources]}
        manifest = {"kind": "filtered", "parent": None, "sources": sources, "settings": settings.model_dump(),
                    "rows": record.kept_rows, "record": record.to_json(), "raw_scan": scan.to_json(),
                    "checks": checks_json(checks),
                    "started_ns": started_ns}
        version = version_id("filtered", identity)
        return store.commit(staging, shard, version, manifest, FILTERED_FILES,
                            make_latest=make_latest and not failed_blocking(checks))


def rotate_version(store_root: str | Path | PreparedStore, filtered: ShardVersion, chunk_rows: int = 16384,
                   make_latest: bool = True, started_ns: int | None = None) -> ShardVersion:
    """The 180-degree set of a filtered version, as a new version: the filtered arrays hard-linked (they never
    change), the turned structures and Bayer pixels (R <-> B, G1 <-> G2) written beside them. It counts as started
    when its parent's preparation did (or at `started_ns`)."""
    store = _store(store_root)
    if started_ns is None:
        started_ns = filtered.manifest.get("started_ns", filtered.manifest["committed_ns"])
    with store.stage("rotated") as staging:
        for name in FILTERED_FILES:
            _link_or_copy(filtered.file(name), staging / name)
        h_struct, h_bayer = read_header(staging / "structures.npy"), read_header(staging / "bayer.npy")
        with AtomicNpyWriter(staging / "structures_rotated.npy", h_struct.shape, np.uint8) as w_struct, \
                AtomicNpyWriter(staging / "bayer_rotated.npy", h_bayer.shape, np.float32) as w_bayer:
            for (_, packed), (_, bayer) in zip(iter_chunks(h_struct, chunk_rows), iter_chunks(h_bayer, chunk_rows)):
                w_struct.write(rotate_packed(packed))
                w_bayer.write(rotate_bayer(bayer))
        checks = manifest_checks(filtered.manifest) | rotation_checks(staging)
        manifest = {k: filtered.manifest[k] for k in ("sources", "settings", "rows", "record", "raw_scan")}
        manifest |= {"kind": "rotated", "parent": filtered.version, "checks": checks_json(checks),
                     "started_ns": started_ns}
        version = version_id("rotated", {"kind": "rotated", "parent": filtered.version})
        return store.commit(staging, filtered.shard, version, manifest, FILTERED_FILES + ROTATED_FILES,
                            make_latest=make_latest and not failed_blocking(checks))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def preprocess(raw_dir: str | Path, out_dir: str | Path, settings: PrepareSettings | None = None,
               progress: ProgressFn | None = None, limits: CheckLimits | None = None) -> dict:
    """Every shard of a raw folder into the store at out_dir, all or nothing: each shard's filtered and rotated
    versions are committed, and LATEST.json then names exactly these versions in one atomic replacement, once
    every shard passed its blocking checks, so bad input leaves what `load_prepared(out_dir)` returns as it was.
    The whole preparation is one writer of the store (one lease); a shard whose LATEST version comes from a
    preparation that started after this one keeps it (`superseded` lists this run's version of it).

    Shard k's rotated version is made on a second thread while shard k + 1 is filtered: the filter pass is bound by
    hashing the raw structures on one core, and the turn, its check and the commits fill the other."""
    from concurrent.futures import ThreadPoolExecutor

    started_ns = time.time_ns()
    settings = settings or PrepareSettings()
    shards = discover_shards(raw_dir)
    for k in shards:  # every header first: fail before any work on a bad shard
        open_shard(raw_dir, k, settings.n_wavelengths)
    versions, pending = [], None
    with PreparedStore(out_dir).writer() as store, ThreadPoolExecutor(1) as turner:
        for k in shards:
            filtered = prepare_shard(raw_dir, k, store, settings, limits, progress, make_latest=False,
                                     started_ns=started_ns)
            refuse_failed_checks(filtered)
            if pending is not None:
                versions.append(pending.result())
            pending = turner.submit(_rotated_checked, store, filtered)
        versions.append(pending.result())
        pause_point("pointers")
        latest = store.update_pointers({v.shard: v.version for v in versions}, replace=True, started_ns=started_ns)
    records = [v.record for v in versions]
    total = {key: sum(getattr(r, key) for r in records) for key in COUNTS}
    superseded = {str(v.shard): v.version for v in versions if latest.get(v.shard) != v.version}
    return total | {"shards": len(records), "versions": {str(v.shard): latest[v.shard] for v in versions},
                    "superseded": superseded}


def _rotated_checked(store: PreparedStore, filtered: ShardVersion) -> ShardVersion:
    rotated = rotate_version(store, filtered, make_latest=False)
    refuse_failed_checks(rotated)
    return rotated


def refuse_failed_checks(v: ShardVersion) -> None:
    """The CLI's form of a blocking check: one line naming the file and the problem."""
    checks = manifest_checks(v.manifest, str(v.path))
    failed = failed_blocking(checks)
    if failed:
        extra = f" (and {', '.join(failed[1:])})" if failed[1:] else ""
        raise DataError(f"shard {v.shard}: {failed[0]} failed: {checks[failed[0]].description}{extra}")
