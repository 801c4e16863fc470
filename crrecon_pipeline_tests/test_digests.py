"""Content digests: new versions record BLAKE3 under a key naming it; a store written with SHA-256 manifests (as
before BLAKE3) still loads, verifies and keeps its version ids; a changed file is caught under either algorithm."""

import hashlib

import blake3
import numpy as np
import pytest

from crrecon_pipeline.data import digest
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.store import PreparedStore, version_id
from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.errors import DataError


def nan_over(path):
    """The file's array overwritten in place with NaN: same size, same shape, other bytes."""
    data = np.load(path)
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - data.nbytes)
        f.write(np.full_like(data, np.nan).tobytes())


def test_new_versions_record_blake3_of_every_file(tmp_path, raw_dir):
    preprocess(raw_dir, tmp_path / "prepared")
    v = PreparedStore(tmp_path / "prepared").latest(0)
    for source in v.manifest["sources"]:  # the raw files: what `b3sum <file>` prints
        assert "sha256" not in source
        with open(source["path"], "rb") as f:
            assert source["blake3"] == blake3.blake3(f.read()).hexdigest()
    for name, entry in v.manifest["files"].items():
        assert entry["blake3"] == blake3.blake3(v.file(name).read_bytes()).hexdigest() and "sha256" not in entry
    scan = v.manifest["raw_scan"]
    assert scan["structures_blake3"] == v.manifest["sources"][0]["blake3"] and "structures_sha256" not in scan


def test_sha256_store_loads_verifies_and_keeps_its_ids(tmp_path, raw_dir, monkeypatch):
    out = tmp_path / "prepared"
    monkeypatch.setattr(digest, "ALGORITHM", "sha256")  # what every preparation wrote before BLAKE3
    old = preprocess(raw_dir, out)
    monkeypatch.undo()
    store = PreparedStore(out)
    filtered = store.open(0, store.latest(0).manifest["parent"])
    sources = filtered.manifest["sources"]
    assert all("blake3" not in s and s["sha256"] == hashlib.sha256(open(s["path"], "rb").read()).hexdigest()
               for s in sources)
    identity = {"kind": "filtered", "shard": 0, "settings": PrepareSettings().identity(),
                "sources": [{k: s[k] for k in ("name", "size", "sha256")} for s in sources]}
    assert filtered.version == version_id("filtered", identity)  # the id the SHA-256 code gave this input
    assert all("sha256" in e and "blake3" not in e for e in filtered.manifest["files"].values())

    prepared = load_prepared(out)  # verified with SHA-256, the algorithm its manifests name
    assert len(prepared.bayer) == old["kept_rows"]
    assert {str(k): v for k, v in store.pointers().items()} == old["versions"]

    new = preprocess(raw_dir, out)  # the same input again: a BLAKE3 version beside the SHA-256 one
    assert new["versions"] != old["versions"] and store.latest(0).manifest["sources"][0].get("blake3")
    assert all((out / f"shard_{k}" / v).is_dir() for k, v in old["versions"].items())  # kept, still named so
    assert store.open(0, old["versions"]["0"]).version == old["versions"]["0"]


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_changed_file_is_caught_under_either_algorithm(tmp_path, raw_dir, monkeypatch, algorithm):
    out = tmp_path / "prepared"
    monkeypatch.setattr(digest, "ALGORITHM", algorithm)
    preprocess(raw_dir, out)
    monkeypatch.undo()
    v = PreparedStore(out).latest(1)
    assert algorithm in v.manifest["files"]["bayer.npy"]
    load_prepared(out)
    nan_over(v.file("bayer.npy"))
    with pytest.raises(DataError, match=f"bayer.npy: its content changed.*shard 1.*{algorithm} differs"):
        load_prepared(out)


def test_entry_digest_names_the_algorithm():
    assert digest.entry_digest({"size": 3, "blake3": "ab"}) == ("blake3", "ab")
    assert digest.entry_digest({"size": 3, "sha256": "cd"}) == ("sha256", "cd")
    assert digest.entry_digest({"size": 3}) is None  # manifests from before the digests: sizes only
    with pytest.raises(ValueError, match="unknown digest algorithm 'md5'"):
        digest.new_hasher("md5")


def test_file_digest_matches_the_libraries_in_any_block_size(tmp_path):
    path = tmp_path / "bytes.bin"
    data = np.random.default_rng(0).integers(0, 256, (1 << 23) + 12345, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    for block in (1 << 16, 1 << 23, 1 << 24):  # one core, and threaded BLAKE3
        assert digest.file_digest(path, "blake3", block) == blake3.blake3(data).hexdigest()
        assert digest.file_digest(path, "sha256", block) == hashlib.sha256(data).hexdigest()
