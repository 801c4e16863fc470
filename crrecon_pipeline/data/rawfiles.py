"""The research group's raw shard format: finding shard pairs and checking their headers.

binary_dataset_128_<k>.npy   (N, 1, 128, 128) uint8 structures, {0,1} (or {0,255})
spectra_latest_<k>.npy       (N, 3, W) float spectra R, G, B, stored negative; W = 301 by default
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from crrecon_pipeline.data.digest import THREADED_BYTES, chosen, new_hasher
from crrecon_pipeline.data.npyio import NpyHeader, read_header
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.settings import pause_point

STRUCTURE_RE = re.compile(r"^binary_dataset_128_([0-9]+)\.npy$")  # ASCII digits only: '٣' is no shard index
SPECTRA_RE = re.compile(r"^spectra_latest_([0-9]+)\.npy$")


def structure_path(raw_dir: str | Path, shard: int | str) -> Path:
    return Path(raw_dir) / f"binary_dataset_128_{shard}.npy"


def spectra_path(raw_dir: str | Path, shard: int | str) -> Path:
    return Path(raw_dir) / f"spectra_latest_{shard}.npy"


def parse_shard_key(key: str) -> int:
    """A partition key or CLI value -> shard index; anything but a plain non-negative integer is refused."""
    text = str(key).strip()
    if not (text.isascii() and text.isdigit()):  # '²' or '٣' pass isdigit() but are no index
        raise DataError(f"shard {key!r}: not a shard index (expected a non-negative integer, e.g. 0 or 12)")
    return int(text)


def _files_by_index(raw_dir: Path, pattern: re.Pattern) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for p in raw_dir.iterdir():
        if m := pattern.match(p.name):
            found.setdefault(int(m.group(1)), []).append(p)
    return found


def shard_files(raw_dir: str | Path) -> dict[int, tuple[Path, Path]]:
    """{k: (structures, spectra)} for every complete pair, by numeric index (`007` is shard 7). Two spellings of
    one index (`7` and `007`), a lone file, or an empty folder is bad input, refused by name."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw data folder not found")
    structures, spectra = _files_by_index(raw_dir, STRUCTURE_RE), _files_by_index(raw_dir, SPECTRA_RE)
    for found in (structures, spectra):
        for k, paths in sorted(found.items()):
            if len(paths) > 1:
                names = ", ".join(sorted(p.name for p in paths))
                raise DataError(f"{raw_dir}: shard index {k} is ambiguous ({names}); keep one spelling")
    for k in sorted(structures.keys() - spectra.keys()):
        raise DataError(f"{structures[k][0]}: structure shard without its spectra shard "
                        f"({spectra_path(raw_dir, k).name} missing)")
    for k in sorted(spectra.keys() - structures.keys()):
        raise DataError(f"{spectra[k][0]}: spectra shard without its structure shard "
                        f"({structure_path(raw_dir, k).name} missing)")
    if not structures:
        raise DataError(f"{raw_dir}: no raw shards (binary_dataset_128_<k>.npy + spectra_latest_<k>.npy) "
                        "in this folder")
    return {k: (structures[k][0], spectra[k][0]) for k in sorted(structures)}


def discover_shards(raw_dir: str | Path) -> list[int]:
    """Shard indices with both files present, in shard order."""
    return sorted(shard_files(raw_dir))


def shard_pair(raw_dir: str | Path, shard: int) -> tuple[Path, Path]:
    """The two files of shard k as they are spelled on disk (`binary_dataset_128_007.npy` is shard 7)."""
    raw_dir = Path(raw_dir)
    canonical = (structure_path(raw_dir, shard), spectra_path(raw_dir, shard))
    if not raw_dir.is_dir():
        return canonical  # read_header names the missing file
    structures = _files_by_index(raw_dir, STRUCTURE_RE).get(shard, [])
    spectra = _files_by_index(raw_dir, SPECTRA_RE).get(shard, [])
    for paths in (structures, spectra):
        if len(paths) > 1:
            raise DataError(f"{raw_dir}: shard index {shard} is ambiguous "
                            f"({', '.join(sorted(p.name for p in paths))}); keep one spelling")
    return (structures[0] if structures else canonical[0], spectra[0] if spectra else canonical[1])


@dataclass(frozen=True)
class RawShard:
    index: int
    structures: NpyHeader
    spectra: NpyHeader

    @property
    def rows(self) -> int:
        return self.structures.shape[0]

    @property
    def n_wavelengths(self) -> int:
        return self.spectra.shape[2]


