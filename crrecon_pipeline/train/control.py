"""Steering a running run: `crrecon control RUN_DIR --set loss.params.w_corr=0.1` changes what a resume may change
while the run trains (CONTROLLABLE), from the next epoch; `--stop-after-epoch` ends it cleanly after the epoch it is
in (resumable). Both sides are here: the command's (`send`) and the trainer's (`Steering`).

The run folder's control/ holds, one file each (written atomically):
    trainer.json           the live trainer's pid and its config with every request taken (while the epochs run)
    req-<ns>-<pid>.json    a request: {"set": {dotted key: value}, "stop_after_epoch": bool}
    ack-<ns>-<pid>.json    the trainer's answer: {"epoch": the epoch it was read in, "applies_from": the next} or
                           {"error": one line}
The trainer lists control/ at each progress record (~10 % of an epoch, or 30 s) and at each epoch end: a few
syscalls, no host sync; what it takes applies at the end of the epoch, before that epoch's checkpoint, so the
checkpoint holds the config the next epoch trains with. Aliveness is the run folder's lease (runfolder.py).
The loop applies the requests (loop.py: a ControlRecord each, on the record with its epoch)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.errors import ConfigError, one_line
from crrecon_pipeline.train import runfolder
from crrecon_pipeline.train.checkpoints import RESUMABLE_CHANGES
from crrecon_pipeline.train.config import RunConfig, differing_keys, set_dotted

CONTROL_DIR = "control"
TRAINER = "trainer.json"
CONTROLLABLE = ("loss.params", "training.grad_clip", "training.early_stopping", "training.save_every")


@dataclass
class Request:
    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    stop_after_epoch: bool = False


def changed_config(config: RunConfig, changes: dict[str, Any], source: str) -> tuple[RunConfig, list[str]]:
    """`config` with `changes` (dotted keys) applied and validated by the RunConfig schema, and the keys that
    changed; ConfigError naming the dotted key for a bad value, an unknown key, or a key a running run keeps."""
    new = config.with_overrides(changes, source)
    changed = differing_keys(config.to_dict(), new.to_dict())
    kept = [k for k in changed if not k.startswith(CONTROLLABLE)]
    if kept:
        resumable = all(k.startswith(RESUMABLE_CHANGES) for k in kept)
        why = ("stop it after this epoch (--stop-after-epoch) and resume with the change" if resumable else
               "a resume would refuse it too: start a new run")
        raise ConfigError(f"{source}: {', '.join(kept)}: a running run cannot change it (only "
                          f"{', '.join(CONTROLLABLE)}); {why}")
    losses = [k for k in changed if k.startswith("loss.params")]
    if losses:
        check_loss(new, losses, source)
    return new, changed


def check_loss(config: RunConfig, keys: list[str], source: str) -> None:
    """The schema takes any value for a loss parameter (each loss has its own): build the loss and take it once on
    random spectra, so a weight it cannot use is refused here, in one line, and not in the middle of the run."""
    from crrecon_pipeline.losses import get_loss

    generator = torch.Generator().manual_seed(0)
    pred, target = (torch.rand(4, 2, 2, config.data.out_len, generator=generator) for _ in range(2))
    try:
        loss_fn = get_loss(config.loss.name, **config.loss.params)
        if hasattr(loss_fn, "calibrate"):
            loss_fn.calibrate(target)
        value = float(loss_fn(pred, target))
    except Exception as exc:  # noqa: BLE001 - whatever the loss raises on these parameters, they are a bad value
        raise ConfigError(f"{source}: {', '.join(keys)}: loss {config.loss.name} cannot use "
                          f"{', '.join(repr(config.flat().get(k)) for k in keys)} ({one_line(exc)[:160]})") from None
    if not math.isfinite(value):
        raise ConfigError(f"{source}: {', '.join(keys)}: loss {config.loss.name} is not finite with these values")


# ------------------------------------------------------------------------------------------------ the trainer

class Steering:
    """The trainer's side (rank 0): publishes its config, takes new requests at `poll`, answers each at once."""

    def __init__(self, run_dir: Path, config: RunConfig, enabled: bool = True):
        self.dir, self.config, self.enabled = Path(run_dir) / CONTROL_DIR, config, enabled
        self.pending: list[Request] = []
        self.seen: set[str] = set()

    def __enter__(self) -> "Steering":
        if self.enabled:
            self.dir.mkdir(exist_ok=True)
            self.seen = set(os.listdir(self.dir))  # an earlier session's requests are not this one's to take
            self._publish()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            (self.dir / TRAINER).unlink(missing_ok=True)

    def _publish(self) -> None:
        write_text_atomic(self.dir / TRAINER, json.dumps({"pid": os.getpid(), "config": self.config.to_dict()}))

    def poll(self, epoch: int) -> None:
        """Take the requests written since the last poll, in the order they were made; answer each."""
        if not self.enabled:
            return
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.startswith("req-") and n.endswith(".json"))
        except FileNotFoundError:
            return
        taken = False
        for name in (n for n in names if n not in self.seen):
            self.seen.add(name)
            answer = self._take(name, epoch)
            if answer is not None:
                write_text_atomic(self.dir / ("ack-" + name.removeprefix("req-")), json.dumps(answer))
                taken = taken or "error" not in answer
        if taken:
            self._publish()

    def _take(self, name: str, epoch: int) -> dict | None:
        try:
            data = json.loads((self.dir / name).read_text())
        except FileNotFoundError:  # withdrawn by a command that gave up waiting
            return None
        except (OSError, ValueError) as exc:
            return {"epoch": epoch, "error": f"{CONTROL_DIR}/{name}: not a request ({one_line(exc)})"}
        source = f"crrecon control {name}"
        try:
            if not isinstance(data, dict):
                raise ConfigError(f"{source}: a request is a mapping with set and stop_after_epoch")
            changes = data.get("set") or {}
            if not isinstance(changes, dict):
                raise ConfigError(f"{source}: set must be a mapping of dotted keys")
            self.config, _ = changed_config(self.config, changes, source)
        except ConfigError as exc:
            return {"epoch": epoch, "error": one_line(exc)}
        self.pending.append(Request(name, changes, bool(data.get("stop_after_epoch"))))
        return {"epoch": epoch, "applies_from": epoch + 1}

    def take(self) -> list[Request]:
        """The requests taken since the last call, oldest first."""
        taken, self.pending = self.pending, []
        return taken


