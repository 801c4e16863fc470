"""A run folder belongs to one run. Owns the run folder's lease and the rule for what a new run may find in it;
imports npyio (the temporary-file pattern), trainlog (paths confined to the folder) and errors.

- The lease: <run folder>/.run.lease, flocked by the training process for the run's life (the kernel releases it
  when the process dies, in any PID namespace). A second writer while the first is alive is refused in one line.
- What may be there: a resume of this folder's own run (`--resume auto` finding last.pt, or a checkpoint inside
  the folder) continues it; otherwise the folder must hold nothing but what `crrecon train` itself puts there
  before training (prepared/ from --raw, the Dagster launcher's training_set.json and run_config.yaml), or, with
  `--resume auto`, what a run killed before its first checkpoint left (metrics.jsonl, the text log, output.dir,
  tensorboard/). Anything else (another run's checkpoints, a user's config.json) is refused, never overwritten.
- Aliveness (`is_alive`, for `crrecon control`): the lease is held, i.e. a training process owns the folder now.
- Leftover temporaries of the project's atomic writes (a save killed by SIGKILL) are removed once the lease is held.
"""

from __future__ import annotations

import fcntl
import re
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from crrecon_pipeline.data.npyio import remove_stale_temps
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.settings import pause_point
from crrecon_pipeline.train import trainlog

LEASE = ".run.lease"
BEFORE_TRAINING = {LEASE, "prepared", "training_set.json", "run_config.yaml"}
KILLED_EARLY = {"metrics.jsonl", "tensorboard", "control"}
TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


@contextmanager
def claim(run_dir: Path, config, resume: str | None, enabled: bool = True) -> Iterator[None]:
    """Hold the run folder's lease for the block, after checking that this run may write there."""
    if not enabled:  # torchrun ranks other than 0: rank 0 holds the lease for them
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LEASE, "a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"--out {run_dir}: another crrecon train is writing this run folder (its lease "
                              f"{LEASE} is held); wait for it to end or give another folder") from None
        pause_point("claimed")
        remove_stale_temps(run_dir)
        for key in ("log_file", "dir"):  # a path leading out through a symlink: that refusal, first
            trainlog.confined_path(run_dir, getattr(config.output, key), f"output.{key}")
        check_contents(run_dir, config, resume)
        yield
    finally:
        f.close()


def is_alive(run_dir: Path) -> bool:
    """Whether a training process holds the folder's lease now (a shared lock probe: taken and released at once
    when nobody holds it)."""
    try:
        f = open(Path(run_dir) / LEASE)
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def check_contents(run_dir: Path, config, resume: str | None) -> None:
    """ConfigError unless the folder is empty enough for this run, or this is a resume of its own run."""
    if resume == "auto" and (run_dir / "last.pt").is_file():
        return
    if resume not in (None, "auto") and Path(resume).resolve().parent == run_dir.resolve():
        return
    found = sorted(p.name for p in run_dir.iterdir() if p.name not in BEFORE_TRAINING and not TEMP_RE.match(p.name))
    if resume is not None:  # a resume from elsewhere, or auto without a checkpoint: an early-killed run's files
        early = KILLED_EARLY | {_top(config.output.log_file), _top(config.output.dir)}
        found = [name for name in found if name not in early]
    if found:
        listed = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
        hint = ("give a new folder, or --resume auto to continue the run there" if "last.pt" in found
                else "give a new or empty folder")
        raise ConfigError(f"--out {run_dir}: not empty and not a run to resume (holds {listed}); nothing was "
                          f"overwritten; {hint}")


def _top(relative: str) -> str:
    return PurePosixPath(relative.replace("\\", "/")).parts[0]
