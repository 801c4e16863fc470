"""Many writers at once, and files that change underneath: real `crrecon` processes (each in its own PID namespace
where `unshare` works, plain processes otherwise), paused at named points (crrecon_pipeline/settings.py: the
process stops itself with SIGSTOP) while another writer runs, then resumed with SIGCONT. No sleep decides an
interleaving: a test waits for the process to be stopped, however long that takes on a loaded machine."""

import json
import os
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from crrecon_pipeline.cli import main as cli_main
from crrecon_pipeline.data.npyio import _mkstemp_like_open, atomic_output, remove_stale_temps
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.store import PreparedStore

from .helpers import TINY, write_raw_pair

REPO = Path(__file__).resolve().parents[1]


@cache
def pid_namespaces() -> bool:
    """Whether `unshare --pid --fork --mount-proc` works here (root, or user namespaces allowed)."""
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start(*args, pause: str | None = None, pidns: bool = True) -> subprocess.Popen:
    """`crrecon ARGS` in its own PID namespace (as a pod would be) when possible; `pause`: CRRECON_TEST_PAUSE."""
    env = os.environ | {"CRRECON_TEST_PAUSE": pause or ""}
    cmd = [sys.executable, "-m", "crrecon_pipeline.cli", *map(str, args)]
    if pidns and pid_namespaces():  # sh stays PID 1, so crrecon (PID 2 in every namespace) can stop itself
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$@"; exit $?', "sh", *cmd]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tree(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += [c for c, parent in parents.items() if parent == p]
    return found


