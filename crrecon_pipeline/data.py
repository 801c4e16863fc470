"""Raw shards -> filtered Bayer arrays -> the 180-degree rotated set, and loading the prepared result.

One streaming pass per shard over both raw files in lockstep, in bounded chunks: unfinished (all-zero) and
non-finite rows are dropped and counted apart, the sign is flipped, 301 samples become 30 bins, spectra are
arranged [[R, G], [G, B]] and structures are bit-packed (2 KiB a row instead of 16 KiB).

Prepared folder, per shard k (the shard record is written last and marks the shard complete):
    structures_<k>.npy (M, 2048) uint8 packed   bayer_<k>.npy (M, 2, 2, 30) float32   rows_<k>.npy (M,) int64
    shard_<k>.json          counts, settings, spectra statistics
    structures_rotated_<k>.npy, bayer_rotated_<k>.npy, rotated_<k>.json      (the rotated set)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .npyio import AtomicNpyWriter, DataError, iter_chunks, read_header, write_text_atomic
from .rawfiles import RawShard, discover_shards, open_shard

N_PIX = 128
PACKED_BYTES = N_PIX * N_PIX // 8
BINNING_MODES = ("mean", "subsample")
ProgressFn = Callable[[int], None]
PREPARED_PATTERNS = ("structures_*.npy", "bayer_*.npy", "rows_*.npy", "shard_*.json", "rotated_*.json")

# Reverses the bit order inside a byte: turning a packed structure by 180 degrees reverses its flat bit string.
_BIT_REVERSE = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class PrepareSettings:
    binning: str = "mean"  # "mean": each bin integrates its band; "subsample": the research code's samples
    n_bins: int = 30
    wavelength_first_nm: float = 400.0  # raw grid: sample 0 .. sample W-1 (a frequency-ordered export runs 700 -> 400)
    wavelength_last_nm: float = 700.0
    n_wavelengths: int = 301
    chunk_rows: int = 4096

    def __post_init__(self):
        if self.binning not in BINNING_MODES:
            raise ValueError(f"binning must be one of {BINNING_MODES}, got {self.binning!r}")

    def raw_wavelengths_nm(self) -> np.ndarray:
        return np.linspace(self.wavelength_first_nm, self.wavelength_last_nm, self.n_wavelengths)

    @property
    def descending(self) -> bool:
        return self.wavelength_first_nm > self.wavelength_last_nm

    def bin_edges(self) -> np.ndarray:
        """Sample-index edges (ascending wavelength): bin k = samples edges[k] .. edges[k+1]-1."""
        w, n = self.n_wavelengths, self.n_bins
        return np.append((np.arange(n) * (w - 1)) // n, w)

    def bin_centers_nm(self) -> np.ndarray:
        lam = np.sort(self.raw_wavelengths_nm())
        if self.binning == "subsample":
            return lam[np.linspace(0, self.n_wavelengths - 1, self.n_bins, dtype=int)]
        e = self.bin_edges()
        return np.array([lam[a:b].mean() for a, b in zip(e[:-1], e[1:])])


def row_status(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(finite, unfinished) per row of (n, 3, W) raw spectra: unfinished = finite and all exactly zero."""
    finite = np.isfinite(spectra).all(axis=(1, 2))
    return finite, finite & (spectra == 0).all(axis=(1, 2))


def bin_spectra(spectra: np.ndarray, settings: PrepareSettings) -> np.ndarray:
    """(n, 3, W) -> (n, 3, n_bins) in ascending wavelength, exactly as DESIGN.md defines the two modes."""
    if settings.descending:
        spectra = spectra[..., ::-1]
    if settings.binning == "subsample":
        return spectra[..., np.linspace(0, settings.n_wavelengths - 1, settings.n_bins, dtype=int)]
    edges = settings.bin_edges()
    sums = np.add.reduceat(spectra, edges[:-1], axis=-1, dtype=np.float64)
    return (sums / np.diff(edges)).astype(np.float32)


