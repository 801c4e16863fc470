"""Bad input and faults: each defect a hostile or careless user found, with the test that keeps it fixed.
Every `crrecon` refusal is one line on stderr and exit code 2, never a traceback, never a temporary file left."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from crrecon_pipeline.cli import main
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.errors import DataError

from .helpers import TINY, write_raw_pair


def crrecon(capsys, *args) -> tuple[int, str, str]:
    """`crrecon ARGS` in process: (exit code, stdout, stderr); argparse's own exits count as exit codes."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc: int, err: str, *names: str, progress: bool = False) -> None:
    """Exit 2 and one line (after the progress lines a command printed before it failed, when `progress`)."""
    lines = err.strip().splitlines()
    lines = [line for line in lines if "error:" in line] if progress else lines
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err and "error:" in lines[0], (rc, err)
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


def test_raw_files_changed_after_their_assets_show_red_on_the_refiltered_shard(tmp_path, raw_dir):
    """The raw assets are materialized on good files; the files then change (a flipped export) and only
    filtered_bayer is re-materialized: its own check names the failed raw check and the file, so the UI no longer
    shows every check green on a version whose manifest records a failure, and rotated_bayer does not run."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.prepared import filtered_bayer, rotated_bayer
    from crrecon_pipeline.defs.assets.raw import raw_shard

    from .dagster_helpers import check_results, new_instance, resources

    raw = tmp_path / "raw"
    structures, spectra = np.load(raw_dir / "binary_dataset_128_0.npy"), np.load(raw_dir / "spectra_latest_0.npy")
    write_raw_pair(raw, 0, structures, spectra)
    instance = new_instance(["0"])
    res = resources(tmp_path / "home", raw_dir=raw)
    first = dg.materialize([raw_shard, filtered_bayer, rotated_bayer], partition_key="0", instance=instance,
                           resources=res)
    assert all(check_results(first).values())
    write_raw_pair(raw, 0, structures, -spectra)  # the same shard, now stored positive
    again = dg.materialize([filtered_bayer, rotated_bayer], partition_key="0", instance=instance, resources=res,
                           raise_on_error=False)
    evaluations = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                   for e in again.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    red = evaluations["check_raw_data_passed"]
    assert red.passed is False
    assert "check_sign_convention" in red.description and "spectra_latest_0.npy" in red.description
    assert not again.asset_materializations_for_node("rotated_bayer")


def test_a_version_committed_before_the_check_existed_still_reports_it(flipped_store):
    """Stores written by an earlier release have no check_raw_data_passed record: it is derived from the raw
    checks the manifest holds, so filtered_bayer still yields every check it declares."""
    from crrecon_pipeline.data.checks import recorded_checks

    _, good, bad = flipped_store
    for version, passed in ((good, True), (bad, False)):
        old = dict(version.manifest, checks={k: v for k, v in version.manifest["checks"].items()
                                             if k != "check_raw_data_passed"})
        derived = recorded_checks(old)["check_raw_data_passed"]
        assert derived.passed is passed
        assert derived.to_json() == version.manifest["checks"]["check_raw_data_passed"]


# ---------------------------------------------------------------------------------------------- item 7

class FullDiskFile:
    """A file on a disk that fills after `room` bytes: writes fail with ENOSPC, and so does the flush on close
    (buffered bytes), as a real full disk does."""

    def __init__(self, real, room: int):
        self._real, self._room, self._failed = real, room, False

    def write(self, data) -> int:
        n = memoryview(data).nbytes if not isinstance(data, str) else len(data.encode())
        if n > self._room:
            self._failed = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._real.write(data)

    def close(self) -> None:
        self._real.close()
        if self._failed and not getattr(self, "_closed_once", False):
            self._closed_once = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):
        return getattr(self._real, name)


def fill_disk(monkeypatch, folder: Path, room: int = 0) -> None:
    """Every file opened through os.fdopen under `folder` (the atomic writers' temporaries) sees a full disk."""
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        where = os.readlink(f"/proc/self/fd/{fd}")
        return FullDiskFile(f, room) if where.startswith(str(folder)) else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def no_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, prepared_dir) -> Path:
    from crrecon_pipeline.train.config import load_config
    from crrecon_pipeline.train.entry import train_from_config

    out = tmp_path_factory.mktemp("run_tiny")
    train_from_config(load_config("configs/quick.yaml", TINY + ["training.epochs=1"]), out, prepared_dir=prepared_dir,
                      device="cpu", log=lambda m: None)
    return out / "best.pt"