def open_shard(raw_dir: str | Path, shard: int, n_wavelengths: int | None = None) -> RawShard:
    """Both headers of shard k, with shapes, dtypes and row counts checked (values are checked while streaming)."""
    st_path, sp_path = shard_pair(raw_dir, shard)
    st, sp = read_header(st_path), read_header(sp_path)
    if st.shape[1:] not in ((1, N_PIX, N_PIX), (N_PIX, N_PIX)):
        raise DataError(f"{st.path}: structures must have shape (N, 1, 128, 128), got {st.shape}")
    if not (np.issubdtype(st.dtype, np.integer) or st.dtype == np.bool_):
        raise DataError(f"{st.path}: structures must be integer (uint8 0/1), got dtype {st.dtype}")
    if len(sp.shape) != 3 or sp.shape[1] != 3:
        raise DataError(f"{sp.path}: spectra must have shape (N, 3, {n_wavelengths or 'W'}), got {sp.shape}")
    if n_wavelengths is not None and sp.shape[2] != n_wavelengths:
        raise DataError(f"{sp.path}: spectra have {sp.shape[2]} wavelength samples, "
                        f"the raw source expects {n_wavelengths}")
    if not np.issubdtype(sp.dtype, np.floating):
        raise DataError(f"{sp.path}: spectra must be floating point, got dtype {sp.dtype}")
    if st.shape[0] != sp.shape[0]:
        raise DataError(f"{sp.path}: {sp.shape[0]} rows but {st.path.name} has {st.shape[0]}")
    if st.shape[0] == 0:
        raise DataError(f"{st.path}: shard has no rows")
    return RawShard(shard, st, sp)


PIECE_BYTES = 1 << 19  # what the structures' thread hashes, then hands to the piece job while it is still in cache


