"""Streaming .npy reading and atomic writing in bounded chunks.

Reads use plain file reads into a reusable buffer instead of memory maps, so the resident memory of a pass
over a multi-GB shard is one chunk, not the file. Writes go to a temporary file in the same folder that is
fsynced and renamed into place only when complete: a crash or bad input never leaves a half-written output; the
temporary is flocked while written, so one left by a killed writer is told apart and removed later
(remove_stale_temps). Imports errors only.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import stat
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from crrecon_pipeline.errors import DataError


def _mkstemp_like_open(path: Path) -> tuple[int, Path]:
    """A temp file beside `path` (.<name>.<8 characters>.tmp) with the permissions a plain open() would give
    (mkstemp makes them 0600), flocked while it is written: remove_stale_temps removes only temporaries whose lock
    is free, i.e. whose writer is gone (killed by SIGKILL before it could clean up)."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # not removed by a cleaner between mkstemp and flock
            break
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, Path(tmp)


def remove_stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries of this module's atomic writes (of `name`, or of any file) in `folder` whose writer
    is gone: only files named .<name>.<8 characters>.tmp, only when nobody holds their lock."""
    pattern = re.compile(rf"^\.{re.escape(name) if name else '.+'}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    try:
        candidates = [p for p in Path(folder).iterdir() if pattern.match(p.name)]
    except OSError:
        return removed
    for p in candidates:
        try:
            fd = os.open(p, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                p.unlink(missing_ok=True)
                removed.append(p)
        except OSError:
            pass  # held: a writer is at work
        finally:
            os.close(fd)
    return removed


def named(exc: OSError, path: Path) -> OSError:
    """The OSError with the file it was writing named (a full disk's `[Errno 28]` alone says not which file)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


@dataclass(frozen=True)
class NpyHeader:
    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize  # Python ints: a huge header shape cannot overflow


def check_regular_file(path: Path) -> None:
    """A readable regular file, or one line that says what is there instead."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found" + (" (dangling symlink)" if path.is_symlink() else "")) from None
    except OSError as exc:  # ELOOP (symlink loop), EACCES, ...
        raise DataError(f"{path}: cannot open ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file ({'a folder' if stat.S_ISDIR(st.st_mode) else 'special file'})")


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def lfs_pointer(path: Path) -> str | None:
    """The one-line refusal when `path` is a Git LFS pointer (a small text file standing in for the data in a
    clone made without `git lfs pull`), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError:
        return None
    if head != LFS_POINTER:
        return None
    return (f"{path}: a Git LFS pointer ({path.stat().st_size} bytes), not the data: run `git lfs pull` in that "
            "clone (git-lfs installed) to fetch the file")


def read_header(path: str | os.PathLike) -> NpyHeader:
    """The header of a .npy file, checked against the file size (a truncated file is bad input)."""
    path = Path(path)
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        pointer = lfs_pointer(path)
        if pointer:
            raise DataError(pointer) from None
        raise DataError(f"{path}: not a valid .npy file "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if fortran and len(shape) > 1:
        raise DataError(f"{path}: Fortran-ordered arrays are not supported")
    if dtype.hasobject:
        raise DataError(f"{path}: object arrays are not supported")
    if any(int(x) < 0 for x in shape):
        raise DataError(f"{path}: invalid shape {tuple(shape)} in the header (negative size)")
    header = NpyHeader(path, tuple(int(x) for x in shape), dtype, offset)
    expected = offset + (shape[0] if shape else 1) * header.row_bytes
    actual = path.stat().st_size
    if actual < expected:
        raise DataError(f"{path}: truncated file ({actual} bytes, header promises {expected})")
    return header


def iter_chunks(header: NpyHeader, chunk_rows: int, start: int = 0,
                stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first_row, rows) in chunks of at most chunk_rows, reading with one reusable buffer."""
    stop = header.shape[0] if stop is None else stop
    buf = np.empty((min(chunk_rows, max(stop - start, 1)),) + header.shape[1:], dtype=header.dtype)
    with open(header.path, "rb", buffering=0) as f:
        f.seek(header.offset + start * header.row_bytes)
        for first in range(start, stop, chunk_rows):
            n = min(chunk_rows, stop - first)
            view = buf[:n]
            got = f.readinto(memoryview(view.reshape(-1).view(np.uint8)))
            if got != n * header.row_bytes:
                raise DataError(f"{header.path}: truncated file (short read at row {first})")
            yield first, view


def _header_bytes(shape: tuple[int, ...], dtype: np.dtype, total: int | None = None) -> bytes:
    """A version 1.0 .npy header; by default with room for the row count to grow to 20 digits."""
    body = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": tuple(shape)}).encode("latin1")
    used = 10 + len(body) + 1  # magic (6) + version (2) + length (2) + dict + newline
    total = total or -(-(used + 24) // 64) * 64
    if used > total:
        raise ValueError("npy header does not fit")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", total - 10) + body + b" " * (total - used) + b"\n"


WRITEBACK_BYTES = 32 << 20  # written bytes after which the writer starts their write-back in the background
_WRITEBACK = None  # one thread for every writer: fdatasync waits on the disk, not on a core


def _writeback_pool():
    global _WRITEBACK
    if _WRITEBACK is None:
        from concurrent.futures import ThreadPoolExecutor

        _WRITEBACK = ThreadPoolExecutor(1, thread_name_prefix="npy-writeback")
    return _WRITEBACK


class AtomicNpyWriter:
    """Write an (n, ...) array chunk by chunk; the file appears at `path` only when all rows are written.

    shape[0] may be None when the row count is only known at the end (a filtered stream): the header is
    then rewritten in place at commit, within the room reserved for it. Every WRITEBACK_BYTES the data written so
    far is fdatasync'ed on a background thread, so the fsync at commit (still the durability point) finds little
    left to wait for, and the disk works while the pass computes.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple, dtype):
        self.path = Path(path)
        self.declared = None if shape[0] is None else int(shape[0])
        self.shape = (self.declared or 0,) + tuple(int(x) for x in shape[1:])
        self.dtype = np.dtype(dtype)
        self.rows_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = _mkstemp_like_open(self.path)
        self._f = os.fdopen(fd, "wb")
        self._header_len = len(_header_bytes(self.shape, self.dtype))
        self._write(_header_bytes(self.shape, self.dtype))
        self._unsynced, self._syncing = 0, None

    def _write(self, data) -> None:
        try:
            self._f.write(data)
        except OSError as exc:  # a full disk: the temporary goes, the error names the output
            self.abort()
            raise named(exc, self.path) from None

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]} do not fit {self.shape[1:]}")
        if self.declared is not None and self.rows_written + len(rows) > self.declared:
            raise ValueError(f"{self.path}: more rows than the declared {self.declared}")
        self._write(memoryview(rows.reshape(-1).view(np.uint8)))
        self.rows_written += len(rows)
        self._unsynced += rows.nbytes
        if self._unsynced >= WRITEBACK_BYTES and (self._syncing is None or self._syncing.done()):
            self._f.flush()
            self._syncing, self._unsynced = _writeback_pool().submit(os.fdatasync, self._f.fileno()), 0

    def _wait_writeback(self) -> None:
        if self._syncing is not None:
            self._syncing.exception()  # a failure shows again in the fsync at commit, or does not matter (abort)
            self._syncing = None

    def commit(self) -> Path:
        if self.declared is None:
            self._f.seek(0)
            self._write(_header_bytes((self.rows_written,) + self.shape[1:], self.dtype, self._header_len))
        elif self.rows_written != self.declared:
            self.abort()
            raise ValueError(f"{self.path}: {self.rows_written} rows written, {self.declared} declared")
        try:
            self._wait_writeback()
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:  # a full disk or a folder in the way: no temporary file left behind
            self.abort()
            raise named(exc, self.path) from None
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Remove the temporary; closing may flush buffered rows and fail on a full disk: it is removed anyway."""
        try:
            self._wait_writeback()
            if not self._f.closed:
                self._f.close()
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicNpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def save_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    with AtomicNpyWriter(path, array.shape, array.dtype) as w:
        w.write(array)
    return Path(path)


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file to write `path` through: a unique temporary beside it, fsynced and renamed onto `path` when the block
    ends normally; on any failure (bad input, a full disk, a kill signal's exception) removed, `path` untouched.
    Every whole-file writer of the project (text, JSON, checkpoints) goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp_like_open(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: the error names the file, not only `[Errno 28]`
        tmp.unlink(missing_ok=True)
        raise named(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path, "w") as f:
        f.write(text)
    return Path(path)