def test_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, capsys, monkeypatch, raw_dir,
                                                                        prepared_dir, checkpoint):
    fill_disk(monkeypatch, tmp_path, room=1000)
    rc, _, err = crrecon(capsys, "predict", "--checkpoint", checkpoint, "--structures",
                         raw_dir / "binary_dataset_128_0.npy", "--out", tmp_path / "pred.npy", "--device", "cpu")
    assert_refused(rc, err, "pred.npy", "No space left")
    rc, _, err = crrecon(capsys, "simulate", "--out", tmp_path / "sim", "--rows", 20, "--shards", 1)
    assert_refused(rc, err, "binary_dataset_128_0.npy", "No space left")
    rc, _, err = crrecon(capsys, "train", "--config", "configs/quick.yaml", "--prepared", prepared_dir, "--out",
                         tmp_path / "run", *tiny_sets(), "--set", "training.epochs=1", "--device", "cpu")
    assert_refused(rc, err, "best.pt", "No space left", progress=True)
    assert no_temporaries(tmp_path) == []
    assert not (tmp_path / "pred.npy").exists() and not (tmp_path / "run" / "best.pt").exists()


# ---------------------------------------------------------------------------------------------- item 9

REQUIRED = {"simulate": ["--out", "{tmp}/sim"], "preprocess": ["--raw", "{tmp}/none", "--out", "{tmp}/p"],
            "design": ["--checkpoint", "{tmp}/none.pt", "--prepared", "{tmp}/none", "--out", "{tmp}/d"],
            "import": ["--config", "{tmp}/none.yaml", "--out", "{tmp}/i"], "control": ["{tmp}/run"]}


def numeric_flags() -> list[tuple[str, str]]:
    """(subcommand, --flag) for every flag whose value is a number, read from the parser itself."""
    from crrecon_pipeline.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    found = []
    for name, parser in sub.choices.items():
        parser.format_help()  # the settings flags are added on first use
        for action in parser._actions:
            kind = getattr(action.type, "__name__", None)
            if kind in ("int", "float") and action.option_strings:
                found.append((name, action.option_strings[0]))
    return found


def test_every_numeric_flag_refuses_out_of_range_values_in_one_line(tmp_path, capsys):
    flags = numeric_flags()
    assert {("simulate", "--chunk"), ("simulate", "--unfinished-fraction"), ("design", "--blur-sigma-px"),
            ("preprocess", "--bins"), ("simulate", "--period-um"), ("import", "--out-len")} <= set(flags)
    for command, flag in flags:
        for value in ("0", "-1", "nan", "inf", "1e30"):
            args = [a.format(tmp=tmp_path) for a in REQUIRED.get(command, [])]
            rc, out, err = crrecon(capsys, command, *args, flag, value)
            lines = err.strip().splitlines()
            assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (command, flag, value, err)
            if value in ("nan", "inf", "1e30"):
                assert flag in lines[0], (command, flag, value, lines[0])
    assert not list(tmp_path.rglob("*.npy")) and not (tmp_path / "sim" / "simulation.json").exists()


def test_core_settings_refuse_what_the_flags_refuse():
    from crrecon_pipeline.design.optimize import DesignSettings
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.physics.structures import StructureParams

    with pytest.raises(ConfigError, match="blur_sigma_px"):
        DesignSettings(blur_sigma_px=float("nan"))
    with pytest.raises(ConfigError, match="unfinished_fraction"):
        StructureParams(unfinished_fraction=2.0)


# ---------------------------------------------------------------------------------------------- item 8