class ShardReader:
    """Both files of a shard streamed once, in lockstep chunks of rows, with every byte hashed (BLAKE3 unless
    `algorithm` says otherwise, data/digest.py) while the caller works on the chunk: the raw data is read exactly
    once per pass.

    Chunks are read into fresh buffers (not memory-mapped: a file truncated by a sync under a mapping would kill
    the process with SIGBUS), dropped as the pass moves on, so the resident memory is a few chunks whatever the
    file size. A file that ends early or changes (size, modification time) while it is read is one line naming
    it. Each file is hashed in order on its own thread (the hashers release the GIL), so hashing the two files
    and the caller's work share the cores; at most two chunks per file are in flight; a chunk of THREADED_BYTES or
    more hashed in one update spreads over the cores (BLAKE3 is a tree hash). A yielded chunk stays valid until
    the one after the next is requested.

    `chunks_with(piece_job)` also runs piece_job(rows) on the structures' thread, on each piece of PIECE_BYTES
    right after hashing it: the piece is read from memory once, for the digest, and the job (packing, the
    encoding scan) finds it in the core's cache instead of reading the whole chunk again. The reader works one
    chunk ahead, so the caller rarely waits for the results of the chunk it gets.
    """

    def __init__(self, raw: RawShard, chunk_rows: int = 4096, algorithm: str | None = None):
        self.raw = raw
        self.chunk_rows = max(1, chunk_rows)
        self.algorithm = chosen(algorithm)
        self.digests: dict[str, str] = {}  # {"structures": hex, "spectra": hex} once a pass is complete

    def __iter__(self):
        for first, st, sp, _ in self.chunks_with(None):
            yield first, st, sp

    def chunks_with(self, piece_job: Callable[[np.ndarray], object] | None):
        """(first row, structures, spectra, [piece_job(piece) for each piece of the structures]) per chunk; the
        list is empty without a job."""
        from concurrent.futures import ThreadPoolExecutor

        headers = (self.raw.structures, self.raw.spectra)
        chunk_bytes = [min(self.chunk_rows, self.raw.rows) * h.row_bytes for h in headers]
        threaded = [piece_job is None and chunk_bytes[0] >= THREADED_BYTES, chunk_bytes[1] >= THREADED_BYTES]
        hashes = [new_hasher(self.algorithm, threads) for threads in threaded]  # pieces: one core, in cache
        pools = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]  # one ordered hash stream per file
        in_flight: list[list] = [[], []]
        rings = [_Ring(h, self.chunk_rows) for h in headers]  # buffers reused: no fresh pages to fault in per chunk
        files = [open(h.path, "rb") for h in headers]
        stats = [os.fstat(f.fileno()) for f in files]
        piece_rows = max(1, PIECE_BYTES // max(headers[0].row_bytes, 1))
        try:
            for h, f, header in zip(hashes, files, headers):
                h.update(f.read(header.offset))
            ahead = None
            for first in range(0, self.raw.rows, self.chunk_rows):
                count = min(self.chunk_rows, self.raw.rows - first)
                if first:
                    pause_point("reading")
                arrays = []
                for i, (f, header) in enumerate(zip(files, headers)):
                    while len(in_flight[i]) >= 2:
                        in_flight[i].pop(0).result()
                    view, array = _read_rows(f, header, first, count, rings[i].next())
                    if i == 0 and piece_job is not None:
                        job = pools[0].submit(_hash_pieces, hashes[0], view, array, piece_rows, piece_job)
                    else:
                        job = pools[i].submit(hashes[i].update, view)
                    in_flight[i].append(job)
                    arrays.append(array)
                    del view  # the arrays and the hash job keep the map alive exactly as long as needed
                if ahead is not None:
                    yield ahead[0], ahead[1], ahead[2], ahead[3].result() if piece_job else []
                ahead = (first, arrays[0], arrays[1], in_flight[0][-1])
                del arrays
            if ahead is not None:
                yield ahead[0], ahead[1], ahead[2], ahead[3].result() if piece_job else []
            ahead = None
            for i in range(2):
                for fut in in_flight[i]:
                    fut.result()
                in_flight[i].clear()
                files[i].seek(headers[i].offset + self.raw.rows * headers[i].row_bytes)
                while block := files[i].read(1 << 20):  # anything after the array (rare) is part of the file too
                    hashes[i].update(block)
                _check_unchanged(files[i], headers[i], stats[i])
        finally:
            for pool in pools:
                pool.shutdown(wait=True)
            for f in files:
                f.close()
        self.digests = {"structures": hashes[0].hexdigest(), "spectra": hashes[1].hexdigest()}

    def sources(self) -> list[dict]:
        """The manifest's record of what was read: names, paths, sizes and digests (the key names the algorithm)."""
        return [{"name": h.path.name, "path": str(h.path.resolve()), "size": h.path.stat().st_size,
                 self.algorithm: self.digests[key]}
                for key, h in (("structures", self.raw.structures), ("spectra", self.raw.spectra))]


class _Ring:
    """RING chunk buffers of one file, used in turn: a chunk is overwritten only RING chunks later, after the
    reader's contract (valid until the one after the next is requested) and the two hashes in flight are done."""

    RING = 4

    def __init__(self, header: NpyHeader, chunk_rows: int):
        rows = min(chunk_rows, header.shape[0])
        self.buffers = [np.empty((rows,) + header.shape[1:], header.dtype) for _ in range(self.RING)]
        self.turn = -1

    def next(self) -> np.ndarray:
        self.turn = (self.turn + 1) % self.RING
        return self.buffers[self.turn]


def _read_rows(f, header: NpyHeader, first: int, count: int, buffer: np.ndarray) -> tuple[memoryview, np.ndarray]:
    """Rows first .. first + count - 1 of an open .npy file as (bytes, array), read into `buffer`. Not a memory
    map: a file truncated under a mapping kills the process with SIGBUS; a short read is one line instead."""
    start = header.offset + first * header.row_bytes
    array = buffer[:count]
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = os.preadv(f.fileno(), [view[done:]], start + done)
        if got <= 0:
            raise DataError(f"{header.path}: changed while being read (it ends before row {first + count}: "
                            "truncated or rewritten meanwhile); prepare it again once it is complete")
        done += got
    return view, array


def _check_unchanged(f, header: NpyHeader, before: os.stat_result) -> None:
    """A file rewritten in place while it was read (same inode, new size or modification time) is refused."""
    now = os.fstat(f.fileno())
    if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise DataError(f"{header.path}: changed while being read (rewritten meanwhile); prepare it again once it is "
                        "complete")


def _hash_pieces(hasher, view: memoryview, rows: np.ndarray, piece_rows: int, piece_job) -> list:
    """Hash a chunk in order, a piece at a time, each piece handed to piece_job while it is in cache."""
    row_bytes = len(view) // max(len(rows), 1)
    out = []
    for start in range(0, len(rows), piece_rows):
        hasher.update(view[start * row_bytes:(start + piece_rows) * row_bytes])
        out.append(piece_job(rows[start:start + piece_rows]))
    return out