def to_bayer(rgb: np.ndarray) -> np.ndarray:
    """(n, 3, L) channels R, G, B -> (n, 2, 2, L) pixels [[R, G], [G, B]]."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return np.stack([np.stack([r, g], 1), np.stack([g, b], 1)], 1)


def rotate_bayer(bayer: np.ndarray) -> np.ndarray:
    """A 180-degree turn of the cell moves pixel (i, j) to (1-i, 1-j): R <-> B, G1 <-> G2."""
    return np.ascontiguousarray(bayer[:, ::-1, ::-1, :])


def pack_structures(structures: np.ndarray) -> np.ndarray:
    """(n, [1,] 128, 128) {0,1} -> (n, 2048) uint8."""
    return np.packbits(structures.reshape(len(structures), -1) != 0, axis=1)


def unpack_structures(packed: np.ndarray) -> np.ndarray:
    """(n, 2048) uint8 -> (n, 128, 128) uint8 {0,1}."""
    return np.unpackbits(packed, axis=1).reshape(-1, N_PIX, N_PIX)


def rotate_packed(packed: np.ndarray) -> np.ndarray:
    """180-degree turn of packed structures without unpacking: s[::-1, ::-1] is the flat bit string reversed."""
    return _BIT_REVERSE[packed[:, ::-1]]


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

    def summary(self) -> dict:
        d = asdict(self)
        kept = max(self.kept_rows, 1)
        d["kept_fraction"] = self.kept_rows / max(self.raw_rows, 1)
        d["mean_fill"] = self.fill_sum / kept
        d["bayer_mean"] = [s / (kept * 30) for s in self.bayer_sum]
        for key in ("fill_sum", "bayer_sum"):
            d.pop(key)
        return d


def structure_encoding(chunk: np.ndarray) -> str | None:
    """"0/1", "0/255", None (all zero), "mixed" (both 1 and 255) or "non-binary": two vectorised uint8 passes."""
    if chunk.dtype != np.uint8:
        if chunk.size and (chunk.min() < 0 or chunk.max() > 255):
            return "non-binary"
        chunk = chunk.astype(np.uint8)
    if not (chunk & 0xFE).any():
        return "0/1" if chunk.any() else None
    if not ((chunk + np.uint8(1)) & 0xFE).any():  # 0 -> 1 and 255 -> 0 (wraps): nothing else survives the mask
        return "0/255"
    return "non-binary" if ((chunk != 0) & (chunk != 1) & (chunk != 255)).any() else "mixed"


def _check_binary(chunk: np.ndarray, path: Path, first_row: int, stats: ShardStats) -> None:
    """Structures must be {0,1} or {0,255}, one encoding per shard."""
    encoding = structure_encoding(chunk)
    if encoding == "non-binary":
        bad = np.argwhere((chunk != 0) & (chunk != 1) & (chunk != 255))[0]
        raise DataError(f"{path}: non-binary structures (value {chunk[tuple(bad)]} at row {first_row + bad[0]})")
    if encoding == "mixed" or (encoding and stats.structure_values and stats.structure_values != encoding):
        raise DataError(f"{path}: structures mix 0/1 and 0/255 encodings (rows {first_row}..{first_row + len(chunk) - 1})")
    stats.structure_values = encoding or stats.structure_values


def filter_shard(raw_dir: str | Path, shard: int, out_dir: str | Path, settings: PrepareSettings | None = None,
                 progress: ProgressFn | None = None) -> dict:
    """Stream one raw shard into the prepared folder; returns the shard record (also written as shard_<k>.json)."""
    settings = settings or PrepareSettings()
    out_dir = Path(out_dir)
    raw = open_shard(raw_dir, shard, settings.n_wavelengths)
    (out_dir / f"rotated_{shard}.json").unlink(missing_ok=True)  # the old rotated set no longer matches
    stats = ShardStats(shard=shard, raw_rows=raw.rows)
    chunk = settings.chunk_rows
    with AtomicNpyWriter(out_dir / f"structures_{shard}.npy", (None, PACKED_BYTES), np.uint8) as w_struct, \
            AtomicNpyWriter(out_dir / f"bayer_{shard}.npy", (None, 2, 2, settings.n_bins), np.float32) as w_bayer, \
            AtomicNpyWriter(out_dir / f"rows_{shard}.npy", (None,), np.int64) as w_rows:
        for (first, st), (_, sp) in zip(iter_chunks(raw.structures, chunk), iter_chunks(raw.spectra, chunk)):
            _check_binary(st, raw.structures.path, first, stats)
            finite, unfinished = row_status(sp)
            keep = finite & ~unfinished
            stats.dropped_nonfinite += int((~finite).sum())
            stats.dropped_unfinished += int(unfinished.sum())
            idx = np.nonzero(keep)[0]
            if len(idx):
                packed = pack_structures(st[idx])
                bayer = to_bayer(bin_spectra(-sp[idx].astype(np.float32), settings))
                w_struct.write(packed)
                w_bayer.write(bayer)
                w_rows.write(first + idx)
                stats.kept_rows += len(idx)
                stats.fill_sum += np.count_nonzero(st[idx]) / (N_PIX * N_PIX)
                ch = np.stack([bayer[:, 0, 0], bayer[:, 0, 1], bayer[:, 1, 1]], 1)  # (n, 3, bins)
                stats.bayer_min = np.minimum(stats.bayer_min, ch.min(axis=(0, 2))).tolist()
                stats.bayer_max = np.maximum(stats.bayer_max, ch.max(axis=(0, 2))).tolist()
                stats.bayer_sum = (np.asarray(stats.bayer_sum) + ch.sum(axis=(0, 2), dtype=np.float64)).tolist()
                stats.max_green_mismatch = max(stats.max_green_mismatch, float(np.abs(bayer[:, 0, 1] - bayer[:, 1, 0]).max()))
                stats.negative_after_flip += int((bayer < 0).sum())
            if progress:
                progress(len(st))
    record = stats.summary() | {"settings": asdict(settings), "raw_files": [str(raw.structures.path), str(raw.spectra.path)]}
    text = json.dumps(record, indent=2) + "\n"
    write_text_atomic(out_dir / f"shard_{shard}.json", text)
    return json.loads(text)  # plain Python types, exactly what the record file says


def rotate_shard(out_dir: str | Path, shard: int, chunk_rows: int = 16384) -> dict:
    """The 180-degree set of one prepared shard: structures turned, Bayer pixels turned (R <-> B, G1 <-> G2)."""
    out_dir = Path(out_dir)
    h_struct = read_header(out_dir / f"structures_{shard}.npy")
    h_bayer = read_header(out_dir / f"bayer_{shard}.npy")
    with AtomicNpyWriter(out_dir / f"structures_rotated_{shard}.npy", h_struct.shape, np.uint8) as w_struct, \
            AtomicNpyWriter(out_dir / f"bayer_rotated_{shard}.npy", h_bayer.shape, np.float32) as w_bayer:
        for (_, packed), (_, bayer) in zip(iter_chunks(h_struct, chunk_rows), iter_chunks(h_bayer, chunk_rows)):
            w_struct.write(rotate_packed(packed))
            w_bayer.write(rotate_bayer(bayer))
    record = {"shard": shard, "rows": h_struct.shape[0]}
    write_text_atomic(out_dir / f"rotated_{shard}.json", json.dumps(record) + "\n")
    return record


def preprocess(raw_dir: str | Path, out_dir: str | Path, settings: PrepareSettings | None = None,
               progress: ProgressFn | None = None) -> dict:
    """All shards of a raw folder into out_dir, all or nothing: work happens in a staging folder that replaces
    the previous prepared files only once every shard is done, so bad input leaves earlier output intact."""
    settings = settings or PrepareSettings()
    out_dir = Path(out_dir)
    shards = discover_shards(raw_dir)
    for k in shards:  # every header first: fail before any work on a bad shard
        open_shard(raw_dir, k, settings.n_wavelengths)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        records = []
        for k in shards:
            records.append(filter_shard(raw_dir, k, staging, settings, progress))
            rotate_shard(staging, k)
        for pattern in PREPARED_PATTERNS:
            for old in out_dir.glob(pattern):
                old.unlink()
        for new in sorted(staging.iterdir(), key=lambda p: p.suffix == ".json"):  # records last
            new.replace(out_dir / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    total = {key: sum(r[key] for r in records) for key in ("raw_rows", "kept_rows", "dropped_unfinished", "dropped_nonfinite")}
    return total | {"shards": len(records)}


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
    bayer: np.ndarray  # (M, 2, 2, 30) float32
    rotated_structures: PackedStructures | None
    rotated_bayer: np.ndarray | None
    source_rows: np.ndarray  # (M,) int64 into the raw shards concatenated in shard order
    shards: list[dict]
    wavelengths_nm: np.ndarray  # (30,) bin centres

    def __len__(self) -> int:
        return len(self.bayer)


def prepared_shards(prepared_dir: str | Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in Path(prepared_dir).glob("shard_*.json"))


def load_prepared(prepared_dir: str | Path) -> Prepared:
    """Every complete shard of a prepared folder, concatenated in shard order."""
    prepared_dir = Path(prepared_dir)
    shards = prepared_shards(prepared_dir) if prepared_dir.is_dir() else []
    if not shards:
        raise DataError(f"{prepared_dir}: no prepared shards (run `crrecon preprocess` or materialize filtered_bayer)")
    records = [json.loads((prepared_dir / f"shard_{k}.json").read_text()) for k in shards]
    offsets = np.concatenate([[0], np.cumsum([r["raw_rows"] for r in records])[:-1]])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([np.load(prepared_dir / f"{name}_{k}.npy", mmap_mode="r") for k in shards])

    rotated = all((prepared_dir / f"rotated_{k}.json").exists() for k in shards)
    settings = PrepareSettings(**records[0]["settings"])
    return Prepared(
        structures=PackedStructures(cat("structures")),
        bayer=cat("bayer"),
        rotated_structures=PackedStructures(cat("structures_rotated")) if rotated else None,
        rotated_bayer=cat("bayer_rotated") if rotated else None,
        source_rows=np.concatenate([np.load(prepared_dir / f"rows_{k}.npy") + off for k, off in zip(shards, offsets)]),
        shards=records,
        wavelengths_nm=settings.bin_centers_nm(),
    )