def test_huge_header_shape_is_one_line(tmp_path, capsys, raw_dir):
    from crrecon_pipeline.data.npyio import _header_bytes

    raw = tmp_path / "raw"
    write_raw_pair(raw, 0, np.load(raw_dir / "binary_dataset_128_0.npy")[:200],
                   np.load(raw_dir / "spectra_latest_0.npy")[:200])
    spectra = raw / "spectra_latest_0.npy"
    spectra.write_bytes(_header_bytes((200, 3, 2**70), np.dtype(np.float32)) + b"\0" * 4096)
    rc, _, err = crrecon(capsys, "preprocess", "--raw", raw, "--out", tmp_path / "out")
    assert_refused(rc, err, "spectra_latest_0.npy", "truncated")


@pytest.mark.parametrize("state", [{"model": {}, "config": "abc"}, {"model": "nope", "config": {}},
                                   {"model": {"x": 5}, "config": {"model": {"name": "cnn_field"}}},
                                   {"model": {"x": "tensor"}}, "wrong weights"])
def test_malformed_checkpoints_are_one_line(tmp_path, capsys, state, checkpoint, raw_dir, prepared_dir):
    import torch

    if state == "wrong weights":  # a real config, weights of another model
        real = torch.load(checkpoint, weights_only=True)
        state = {"model": {"x": torch.ones(3)}, "config": real["config"], "format": real["format"]}
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    rc, _, err = crrecon(capsys, "predict", "--checkpoint", path, "--structures", raw_dir / "binary_dataset_128_0.npy",
                         "--out", tmp_path / "pred.npy", "--device", "cpu")
    assert_refused(rc, err, "bad.pt")
    rc, _, err = crrecon(capsys, "train", "--config", "configs/quick.yaml", "--prepared", prepared_dir, "--out",
                         tmp_path / "run", *tiny_sets(), "--init-weights", path, "--device", "cpu")
    assert_refused(rc, err, "bad.pt", progress=True)
    assert not (tmp_path / "pred.npy").exists()


@pytest.mark.parametrize("record", [{"kind": "epoch", "epoch": 1}, {"kind": "epoch", "epoch": "one", "epochs": 2,
                                                                   "train_loss": 1.0, "val_loss": 1.0}])
def test_analyze_a_record_missing_keys_is_one_line(tmp_path, capsys, record):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps(record) + "\n")
    rc, _, err = crrecon(capsys, "analyze", "--log", log)
    assert_refused(rc, err, "metrics.jsonl", "line 1")


@pytest.mark.parametrize("key", ["²", "٣", "1²"])
def test_non_ascii_digits_are_no_shard_index(tmp_path, key):
    from crrecon_pipeline.data.rawfiles import discover_shards, parse_shard_key

    with pytest.raises(DataError, match="not a shard index"):
        parse_shard_key(key)
    write_raw_pair(tmp_path, 0, np.zeros((2, 1, 128, 128), np.uint8), np.zeros((2, 3, 301), np.float32))
    for f in list(tmp_path.iterdir()):
        f.rename(f.with_name(f.name.replace("_0.npy", f"_{key}.npy")))
    with pytest.raises(DataError, match="no raw shards"):
        discover_shards(tmp_path)
    (tmp_path / "store" / ".staging" / f"filtered.{key}.abcd").mkdir(parents=True)
    assert PreparedStore(tmp_path / "store").clean_staging() == []


# ---------------------------------------------------------------------------------------------- item 11

