"""Bad input and faults (issue #20): each defect a hostile or careless user found, with the test that keeps it fixed.
Every `crrecon` refusal is one line on stderr and exit code 2, never a traceback, never a temporary file left."""

import json

import numpy as np
import pytest

from crrecon_pipeline.cli import main
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.errors import DataError

from .conftest import write_raw_pair
from .test_training import TINY


def crrecon(capsys, *args) -> tuple[int, str, str]:
    """`crrecon ARGS` in process: (exit code, stdout, stderr); argparse's own exits count as exit codes."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc: int, err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    for name in names:
        assert name in lines[0], (name, lines[0])


def tiny_sets() -> list[str]:
    return sum((["--set", s] for s in TINY), [])


@pytest.fixture(scope="module")
def flipped_store(tmp_path_factory, raw_dir):
    """A store whose shard 0 is good and whose shard 1 (positive spectra) committed a filtered version with a
    failed check_sign_convention (`crrecon preprocess` failed on it, LATEST untouched)."""
    raw = tmp_path_factory.mktemp("raw_flipped")
    for k in (0, 1):
        sp = np.load(raw_dir / f"spectra_latest_{k}.npy")
        write_raw_pair(raw, k, np.load(raw_dir / f"binary_dataset_128_{k}.npy"), sp if k == 0 else -sp)
    out = tmp_path_factory.mktemp("store_flipped")
    with pytest.raises(DataError, match="check_sign_convention"):
        preprocess(raw, out)
    store = PreparedStore(out)
    bad = next(v for v in store.versions(1) if v.manifest["checks"]["check_sign_convention"]["passed"] is False)
    good = store.versions(0)[0]
    return out, good, bad


# ---------------------------------------------------------------------------------------------- item 1 (medium)

def test_pinned_version_with_failed_check_is_refused(tmp_path, capsys, flipped_store):
    out, good, bad = flipped_store
    ts = tmp_path / "ts.json"
    ts.write_text(json.dumps({"0": good.version, "1": bad.version}))
    rc, stdout, err = crrecon(capsys, "train", "--config", "configs/quick.yaml", "--prepared", out, "--out",
                              tmp_path / "run", "--training-set", ts, "--set", "data.augment_180=false",
                              *tiny_sets(), "--device", "cpu")
    assert_refused(rc, err, "shard 1", bad.version, "check_sign_convention")
    assert stdout == "" and not (tmp_path / "run" / "last.pt").exists()


# ---------------------------------------------------------------------------------------------- item 3

def test_dagster_leaves_out_a_version_whose_manifest_records_a_failed_check(tmp_path, flipped_store):
    from crrecon_pipeline.defs.assets import training

    out, good, bad = flipped_store
    home = tmp_path / "home"
    home.mkdir()
    (home / "prepared").symlink_to(out)
    split = getattr(training, "_manifest_refusals", None)
    assert split is not None, "trained_model has no way to leave a refused version out"
    kept, refused = split(training.CrreconPaths(home=str(home)), {0: good.version, 1: bad.version})
    assert kept == {0: good.version}
    assert list(refused) == ["1"] and "check_sign_convention" in refused["1"] and bad.version in refused["1"]