# ------------------------------------------------------------------------------------------------ the command

def live_config(run_dir: Path) -> RunConfig:
    """The config of the run training in `run_dir` now; ConfigError when no run trains there."""
    trainer = run_dir / CONTROL_DIR / TRAINER
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    if not runfolder.is_alive(run_dir) or not trainer.is_file():
        raise ConfigError(f"{run_dir}: no run is training there now (its lease {runfolder.LEASE} is free, or its "
                          f"epochs are over); a stopped run is steered by resuming it with the change")
    return RunConfig.from_dict(json.loads(trainer.read_text())["config"], str(trainer))


def send(run_dir: Path, assignments: list[str], stop_after_epoch: bool, timeout_s: float) -> dict:
    """Check the request against the live run's config, hand it to the trainer, wait for its answer."""
    run_dir = Path(run_dir)
    config = live_config(run_dir)
    changes: dict[str, Any] = {}
    for item in assignments:  # parsed as `crrecon train --set` parses: YAML values
        key = item.split("=", 1)[0].strip()
        changes[key] = _dig(set_dotted({}, item), key)
    _, changed = changed_config(config, changes, "crrecon control --set")
    name = f"req-{time.time_ns():020d}-{os.getpid()}.json"
    path = write_text_atomic(run_dir / CONTROL_DIR / name,
                             json.dumps({"set": changes, "stop_after_epoch": stop_after_epoch}))
    answer = _wait(run_dir, path, timeout_s)
    if "error" in answer:
        raise ConfigError(answer["error"])
    return {"run_dir": str(run_dir.resolve()), "request": name, "read_in_epoch": answer["epoch"],
            "applies_from_epoch": answer["applies_from"], "changed": changed, "stop_after_epoch": stop_after_epoch}


def _dig(config: dict, key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


def _wait(run_dir: Path, request: Path, timeout_s: float) -> dict:
    """The trainer's answer; ConfigError when the run ends first or the time runs out (the request withdrawn)."""
    ack = request.with_name("ack-" + request.name.removeprefix("req-"))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ack.is_file():
            return json.loads(ack.read_text())
        if not runfolder.is_alive(run_dir):
            break
        time.sleep(0.1)
    request.unlink(missing_ok=True)  # withdrawn: a trainer that lists it afterwards finds nothing
    time.sleep(0.5)  # a trainer that read it just before answers within this
    if ack.is_file():  # answered in the meantime
        return json.loads(ack.read_text())
    if not runfolder.is_alive(run_dir):
        raise ConfigError(f"{run_dir}: the run ended before it read the request (withdrawn)")
    raise ConfigError(f"{run_dir}: the trainer did not take the request within {timeout_s:g} s (it reads requests "
                      f"at each progress record and epoch end); withdrawn, nothing changed")