def test_duplicate_yaml_keys_are_refused_by_name(tmp_path):
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.train.config import load_config

    path = tmp_path / "dup.yaml"
    path.write_text("data:\n  batch_size: 32\n  batch_size: 64\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: data\.batch_size is given twice \(line 3\)"):
        load_config(path)
    path.write_text("training:\n  epochs: 3\ntraining:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="training is given twice"):
        load_config(path)
    path.write_text("data:\n  batch_size: 32\ntraining:\n  batch_size: 64\n")  # same name, two sections: fine
    with pytest.raises(ConfigError, match="training.batch_size"):  # refused as an unknown key, not as a duplicate
        load_config(path)
    assert load_config("configs/quick.yaml").data.batch_size > 0


# ---------------------------------------------------------------------------------------------- item 10

class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_checkpoint_refusal_says_it_will_not_be_unpickled(tmp_path, capsys, raw_dir):
    import torch

    path = tmp_path / "pickled.pt"
    torch.save({"model": Payload(), "config": {}}, path)
    rc, out, err = crrecon(capsys, "predict", "--checkpoint", path, "--structures",
                           raw_dir / "binary_dataset_128_0.npy", "--out", tmp_path / "p.npy", "--device", "cpu")
    assert_refused(rc, err, "pickled.pt", "not a plain checkpoint", "will not unpickle")
    assert "weights_only" not in err and "False" not in err and "unpickled!" not in out + err


# ---------------------------------------------------------------------------------------------- item 6

@pytest.mark.parametrize("name", ["metrics.jsonl", "last.pt", "outputs", "epoch_0002.pt", "config.json"])
def test_log_file_may_not_be_one_of_the_runs_own_files(name):
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.train.config import load_config

    with pytest.raises(ConfigError, match=rf"output(\.log_file)?: .*{name}"):
        load_config("configs/quick.yaml", [f"output.log_file={name}"])
    assert load_config("configs/quick.yaml", ["output.log_file=logs/train.txt"]).output.log_file == "logs/train.txt"


def test_log_file_through_a_symlink_out_of_the_run_folder_is_refused(tmp_path, capsys, prepared_dir):
    outside, run = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    run.mkdir()
    (run / "logs").symlink_to(outside)
    rc, _, err = crrecon(capsys, "train", "--config", "configs/quick.yaml", "--prepared", prepared_dir, "--out", run,
                         *tiny_sets(), "--set", "output.log_file=logs/train.txt", "--device", "cpu")
    assert_refused(rc, err, "output.log_file", "symlink", progress=True)
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------------------------------------- item 5

def test_resume_on_a_changed_training_set_is_refused_by_name(tmp_path, capsys, checkpoint, flipped_store):
    import shutil

    out, _, _ = flipped_store
    rotated = next(v for v in PreparedStore(out).versions(0) if v.kind == "rotated")
    run = shutil.copytree(checkpoint.parent, tmp_path / "run")
    ts = tmp_path / "ts.json"
    ts.write_text(json.dumps({"0": rotated.version}))
    rc, _, err = crrecon(capsys, "train", "--config", "configs/quick.yaml", "--prepared", out, "--out", run,
                         "--training-set", ts, *tiny_sets(), "--set", "training.epochs=2", "--resume", "auto",
                         "--device", "cpu")
    assert_refused(rc, err, "last.pt", "training set differs", "shard 1", progress=True)
    assert (run / "metrics.json").read_text() == (checkpoint.parent / "metrics.json").read_text()


# ---------------------------------------------------------------------------------------------- item 2

def test_a_foreign_file_in_a_pruned_version_never_blocks_the_store(tmp_path):
    from crrecon_pipeline.data.prepare import prepare_shard

    raw, out = tmp_path / "raw", tmp_path / "prepared"

    def prepare(seed: int):
        rng = np.random.default_rng(seed)
        write_raw_pair(raw, 0, (rng.random((20, 1, 128, 128)) < 0.3).astype(np.uint8),
                       -rng.random((20, 3, 301), np.float32))
        return prepare_shard(raw, 0, out)

    first = prepare(0)
    (first.path / "notes.txt").write_text("a user's note")
    for seed in range(1, 5):  # first is pruned; its folder stays for the note
        prepare(seed)
    assert (first.path / "notes.txt").exists() and not (first.path / "manifest.json").exists()
    again = prepare(0)  # the same input again: the same version name
    assert again.version == first.version and PreparedStore(out).latest(0).version == first.version
    notes = [p for p in (out / "shard_0").rglob("notes.txt")]
    assert [p.read_text() for p in notes] == ["a user's note"] and notes[0].parent.name.startswith(first.version)


# ---------------------------------------------------------------------------------------------- item 4

@pytest.mark.parametrize("tamper", ["nan bayer", "rotated over structures"])
def test_load_prepared_verifies_content(tmp_path, raw_dir, tamper):
    from crrecon_pipeline.data.prepared import load_prepared

    out = tmp_path / "prepared"
    preprocess(raw_dir, out)
    load_prepared(out)  # untouched: loads
    v = PreparedStore(out).latest(1)
    if tamper == "nan bayer":
        target = v.file("bayer.npy")
        data = np.load(target)
        data[:] = np.nan
        with open(target, "r+b") as f:  # in place, same size and shape
            f.seek(len(target.read_bytes()) - data.nbytes)
            f.write(data.tobytes())
    else:
        target = v.file("structures.npy")
        with open(target, "r+b") as f:
            f.write(v.file("structures_rotated.npy").read_bytes())
    with pytest.raises(DataError, match=f"{target.name}.*content changed.*shard 1"):
        load_prepared(out)


# ---------------------------------------------------------------------------------------------- item 12 (decided)

def test_nan_rows_above_the_limit_warn_on_stderr(tmp_path, capsys, raw_dir):
    raw = tmp_path / "raw"
    spectra = np.load(raw_dir / "spectra_latest_0.npy")
    spectra[::10] = np.nan  # 10 % of the rows
    write_raw_pair(raw, 0, np.load(raw_dir / "binary_dataset_128_0.npy"), spectra)
    rc, out, err = crrecon(capsys, "preprocess", "--raw", raw, "--out", tmp_path / "out")
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["dropped_nonfinite"] == 30
    assert "warning: shard 0: check_finite_spectra failed: 30 of 300 rows" in err


def test_analyze_a_file_that_is_no_log_is_refused(tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("metrics.jsonl", "train_log.txt"):
        (tmp_path / name).write_bytes(noise)
        rc, _, err = crrecon(capsys, "analyze", "--log", tmp_path / name)
        assert_refused(rc, err, name, "not a")
    (tmp_path / "started.txt").write_text("starting\n")  # a text log with no epoch yet: 0 epochs, not an error
    rc, out, _ = crrecon(capsys, "analyze", "--log", tmp_path / "started.txt", "--json")
    assert rc == 0 and json.loads(out)["epochs_completed"] == 0


# ---------------------------------------------------------------------------------------------- Git LFS pointers

LFS_TEXT = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 1966080128\n".format("ab" * 32)


def test_a_git_lfs_pointer_is_refused_naming_the_file_and_git_lfs_pull(tmp_path, capsys, raw_dir):
    """A clone made without `git lfs pull` holds pointer files where the shards belong: one line saying so."""
    raw = tmp_path / "raw"
    write_raw_pair(raw, 0, np.load(raw_dir / "binary_dataset_128_0.npy")[:50],
                   np.load(raw_dir / "spectra_latest_0.npy")[:50])
    (raw / "binary_dataset_128_0.npy").write_text(LFS_TEXT)
    rc, _, err = crrecon(capsys, "preprocess", "--raw", raw, "--out", tmp_path / "out")
    assert_refused(rc, err, "binary_dataset_128_0.npy", "Git LFS pointer", "git lfs pull")
    assert "magic" not in err


def test_a_git_lfs_pointer_checkpoint_is_refused_naming_git_lfs_pull(tmp_path, capsys, raw_dir):
    (tmp_path / "cnn_xattn_best.pt").write_text(LFS_TEXT)
    np.save(tmp_path / "s.npy", np.load(raw_dir / "binary_dataset_128_0.npy")[:2])
    rc, _, err = crrecon(capsys, "predict", "--checkpoint", tmp_path / "cnn_xattn_best.pt", "--structures",
                         tmp_path / "s.npy", "--out", tmp_path / "p.npy")
    assert_refused(rc, err, "cnn_xattn_best.pt", "Git LFS pointer", "git lfs pull")
