"""The prepared store: immutable, versioned shard data, each version a folder with a manifest, committed by one
atomic rename.

    <root>/shard_<k>/<version>/manifest.json + the arrays it lists     a committed version: never changed again
    <root>/LATEST.json      {shard: version}: the newest version of each shard whose blocking checks passed
    <root>/.staging/<version>.<pid>.<token>/                            work in progress of one process

A version's name is its kind and a digest of what defines its content (the source files' sha256, the settings, the
parent version), so preparing the same input twice, even concurrently, yields one version: the second rename
finds the folder taken and its staging copy is dropped. A kill at any instant leaves every committed version and
LATEST.json as they were (it is replaced in one rename, under a lock); its staging folder is removed by the next
writer. The store only ever deletes what it wrote:
staging folders, and files listed in the manifest of a version it prunes (a foreign file keeps its folder alive;
should that version be committed again, the folder moves aside to <version>.foreign-<token>, the file in it).
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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from crrecon_pipeline.data.npyio import read_header, write_text_atomic
from crrecon_pipeline.errors import DataError

MANIFEST = "manifest.json"
LATEST = "LATEST.json"
FORMAT = 1
KEEP_VERSIONS = 3
KINDS = ("filtered", "rotated")
VERSION_RE = re.compile(r"^(filtered|rotated)-[0-9a-f]{16}$")
_ACTIVE: set[str] = set()  # staging folders this process is writing right now


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
    def stage(self, kind: str) -> Iterator[Path]:
        """A fresh staging folder on the store's file system (so commit is one rename); removed on failure."""
        self.clean_staging()
        staging = self.root / ".staging" / f"{kind}.{os.getpid()}.{secrets.token_hex(4)}"
        _ACTIVE.add(str(staging))  # before it exists: another thread's clean_staging must never take it
        try:
            staging.mkdir(parents=True)
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            _ACTIVE.discard(str(staging))

    def commit(self, staging: Path, shard: int, version: str, manifest: dict, files: list[str],
               make_latest: bool) -> ShardVersion:
        """Write the manifest, then rename the staging folder into place (the single commit point)."""
        manifest = manifest | {"format": FORMAT, "shard": shard, "version": version, "committed_ns": time.time_ns(),
                               "files": describe_files(staging, files)}
        write_text_atomic(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _fsync_dir(staging)
        final = self.shard_dir(shard) / version
        final.parent.mkdir(parents=True, exist_ok=True)
        _move_leftover_aside(final)
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # the same content was committed first by someone else
        _fsync_dir(final.parent)
        committed = self.open(shard, version)
        if make_latest:
            self.set_latest(committed)
        self.prune(shard)
        return committed

    def set_latest(self, v: ShardVersion) -> None:
        self.update_pointers({v.shard: v.version})

    def update_pointers(self, versions: dict[int, str], replace: bool = False) -> None:
        """One atomic replacement of LATEST.json: merged with the current pointers (one shard's commit), or
        replacing them all (`crrecon preprocess`: the store then holds exactly that raw folder's shards)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent shard runs: no lost update
            current = {} if replace else self.pointers()
            merged = {str(k): v for k, v in sorted((current | versions).items())}
            write_text_atomic(self.root / LATEST, json.dumps(merged, indent=2) + "\n")

    def clean_staging(self) -> list[Path]:
        """Remove staging folders left by processes that are gone (or by this one, outside a stage() block)."""
        removed = []
        staging_root = self.root / ".staging"
        if not staging_root.is_dir():
            return removed
        for p in staging_root.iterdir():
            parts = p.name.split(".")
            ours = len(parts) == 3 and parts[0] in KINDS and parts[1].isascii() and parts[1].isdigit()
            if not ours or str(p) in _ACTIVE:
                continue  # not ours, or in progress here
            pid = int(parts[1])
            if pid == os.getpid() or not _alive(pid):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed

    def prune(self, shard: int, keep: int = KEEP_VERSIONS, protect: set[str] = frozenset()) -> list[str]:
        """Drop versions beyond the newest `keep`, except LATEST, `protect`, and parents of versions kept."""
        versions = self.versions(shard)
        latest = self.latest(shard)
        kept = {v.version for v in versions[-keep:]} | set(protect) | ({latest.version} if latest else set())
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