def wait_stopped(proc: subprocess.Popen, timeout: float = 900) -> int:
    """The pid of the process of `proc`'s tree that stopped itself at its pause point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _tree(proc.pid):
            try:
                if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "T":
                    return pid
            except (OSError, IndexError):
                pass
        if proc.poll() is not None:
            pytest.fail(f"ended (rc {proc.returncode}) before its pause point: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)  # polling for a state, not timing an interleaving
    pytest.fail("never reached its pause point")


def finish(proc: subprocess.Popen, stopped: int, *signals: int) -> tuple[int, str, str]:
    for sig in signals:
        os.kill(stopped, sig)
    os.kill(stopped, signal.SIGCONT)
    out, err = proc.communicate(timeout=900)
    return proc.returncode, out, err


def main(args: list) -> int:
    return cli_main([str(a) for a in args])


def cli(*args) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", *map(str, args)], cwd=REPO,
                       capture_output=True, text=True, env=os.environ | {"CRRECON_TEST_PAUSE": ""})
    return p.returncode, p.stdout, p.stderr


def raw_shard(folder: Path, shard: int, seed: int, rows: int = 24, finished: int | None = None) -> Path:
    """A raw shard of random rows; rows from `finished` on are unfinished (all-zero spectra)."""
    rng = np.random.default_rng(seed)
    spectra = -rng.random((rows, 3, 301), np.float32) * 0.5 - 0.01
    spectra[rows if finished is None else finished:] = 0
    write_raw_pair(folder, shard, (rng.random((rows, 1, 128, 128)) < 0.3).astype(np.uint8), spectra)
    return folder


def staging_folders(store: Path) -> list[str]:
    return sorted(p.name for p in (store / ".staging").iterdir() if p.is_dir()) if (store / ".staging").is_dir() else []


# ------------------------------------------------------------------------------------ the prepared store


def test_a_paused_writer_keeps_what_it_committed(tmp_path):
    """Concurrent preprocess never leaves LATEST naming a pruned version: the versions a live writer committed
    are leased (never pruned) while other writers commit and prune, and LATEST stays loadable."""
    store = tmp_path / "store"
    a = start("preprocess", "--raw", raw_shard(tmp_path / "a", 0, seed=1), "--out", store, pause="pointers")
    stopped = wait_stopped(a)  # A committed its filtered and rotated versions, LATEST not yet set
    mine = {v.version for v in PreparedStore(store).versions(0)}
    for seed in range(2, 6):  # four newer preparations: each commit prunes shard 0 beyond the newest three
        rc, _, err = cli("preprocess", "--raw", raw_shard(tmp_path / f"b{seed}", 0, seed=seed), "--out", store)
        assert rc == 0, err
    assert mine <= {v.version for v in PreparedStore(store).versions(0)}, "a live writer's versions were pruned"
    newest = PreparedStore(store).pointers()[0]
    rc, out, err = finish(a, stopped)
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["superseded"]  # A started first: it does not take LATEST back
    assert PreparedStore(store).pointers()[0] == newest
    assert load_prepared(store).training_set()["0"]["version"] == newest
    assert staging_folders(store) == []


def test_writers_in_two_pid_namespaces_leave_each_other_alone(tmp_path):
    """Two pods on one volume: the same PID in both namespaces, different shards. B's cleanup must not take A's
    staging folder (it judges A's lease, not a PID); both shards end in LATEST."""
    store = tmp_path / "store"
    a = start("preprocess", "--raw", raw_shard(tmp_path / "a", 0, seed=1), "--out", store, pause="commit")
    stopped = wait_stopped(a)  # A's filtered version is staged, not yet committed
    assert len(staging_folders(store)) == 1
    b = start("preprocess", "--raw", raw_shard(tmp_path / "b", 1, seed=2), "--out", store)
    _, err = b.communicate(timeout=900)
    assert b.returncode == 0, err
    assert len(staging_folders(store)) == 1, "B removed A's staging folder"
    rc, _, err = finish(a, stopped)
    assert rc == 0, err
    assert set(PreparedStore(store).pointers()) == {0, 1}  # B started after A: A's replacement keeps B's shard
    assert len(load_prepared(store).versions) == 2
    assert staging_folders(store) == []


def test_latest_only_moves_forward(tmp_path):
    """A preparation that read 30 finished rows, committing after a newer one that read 70, does not take LATEST
    back; it says so on stderr and exits 0."""
    raw, store = tmp_path / "raw", tmp_path / "store"
    raw_shard(raw, 0, seed=1, rows=100, finished=30)
    a = start("preprocess", "--raw", raw, "--out", store, pause="pointers")
    stopped = wait_stopped(a)
    raw_shard(raw, 0, seed=1, rows=100, finished=70)  # the sync rewrites the file with more finished rows
    rc, _, err = cli("preprocess", "--raw", raw, "--out", store)
    assert rc == 0, err
    rc, _, err = finish(a, stopped)
    assert rc == 0, err
    assert "LATEST keeps" in err and "started after this one" in err
    assert len(load_prepared(store)) == 70


def test_a_raw_file_truncated_during_preprocess_is_one_line(tmp_path):
    """What np.save does first when the sync rewrites a file: truncate it. No SIGBUS: one line naming the file,
    exit 2, staging removed; the next preparation sees the new content."""
    raw, store = tmp_path / "raw", tmp_path / "store"
    raw_shard(raw, 0, seed=1, rows=4100)  # two chunks of 4096 rows
    spectra = raw / "spectra_latest_0.npy"
    a = start("preprocess", "--raw", raw, "--out", store, pause="reading")
    stopped = wait_stopped(a)  # the first chunk read, the second not yet
    with open(spectra, "r+b") as f:
        f.truncate(4096)
    rc, _, err = finish(a, stopped)
    assert rc == 2, err
    assert err.count("\n") == 1 and "spectra_latest_0.npy: changed while being read" in err
    assert staging_folders(store) == []
    raw_shard(raw, 0, seed=3, rows=4100, finished=4000)
    rc, out, err = cli("preprocess", "--raw", raw, "--out", store)
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["kept_rows"] == 4000


def test_a_crashed_writers_staging_still_goes(tmp_path):
    """A writer killed with SIGKILL leaves a free lease: the next writer removes its staging folder."""
    raw, store = raw_shard(tmp_path / "raw", 0, seed=1), tmp_path / "store"
    a = start("preprocess", "--raw", raw, "--out", store, pause="commit")
    stopped = wait_stopped(a)
    assert len(staging_folders(store)) == 1
    os.kill(stopped, signal.SIGKILL)
    a.communicate(timeout=300)
    assert PreparedStore(store).clean_staging() and staging_folders(store) == []
    assert not list((store / ".staging").glob("*.lease"))


# ------------------------------------------------------------------------------------ run folders


def train_args(prepared_dir, out, *extra):
    sets = [x for item in TINY for x in ("--set", item)]
    return ["train", "--config", "configs/quick.yaml", *sets, "--prepared", prepared_dir, "--out", out,
            "--device", "cpu", *extra]


def test_a_run_folder_belongs_to_one_run(tmp_path, prepared_dir):
    run = tmp_path / "run"
    a = start(*train_args(prepared_dir, run), pause="claimed")
    stopped = wait_stopped(a)  # A holds the run folder's lease
    for extra in ([], ["--resume", "auto"]):
        rc, _, err = cli(*train_args(prepared_dir, run, *extra))
        assert rc == 2 and err.count("\n") == 1 and "another crrecon train is writing this run folder" in err
    rc, _, err = finish(a, stopped)
    assert rc == 0, err
    best = (run / "best.pt").read_bytes()
    rc, _, err = cli(*train_args(prepared_dir, run))  # a new run into a finished run's folder
    assert rc == 2 and "not empty and not a run to resume" in err and "--resume auto" in err
    assert (run / "best.pt").read_bytes() == best
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text("mine")
    for extra in ([], ["--resume", "auto"]):
        rc, _, err = cli(*train_args(prepared_dir, user, *extra))
        assert rc == 2 and "not empty and not a run to resume" in err, err
    assert (user / "config.json").read_text() == "mine"


def test_resume_auto_in_an_early_killed_run_starts_fresh(tmp_path):
    from crrecon_pipeline.train.config import load_config
    from crrecon_pipeline.train.runfolder import check_contents

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    (run / "train_log.txt").write_text("")
    config = load_config("configs/quick.yaml")
    check_contents(run, config, "auto")  # only this project's own early files: a fresh start
    with pytest.raises(ValueError, match="not empty"):
        check_contents(run, config, None)


# ------------------------------------------------------------------------------------ weights, temporaries, signals


@pytest.fixture(scope="module")
def checkpoint(prepared_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert main(train_args(prepared_dir, run, "--set", "training.epochs=1")) == 0
    return run / "best.pt"


def test_non_finite_weights_are_refused_before_any_work(checkpoint, prepared_dir, tmp_path, capsys):
    state = torch.load(checkpoint, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name].clone().fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    structures = tmp_path / "s.npy"
    np.save(structures, np.zeros((3, 1, 128, 128), np.uint8))
    assert main(["predict", "--checkpoint", bad, "--structures", structures, "--out", tmp_path / "p.npy"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err and not (tmp_path / "p.npy").exists()
    out = tmp_path / "run"
    assert main(train_args(prepared_dir, out, "--init-weights", bad)) == 2
    err = capsys.readouterr().err
    assert f"{bad}: its weights hold NaN" in err and not (out / "metrics.jsonl").exists()


def test_stale_temporaries_go_only_when_their_writer_is_gone(tmp_path):
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from crrecon_pipeline.data.npyio import atomic_output\n"
        f"with atomic_output({str(tmp_path / 'last.pt')!r}) as f:\n"
        "    f.write(b'half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")])
    assert killed.returncode == -signal.SIGKILL
    fd, held = _mkstemp_like_open(tmp_path / "best.pt")  # a writer at work (this process holds its lock)
    try:
        (tmp_path / ".notes.txt.tmp").write_text("a user's file, not our pattern")
        removed = remove_stale_temps(tmp_path)
        assert [p.name.startswith(".last.pt.") for p in removed] == [True]
        assert held.exists() and (tmp_path / ".notes.txt.tmp").exists()
    finally:
        os.close(fd)
        held.unlink()
    with atomic_output(tmp_path / "x.bin") as f:
        f.write(b"whole")
    assert (tmp_path / "x.bin").read_bytes() == b"whole"


def test_sigterm_on_predict_leaves_no_temporary(checkpoint, tmp_path):
    structures, out = tmp_path / "s.npy", tmp_path / "pred.npy"
    np.save(structures, np.zeros((3, 1, 128, 128), np.uint8))
    p = start("predict", "--checkpoint", checkpoint, "--structures", structures, "--out", out, "--device", "cpu",
              pause="predict", pidns=False)
    stopped = wait_stopped(p)
    assert any(n.name.startswith(".pred.npy.") for n in tmp_path.iterdir())
    rc, _, err = finish(p, stopped, signal.SIGTERM)
    assert rc == 143 and "terminated" in err
    assert sorted(n.name for n in tmp_path.iterdir()) == ["s.npy"]


def test_tensorboard_disk_full_is_one_line_naming_the_file(prepared_dir, tmp_path, capsys, monkeypatch):
    from tensorboard.summary.writer.record_writer import RecordWriter

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    assert main(train_args(prepared_dir, tmp_path / "run", "--set", "training.epochs=1")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("crrecon train: error:") and "No space left on device" in last
    assert "/tensorboard/train/events.out.tfevents" in last


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("can't start new thread")])
def test_resource_faults_are_one_line(exc, tmp_path, capsys, monkeypatch):
    import crrecon_pipeline.data.prepare as prepare

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(prepare, "preprocess", fail)
    raw = raw_shard(tmp_path / "raw", 0, seed=1)
    assert main(["preprocess", "--raw", raw, "--out", tmp_path / "store"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bad_options_and_variables_are_refused_by_name(checkpoint, prepared_dir, tmp_path, capsys, monkeypatch):
    assert main(train_args(prepared_dir, tmp_path / "a", "--set", "training.epochs=true")) == 2
    assert "training.epochs" in capsys.readouterr().err
    versions = load_prepared(prepared_dir).training_set()
    wrong = {k: {"version": v["version"], "rows": v["rows"] + 1} for k, v in versions.items()}
    (tmp_path / "set.json").write_text(json.dumps(wrong))
    assert main(train_args(prepared_dir, tmp_path / "b", "--training-set", tmp_path / "set.json")) == 2
    assert f"{tmp_path / 'set.json'}: shard" in capsys.readouterr().err
    structures = tmp_path / "s.npy"
    np.save(structures, np.zeros((2, 1, 128, 128), np.uint8))
    predict = ["predict", "--checkpoint", checkpoint, "--structures", structures, "--out", tmp_path / "p.npy"]
    monkeypatch.setenv("CRRECON_DEVICE", "gpu0")
    assert main(predict) == 2
    assert "CRRECON_DEVICE='gpu0'" in capsys.readouterr().err
    monkeypatch.setenv("CRRECON_DEVICE", "cuda:7")
    assert main(predict) == 2 and "cuda:7" in capsys.readouterr().err  # honoured: no such GPU here
    monkeypatch.setenv("CRRECON_DEVICE", "cpu")
    assert main(predict) == 0


def test_the_code_location_names_a_bad_variable():
    bad = {"CRRECON_RETRAIN_CRON": "every monday", "CRRECON_SIM_SHARDS": "two", "CRRECON_RETRAIN_PRESET": "nope",
           "CRRECON_EXECUTOR": "bogus", "CRRECON_SIM_ROWS_PER_SHARD": "-1", "CRRECON_DEVICE": "gpu",
           "CRRECON_SIM_SENSOR": "yes"}
    script = (
        "import json, os, sys\n"
        "from crrecon_pipeline.errors import ConfigError\n"
        "out = {}\n"
        f"for name, value in {bad!r}.items():\n"
        "    for m in [m for m in sys.modules if m.startswith('crrecon_pipeline.defs.schedules')\n"
        "              or m == 'crrecon_pipeline.definitions']:\n"
        "        del sys.modules[m]\n"
        "    os.environ[name] = value\n"
        "    try:\n"
        "        import crrecon_pipeline.definitions\n"
        "        out[name] = 'loaded'\n"
        "    except ConfigError as exc:\n"
        "        out[name] = str(exc)\n"
        "    del os.environ[name]\n"
        "import crrecon_pipeline.definitions\n"
        "print(json.dumps(out))\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    for name, value in bad.items():
        assert result[name].startswith(f"{name}={value!r}:"), result[name]
