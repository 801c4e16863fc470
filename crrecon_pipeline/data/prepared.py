"""Loading prepared data for training: exactly the versions asked for (or each shard's latest), memory-mapped,
their blocking checks refused when failed. `load_prepared(dir)` is the public API."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crrecon_pipeline.data.store import PreparedStore, ShardVersion, verify_content
from crrecon_pipeline.data.transforms import (
    PrepareSettings,
    unpack_structures,
)
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.grid import N_PIX


class PackedStructures:
    """Bit-packed structures that read like a (M, 128, 128) uint8 array: unpacked only for the rows asked for."""

    dtype = np.dtype(np.uint8)

    def __init__(self, packed: np.ndarray):
        self.packed = packed

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.packed), N_PIX, N_PIX)

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return unpack_structures(self.packed[index][None])[0]
        return unpack_structures(self.packed[index])

    def __array__(self, dtype=None, copy=None):
        out = unpack_structures(self.packed)
        return out if dtype is None else out.astype(dtype)


@dataclass
class Prepared:
    structures: PackedStructures
    bayer: np.ndarray  # (M, 2, 2, n_bins) float32, n_bins = data.out_len (30 by default)
    rotated_structures: PackedStructures | None
    rotated_bayer: np.ndarray | None
    source_rows: np.ndarray  # (M,) int64 into the raw shards concatenated in shard order
    shards: list[dict]
    wavelengths_nm: np.ndarray  # (n_bins,) bin centres
    versions: dict[int, ShardVersion] = field(default_factory=dict)
    store: Path | None = None  # the prepared store it was read from (load_prepared); None when combined

    def __len__(self) -> int:
        return len(self.bayer)

    def training_set(self) -> dict[str, dict]:
        """shard -> {version, rows}: what a run trained on, as metadata and JSON show it."""
        return {str(k): {"version": v.version, "rows": v.rows} for k, v in self.versions.items()}


def read_training_set(path: str | Path, prepared_dir: str | Path | None = None) -> dict[int, str]:
    """A training_set.json ({shard: {version, rows}} or {shard: version}) -> {shard: version}. With the store
    (`prepared_dir`), each entry's `rows` must be its version's row count: a set that does not describe the
    store's data is refused by name."""
    try:
        entries = json.loads(Path(path).read_text())
        versions = {int(k): (v["version"] if isinstance(v, dict) else str(v)) for k, v in entries.items()}
        rows = {int(k): v["rows"] for k, v in entries.items() if isinstance(v, dict) and "rows" in v}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a training set ({{shard: version}}): {exc}") from None
    for k, want in rows.items() if prepared_dir is not None else ():
        have = PreparedStore(prepared_dir).open(k, versions[k]).rows
        if isinstance(want, bool) or want != have:
            raise DataError(f"{path}: shard {k} version {versions[k]} has {have} rows in {prepared_dir}, the "
                            f"training set says {want!r}")
    return versions


def refuse_failed_versions(prepared_dir: str | Path, picked: list[ShardVersion]) -> None:
    """The lineage rule for pinned versions too: a version whose manifest records a failed blocking check (a
    `crrecon preprocess` that failed still commits it, unpointed) never reaches training."""
    for v in picked:
        reason = v.refusal()
        if reason:
            raise DataError(f"{prepared_dir}: {reason}")


def load_prepared(prepared_dir: str | Path, versions: dict | None = None, verify: bool = True) -> Prepared:
    """The prepared data, concatenated in shard order: by default the LATEST version of every shard in the store;
    `versions` ({shard: version name}) picks exact versions instead (what the lineage says passed its checks).
    Each version's manifest is verified against its files (sizes, shapes and, with `verify`, the digest of every
    byte, streamed); an inconsistent shard is refused by name."""
    store = PreparedStore(prepared_dir)
    if versions is None:
        chosen = store.latest_all()
    else:
        chosen = {int(k): store.open(int(k), v) for k, v in sorted(versions.items(), key=lambda kv: int(kv[0]))}
    if not chosen:
        legacy = (" (an old flat layout is there: run `crrecon preprocess` again)"
                  if any(Path(prepared_dir).glob("shard_*.json")) else "")
        raise DataError(f"{prepared_dir}: no prepared shards "
                        f"(run `crrecon preprocess` or materialize filtered_bayer){legacy}")
    shards = sorted(chosen)
    picked = [chosen[k] for k in shards]
    refuse_failed_versions(prepared_dir, picked)
    if verify:
        for v in picked:
            verify_content(v)
    settings = {json.dumps(PrepareSettings(**v.manifest["settings"]).identity(), sort_keys=True) for v in picked}
    if len(settings) > 1:
        raise DataError(f"{prepared_dir}: shards {shards} were prepared with different settings (binning, grid); "
                        "prepare them alike")
    records = [v.manifest["record"] | {"settings": v.manifest["settings"],
                                       "raw_files": [src["path"] for src in v.manifest["sources"]]}
               for v in picked]
    offsets = np.concatenate([[0], np.cumsum([r["raw_rows"] for r in records])[:-1]])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([np.load(v.file(name), mmap_mode="r") for v in picked])

    rotated = all(v.kind == "rotated" for v in picked)
    return Prepared(
        structures=PackedStructures(cat("structures.npy")),
        bayer=cat("bayer.npy"),
        rotated_structures=PackedStructures(cat("structures_rotated.npy")) if rotated else None,
        rotated_bayer=cat("bayer_rotated.npy") if rotated else None,
        source_rows=np.concatenate([np.load(v.file("rows.npy")) + off for v, off in zip(picked, offsets)]),
        shards=records,
        wavelengths_nm=PrepareSettings(**picked[0].manifest["settings"]).bin_centers_nm(),
        versions=dict(zip(shards, picked)),
        store=Path(prepared_dir),
    )


def combine_prepared(parts: list[Prepared]) -> Prepared:
    """Prepared data from several stores as one (e.g. the user's prepared folder and the design shards of the
    active-learning loop): concatenated in the order given, shard indices distinct, prepared alike."""
    if len(parts) == 1:
        return parts[0]
    shards = [k for p in parts for k in p.versions]
    if len(set(shards)) != len(shards):
        raise DataError(f"prepared data to combine share shard indices ({sorted(shards)})")
    settings = {json.dumps(PrepareSettings(**r["settings"]).identity(), sort_keys=True)
                for p in parts for r in p.shards}
    if len(settings) > 1:
        raise DataError("prepared data to combine were prepared with different settings (binning, grid)")
    offsets = np.cumsum([0] + [sum(r["raw_rows"] for r in p.shards) for p in parts[:-1]])
    rotated = all(p.rotated_bayer is not None for p in parts)
    return Prepared(
        structures=PackedStructures(np.concatenate([p.structures.packed for p in parts])),
        bayer=np.concatenate([p.bayer for p in parts]),
        rotated_structures=PackedStructures(np.concatenate([p.rotated_structures.packed for p in parts]))
        if rotated else None,
        rotated_bayer=np.concatenate([p.rotated_bayer for p in parts]) if rotated else None,
        source_rows=np.concatenate([p.source_rows + off for p, off in zip(parts, offsets)]),
        shards=[r for p in parts for r in p.shards],
        wavelengths_nm=parts[0].wavelengths_nm,
        versions={k: v for p in parts for k, v in p.versions.items()},
    )
