"""The prepared store: immutable, versioned shard data, each version a folder with a manifest, committed by one
atomic rename. Owns the store's folder layout, its lock, the writers' leases and pruning; imports npyio and errors.

    <root>/shard_<k>/<version>/manifest.json + the arrays it lists     a committed version: never changed again
    <root>/LATEST.json      {shard: version}: the newest version of each shard whose blocking checks passed
    <root>/.lock            the store lock (flock): commits, LATEST updates, pruning and staging cleanup
    <root>/.staging/w<token>.lease                                      a writer's lease, flocked for its life
    <root>/.staging/<kind>.w<token>.<n>/                                that writer's work in progress

Writers coordinate on the file system, not by process id (which means nothing across PID namespaces or hosts):
a lease is an flock, held by the writer's open file and released by the kernel when the writer dies, so a free
lease means its staging folders are leftovers. A lease file also lists the versions its writer committed: they
are never pruned while it is held. A version's name is its kind and a digest of what defines its content (the
source files' sha256, the settings, the parent version), so preparing the same input twice, even concurrently,
yields one version: the second rename finds the folder taken and its staging copy is dropped. LATEST moves forward
only (a preparation that started before the one LATEST names does not take it: manifests record `started_ns`)
and only to committed versions; a pointed-to version is never pruned. A kill at any instant leaves every committed
version and LATEST.json as they were. The store only ever deletes what it wrote: staging folders, and files
listed in the manifest of a version it prunes (a foreign file keeps its folder alive; should that version be
committed again, the folder moves aside to <version>.foreign-<token>, the file in it).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from crrecon_pipeline.data.npyio import read_header, write_text_atomic
from crrecon_pipeline.data.shardrecord import ShardRecord
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.settings import pause_point

MANIFEST = "manifest.json"
LATEST = "LATEST.json"
FORMAT = 1
KEEP_VERSIONS = 3
KINDS = ("filtered", "rotated")
VERSION_RE = re.compile(r"^(filtered|rotated)-[0-9a-f]{16}$")


def version_id(kind: str, identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{kind}-{digest[:16]}"


@dataclass(frozen=True)
class ShardVersion:
    """One committed version of one shard: its folder and manifest."""

    shard: int
    version: str
    path: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def record(self) -> ShardRecord:
        """What filtering found (a rotated version carries its filtered parent's)."""
        return ShardRecord.from_json(self.manifest["record"], f"{self.path}/manifest.json")

    def failed_checks(self) -> list[str]:
        """The blocking checks this version's manifest records as failed (a version LATEST never points to)."""
        return [name for name, c in self.manifest.get("checks", {}).items() if c["blocking"] and not c["passed"]]

    def refusal(self) -> str | None:
        """Why training must not use this version, in one line naming the shard, the version and the check."""
        failed = self.failed_checks()
        if not failed:
            return None
        more = f" (and {', '.join(failed[1:])})" if failed[1:] else ""
        return f"shard {self.shard} version {self.version}: {failed[0]} failed{more}; re-prepare the shard"

    def file(self, name: str) -> Path:
        return self.path / name


class PreparedStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lease: Lease | None = None  # held while this object writes (writer())

    # -------------------------------------------------------------------------------------------- reading

    def shard_dir(self, shard: int) -> Path:
        return self.root / f"shard_{shard}"

    def versions(self, shard: int) -> list[ShardVersion]:
        """Committed versions of a shard, oldest first."""
        d = self.shard_dir(shard)
        if not d.is_dir():
            return []
        found = [self.open(shard, p.name) for p in d.iterdir() if VERSION_RE.match(p.name) and (p / MANIFEST).is_file()]
        return sorted(found, key=lambda v: v.manifest["committed_ns"])

    def open(self, shard: int, version: str) -> ShardVersion:
        """A committed version, its manifest checked against the files (sizes, shapes, row counts)."""
        if not VERSION_RE.match(str(version)):
            raise DataError(f"{self.shard_dir(shard)}: {version!r} is not a version name")
        path = self.shard_dir(shard) / version
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{path}: no such prepared version of shard {shard}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{manifest_path}: unreadable manifest ({exc})") from None
        v = ShardVersion(shard, version, path, manifest)
        verify(v)
        return v

    def pointers(self) -> dict[int, str]:
        path = self.root / LATEST
        if not path.is_file():
            return {}
        try:
            return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: unreadable ({exc})") from None

    def latest(self, shard: int) -> ShardVersion | None:
        version = self.pointers().get(shard)
        return self.open(shard, version) if version else None

    def latest_all(self) -> dict[int, ShardVersion]:
        return {k: self.open(k, v) for k, v in sorted(self.pointers().items())}

    # -------------------------------------------------------------------------------------------- writing

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The store lock (an flock on <root>/.lock): commits, LATEST updates, pruning and the staging cleanup
        happen under it. Re-entrant in a thread; the threads of one process take turns."""
        with _store_lock(self.root):
            yield

    @contextmanager
    def writer(self) -> Iterator["PreparedStore"]:
        """This store object as one writer holding a lease for the block (re-entrant): its staging folders are never
        removed and the versions it committed are never pruned by anyone while the lease is held."""
        if self._lease is not None:
            yield self
            return
        self._lease = Lease.take(self)
        try:
            yield self
        finally:
            lease, self._lease = self._lease, None
            lease.release(self)

    @contextmanager
    def stage(self, kind: str) -> Iterator[Path]:
        """A fresh staging folder on the store's file system (so commit is one rename); removed on failure."""
        with self.writer():
            self.clean_staging()
            staging = self._lease.staging_path(kind)
            try:
                staging.mkdir(parents=True)
                yield staging
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def commit(self, staging: Path, shard: int, version: str, manifest: dict, files: list[str],
               make_latest: bool) -> ShardVersion:
        """Write the manifest, then, under the store lock, rename the staging folder into place (the single
        commit point), move LATEST (forward only) and prune."""
        manifest = manifest | {"format": FORMAT, "shard": shard, "version": version, "committed_ns": time.time_ns(),
                               "files": describe_files(staging, files)}
        manifest.setdefault("started_ns", manifest["committed_ns"])
        write_text_atomic(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _fsync_dir(staging)
        final = self.shard_dir(shard) / version
        pause_point("commit")
        with self.writer(), self.locked():
            final.parent.mkdir(parents=True, exist_ok=True)
            _move_leftover_aside(final)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (final / MANIFEST).is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # the same content was committed first by someone else
            _fsync_dir(final.parent)
            self._lease.protect(shard, version)
            committed = self.open(shard, version)
            if make_latest:
                self.update_pointers({shard: version}, started_ns=manifest["started_ns"])
            self.prune(shard)
        return committed

    def set_latest(self, v: ShardVersion) -> None:
        self.update_pointers({v.shard: v.version})

    def update_pointers(self, versions: dict[int, str], replace: bool = False,
                        started_ns: int | None = None) -> dict[int, str]:
        """One atomic replacement of LATEST.json under the store lock: merged with the current pointers (one
        shard's commit), or replacing them (`crrecon preprocess`: the store then holds that raw folder's shards).
        Each version must be committed. LATEST moves forward only: a shard whose current version comes from a
        preparation that started after `started_ns` (default: the proposed version's own start) keeps it, and
        `replace` keeps those newer shards too. Returns the pointers now in LATEST.json."""
        with self.locked():
            current = self.pointers()
            merged = {k: v for k, v in current.items()
                      if not replace or (started_ns is not None and self._started(k, v, -1) >= started_ns)}
            for k, v in versions.items():
                if not (self.shard_dir(k) / v / MANIFEST).is_file():
                    raise DataError(f"{self.root / LATEST}: shard {k} version {v} is not committed; LATEST not moved")
                mine = started_ns if started_ns is not None else self._started(k, v, 0)
                if k in current and current[k] != v and self._started(k, current[k], -1) > mine:
                    continue  # a preparation that started later owns this shard's pointer
                merged[k] = v
            text = json.dumps({str(k): v for k, v in sorted(merged.items())}, indent=2) + "\n"
            write_text_atomic(self.root / LATEST, text)
            return merged

    def _started(self, shard: int, version: str, missing: int) -> int:
        """When the preparation that committed a version started (its commit time for older manifests)."""
        try:
            manifest = json.loads((self.shard_dir(shard) / version / MANIFEST).read_text())
            return int(manifest.get("started_ns", manifest["committed_ns"]))
        except (OSError, ValueError, KeyError, TypeError):
            return missing

    def clean_staging(self) -> list[Path]:
        """Remove staging folders whose writer is gone: its lease is free (or, for the pid-named folders of earlier
        versions, its process is gone). Under the store lock, so no lease is judged while it is being taken."""
        staging_root = self.root / ".staging"
        if not staging_root.is_dir():
            return []
        with self.locked():
            return _clean(staging_root)

    def prune(self, shard: int, keep: int = KEEP_VERSIONS, protect: set[str] = frozenset()) -> list[str]:
        """Drop versions beyond the newest `keep`, except those LATEST names, `protect`, what a live writer
        committed (its lease lists it), and parents of versions kept. Under the store lock."""
        with self.locked():
            versions = self.versions(shard)
            kept = {v.version for v in versions[-keep:]} | set(protect) | leased_versions(self.root, shard)
            kept |= {v for k, v in self.pointers().items() if k == shard}
            kept |= {v.manifest.get("parent") for v in versions if v.version in kept} - {None}
            dropped = []
            for v in versions:
                if v.version in kept:
                    continue
                for name in [*v.manifest["files"], MANIFEST]:  # only what this store wrote
                    (v.path / name).unlink(missing_ok=True)
                try:
                    v.path.rmdir()
                except OSError:
                    pass  # someone else's file lives there: leave the folder
                dropped.append(v.version)
            return dropped


_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_HELD: dict[str, list] = {}  # root -> [depth, open lock file], changed only by the thread holding its RLock


@contextmanager
def _store_lock(root: Path) -> Iterator[None]:
    key = str(root.resolve())
    rlock = _PROCESS_LOCKS.setdefault(key, threading.RLock())
    with rlock:
        held = _HELD.setdefault(key, [0, None])
        if held[0] == 0:
            root.mkdir(parents=True, exist_ok=True)
            f = open(root / ".lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX)
            except BaseException:
                f.close()
                raise
            held[1] = f
        held[0] += 1
        try:
            yield
        finally:
            held[0] -= 1
            if held[0] == 0:
                held[1].close()  # releases the flock
                held[1] = None


_OWN_LEASES: set[str] = set()  # lease files of this process (where flock is emulated per process, e.g. NFS)


class Lease:
    """A writer's lease: .staging/<token>.lease, flocked for the writer's life. Its staging folders are
    .staging/<kind>.<token>.<n>; the lease file lists (shard version, a line each) what the writer committed."""

    def __init__(self, path: Path, f):
        self.path, self.file, self.count = path, f, 0
        self.token = path.name.removesuffix(".lease")

    @classmethod
    def take(cls, store: PreparedStore) -> "Lease":
        staging_root = store.root / ".staging"
        with store.locked():  # a cleaner never sees the file before it is locked
            staging_root.mkdir(parents=True, exist_ok=True)
            path = staging_root / f"w{secrets.token_hex(8)}.lease"
            f = open(path, "a+")
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _OWN_LEASES.add(str(path))
        return cls(path, f)

    def staging_path(self, kind: str) -> Path:
        self.count += 1
        return self.path.parent / f"{kind}.{self.token}.{self.count}"

    def protect(self, shard: int, version: str) -> None:
        self.file.write(f"{shard} {version}\n")
        self.file.flush()

    def release(self, store: PreparedStore) -> None:
        with store.locked():
            for p in self.path.parent.glob(f"*.{self.token}.*"):
                shutil.rmtree(p, ignore_errors=True)
            self.path.unlink(missing_ok=True)
            _OWN_LEASES.discard(str(self.path))
            self.file.close()


def _lease_free(path: Path) -> bool:
    """Whether nobody holds the lease (it may then be removed with its staging); a lock that cannot be judged
    (a file system without flock) counts as held: nothing in progress is ever removed."""
    if str(path) in _OWN_LEASES:
        return False
    try:
        fd = os.open(path, os.O_RDWR)  # never O_CREAT: a lease removed meanwhile stays removed
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def leased_versions(root: Path, shard: int) -> set[str]:
    """The versions of `shard` that live writers committed (listed in their held leases)."""
    found = set()
    for path in (root / ".staging").glob("w*.lease"):
        if _lease_free(path):
            continue
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        found |= {parts[1] for parts in (line.split() for line in lines) if len(parts) == 2 and parts[0] == str(shard)}
    return found


def _clean(staging_root: Path) -> list[Path]:
    """(Under the store lock.) Free leases go with their staging folders; a leased staging folder whose lease
    file is gone is a leftover; pid-named folders of earlier versions are judged by their process."""
    removed = []
    free = {p.name.removesuffix(".lease") for p in staging_root.glob("w*.lease") if _lease_free(p)}
    held = {p.name.removesuffix(".lease") for p in staging_root.glob("w*.lease")} - free
    for p in sorted(staging_root.iterdir()):
        parts = p.name.split(".")
        if len(parts) != 3 or parts[0] not in KINDS:
            continue  # not ours (leases are handled below)
        if parts[1].startswith("w") and parts[2].isascii() and parts[2].isdigit():
            gone = parts[1] not in held
        elif parts[1].isascii() and parts[1].isdigit():  # <kind>.<pid>.<token>: an earlier version's staging
            gone = int(parts[1]) == os.getpid() or not _alive(int(parts[1]))
        else:
            continue
        if gone:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    for token in free:
        (staging_root / f"{token}.lease").unlink(missing_ok=True)
    return removed


def _move_leftover_aside(final: Path) -> None:
    """A pruned version's folder that someone's file kept alive (no manifest) would block the rename that commits
    the same version again: it moves beside it, as <version>.foreign-<token>, with the user's files intact."""
    if final.is_dir() and not (final / MANIFEST).is_file():
        try:
            os.rename(final, final.with_name(f"{final.name}.foreign-{secrets.token_hex(4)}"))
        except FileNotFoundError:
            pass  # another process moved it first


def describe_files(folder: Path, names: list[str]) -> dict:
    out = {}
    for name in names:
        h = read_header(folder / name)
        out[name] = {"size": (folder / name).stat().st_size, "shape": list(h.shape), "dtype": str(h.dtype),
                     "sha256": file_sha256(folder / name)}
    return out


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    """The sha256 of a file's bytes, read in blocks of 4 MiB (memory stays one block for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def verify_content(v: ShardVersion) -> None:
    """Every listed file has the bytes its manifest's sha256 records: a file overwritten at the same size (NaN
    spectra, another array of the same shape) is refused by name. Manifests from before the digests: sizes only."""
    for name, want in v.manifest["files"].items():
        if "sha256" in want and file_sha256(v.path / name) != want["sha256"]:
            raise DataError(f"{v.path / name}: its content changed since shard {v.shard} version {v.version} was "
                            "committed (sha256 differs from the manifest); re-prepare the shard")


def verify(v: ShardVersion) -> None:
    """Each listed file exists with its recorded size and shape, and every array has the manifest's row count."""
    files = v.manifest.get("files")
    if not isinstance(files, dict) or "rows" not in v.manifest:
        raise DataError(f"{v.path / MANIFEST}: not a prepared-store manifest")
    for name, want in files.items():
        path = v.path / name
        if not path.is_file():
            raise DataError(f"{path}: missing from shard {v.shard} version {v.version}")
        size = path.stat().st_size
        if size != want["size"]:
            raise DataError(f"{path}: {size} bytes, the manifest of shard {v.shard} records {want['size']}")
        shape = read_header(path).shape
        if list(shape) != want["shape"] or shape[0] != v.manifest["rows"]:
            raise DataError(f"{path}: shape {shape} does not match the manifest "
                            f"({want['shape']}, {v.manifest['rows']} rows)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
