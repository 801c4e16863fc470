"""Content digests: which algorithm hashes the bytes, and how a manifest entry names it.

New versions use BLAKE3 (the `blake3` package): 3-4x the speed of SHA-256 on one core, and a tree hash, so one
file's digest can use every core (`b3sum FILE` checks a file by hand as `sha256sum` did). Stores written before
keep their SHA-256: an entry names its algorithm by its key (`"blake3": hex` or `"sha256": hex`), so an old
manifest still verifies with the algorithm it was written with and its version ids never change.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3

ALGORITHM = "blake3"  # what new versions record
ALGORITHMS = ("blake3", "sha256")  # what a manifest entry may record, newest first
THREADED_BYTES = 1 << 23  # updates at least this big hash on every core (smaller ones: the threads cost more)


def chosen(algorithm: str | None) -> str:
    """The algorithm asked for, or the one new versions use (read at call time: a test may write an old store)."""
    return algorithm or ALGORITHM


def new_hasher(algorithm: str | None = None, threads: bool = False):
    """A hasher with update(bytes-like) and hexdigest(); `threads`: BLAKE3 spreads each update over the cores
    (only worth it for updates of THREADED_BYTES and more). The update releases the GIL for either algorithm."""
    algorithm = chosen(algorithm)
    if algorithm == "blake3":
        return blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")


def file_digest(path: str | Path, algorithm: str | None = None, block: int = 1 << 20) -> str:
    """The digest of a file's bytes, read in blocks into one reused buffer (memory stays one block for any size;
    no fresh pages per block). Not memory-mapped: a file truncated under a mapping would kill the process."""
    buffer = memoryview(bytearray(block))
    with open(path, "rb", buffering=0) as f:
        digest = new_hasher(algorithm, threads=min(block, os.fstat(f.fileno()).st_size) >= THREADED_BYTES)
        while got := f.readinto(buffer):
            digest.update(buffer[:got])
    return digest.hexdigest()


def entry_digest(entry: dict) -> tuple[str, str] | None:
    """(algorithm, hex) that a manifest entry records (a source or a file), or None for entries from before the
    digests existed."""
    for algorithm in ALGORITHMS:
        if algorithm in entry:
            return algorithm, entry[algorithm]
    return None
