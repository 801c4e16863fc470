"""Stopping and steering a running run: SIGINT / SIGTERM end it at a batch boundary with a checkpoint that resumes
to the uninterrupted run's numbers; `crrecon control` changes loss weights and asks for a stop after the epoch of a
live CLI run, both read back from the typed records; what a running run cannot take is refused in one line."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crrecon_pipeline import cli
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.control import Steering
from crrecon_pipeline.train.interrupts import GracefulStop
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.records import ControlRecord, ProgressRecord, StopRecord, epoch_history, read_records

from .helpers import run_cli, tiny_config


def quiet(msg):
    pass


@pytest.mark.slow
def test_a_stop_mid_epoch_resumes_to_the_uninterrupted_run(prepared_dir, tmp_path):
    """SIGTERM during epoch 2 (handled as the CLI handles it): the epoch ends at the next batch boundary, last.pt
    holds its progress, and the resumed run ends with the uninterrupted run's losses, epoch by epoch, bit for bit
    (CPU)."""
    config, prepared = tiny_config(), load_prepared(prepared_dir)
    whole = train(config, prepared, tmp_path / "whole", device="cpu", log=quiet)
    seen = []

    def interrupt_in_epoch_2(record):
        if isinstance(record, ProgressRecord) and record.epoch == 2 and not seen:
            seen.append(record.batch)
            signal.raise_signal(signal.SIGTERM)  # noted, acted on before the next batch

    before = signal.signal(signal.SIGTERM, cli._terminate)
    try:
        with pytest.raises(cli.Terminated):
            train(config, prepared, tmp_path / "cut", device="cpu", on_record=interrupt_in_epoch_2, log=quiet)
        assert signal.getsignal(signal.SIGTERM) is cli._terminate  # the handlers are put back
    finally:
        signal.signal(signal.SIGTERM, before)
    stop = [r for r in read_records(tmp_path / "cut" / "metrics.jsonl") if isinstance(r, StopRecord)][-1]
    assert (stop.epoch, stop.batch, stop.reason) == (2, seen[0], "SIGTERM") and 0 < stop.batch < stop.batches
    assert stop.checkpoint == str((tmp_path / "cut" / "last.pt").resolve()) and "--resume auto" in stop.resume_command
    assert stop.resume_config["training"]["resume_from"] == stop.checkpoint
    resumed = train(config, prepared, tmp_path / "cut", device="cpu", resume="auto", log=quiet)
    assert resumed.best_val == whole.best_val and resumed.val_mse == whole.val_mse
    ours = epoch_history(read_records(tmp_path / "cut" / "metrics.jsonl"))
    theirs = epoch_history(read_records(tmp_path / "whole" / "metrics.jsonl"))
    assert [(h.epoch, h.train_loss, h.val_loss) for h in ours] == [(h.epoch, h.train_loss, h.val_loss) for h in theirs]
    assert [r for r in read_records(tmp_path / "cut" / "metrics.jsonl") if isinstance(r, StopRecord)] == [stop]


def test_a_signal_waits_for_the_boundary_and_then_reaches_the_earlier_handler():
    """The stop is noted, not raised; `deliver` hands it to the handler from before (Ctrl-C's KeyboardInterrupt)
    and puts it back; outside the block a signal interrupts as always."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job inherits SIGINT ignored
    try:
        _signal_waits_for_the_boundary()
    finally:
        signal.signal(signal.SIGINT, inherited)


def _signal_waits_for_the_boundary():
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and stop.reason == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            stop.deliver()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with GracefulStop():
            signal.raise_signal(signal.SIGINT)  # noted after the last boundary: delivered when the block ends


EPOCHS = 40  # more than the test's requests can take on a fast machine: the run ends by the stop it is sent
LIVE = ["--set", "model.params.channels=[8, 8, 8]", "--set", "model.params.fields=8", "--set", "data.batch_size=16",
        "--set", "data.train_ratio=0.8", "--set", f"training.epochs={EPOCHS}", "--set", "output.tensorboard=false"]


def start_training(out: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crrecon_pipeline.cli", "train", *map(str, args), "--out",
                             str(out), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def refused(*args) -> str:
    """`crrecon control ARGS` refused: exit 2, one line on stderr, nothing on stdout; the line."""
    res = run_cli("control", *args)
    assert res.returncode == 2 and not res.stdout and len(res.stderr.splitlines()) == 1, res
    return res.stderr


def progress_in(run: Path, epoch: int) -> bool:
    log = run / "metrics.jsonl"
    return log.is_file() and any(isinstance(r, ProgressRecord) and r.epoch > epoch for r in read_records(log))


@pytest.mark.slow
def test_control_steers_a_live_run_then_stops_it_after_the_epoch(prepared_dir, tmp_path):
    """A real CLI run: `crrecon control` changes a loss weight and grad_clip (from the next epoch), refuses in one
    line what a running run cannot take, then stops it after the epoch (exit 0, resumable); both are on the record.
    Resumed by its stop record's command, then SIGTERM mid-epoch: one line, exit 143, a mid-epoch stop record."""
    run = tmp_path / "run"
    proc = start_training(run, "--config", "configs/quick.yaml", *LIVE, "--prepared", prepared_dir)
    wait_for(lambda: (run / "control" / "trainer.json").is_file(), proc)
    res = run_cli("control", run, "--set", "loss.params.w_corr=0.1", "--set", "training.grad_clip=0.5")
    assert res.returncode == 0, res.stderr
    steered = json.loads(res.stdout.splitlines()[-1])
    assert steered["changed"] == ["loss.params.w_corr", "training.grad_clip"]
    assert "unknown key" in refused(run, "--set", "training.fooo=1")
    assert "model.params.fields" in refused(run, "--set", "model.params.fields=4")
    assert "loss.params.w_corr" in refused(run, "--set", "loss.params.w_corr=oops")
    res = run_cli("control", run, "--stop-after-epoch")
    assert res.returncode == 0, res.stderr
    stop_epoch = json.loads(res.stdout.splitlines()[-1])["read_in_epoch"]
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "Traceback" not in err, err
    records = read_records(run / "metrics.jsonl")
    controls = [r for r in records if isinstance(r, ControlRecord)]
    assert [(c.key, c.old, c.new, c.epoch) for c in controls[0].changes] == [
        ("loss.params.w_corr", 0.0, 0.1, steered["read_in_epoch"]),
        ("training.grad_clip", 1.0, 0.5, steered["read_in_epoch"])]
    assert controls[-1].stop_after_epoch and controls[-1].epoch == stop_epoch < EPOCHS
    stop = [r for r in records if isinstance(r, StopRecord)][-1]
    assert (stop.epoch, stop.batch) == (stop_epoch, stop.batches)
    assert epoch_history(records)[-1].epoch == stop_epoch
    later = [h for h in epoch_history(records) if h.epoch > steered["read_in_epoch"]]
    assert all(set(h.val_terms) == {"mse", "corr"} and h.val_terms["corr"] > 0 for h in later)
    state = checkpoints.load(run / "last.pt")
    assert state["epoch"] == stop_epoch and state["config"]["loss"]["params"]["w_corr"] == 0.1
    assert json.loads(out.splitlines()[-1])["stopped"] == stop.line()
    assert "no run is training there" in refused(run, "--stop-after-epoch")  # the run is over

    proc = start_training(run, *stop.resume_command.split()[2:])  # its own command: resume.yaml, --resume auto
    wait_for(lambda: progress_in(run, stop_epoch), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and not out and "Traceback" not in err, err
    last = err.splitlines()[-1]
    where = f"stopped at epoch {stop_epoch + 1}/{EPOCHS}, batch "
    assert last.startswith(f"crrecon train: terminated (SIGTERM); {where}"), last
    again = [r for r in read_records(run / "metrics.jsonl") if isinstance(r, StopRecord)]
    assert again[0] == stop and again[-1].epoch == stop_epoch + 1 and 0 < again[-1].batch < again[-1].batches
    assert checkpoints.load(run / "last.pt")["partial"]["batch"] == again[-1].batch


def test_the_trainer_answers_each_request_once_and_refuses_a_bad_one(tmp_path):
    """The trainer's side alone: a request written by hand that is no mapping, or names a key a running run keeps,
    is answered with one line and changes nothing; a good one is taken once and applies from the next epoch."""
    with Steering(tmp_path, tiny_config()) as steering:
        requests = tmp_path / "control"
        (requests / "req-1.json").write_text("[1, 2]")
        (requests / "req-2.json").write_text(json.dumps({"set": {"data.batch_size": 8}}))
        (requests / "req-3.json").write_text(json.dumps({"set": {"loss.params.w_corr": 0.3}}))
        steering.poll(4)
        steering.poll(4)  # read once
        answers = [json.loads((requests / f"ack-{k}.json").read_text()) for k in (1, 2, 3)]
        assert "a mapping" in answers[0]["error"] and "data.batch_size" in answers[1]["error"]
        assert answers[2] == {"epoch": 4, "applies_from": 5}
        taken = steering.take()
        assert [(r.name, r.changes) for r in taken] == [("req-3.json", {"loss.params.w_corr": 0.3})]
        assert steering.take() == []
        live = json.loads((requests / "trainer.json").read_text())["config"]
        assert live["loss"]["params"]["w_corr"] == 0.3 and live["data"]["batch_size"] == 32
    assert not (tmp_path / "control" / "trainer.json").exists()


def test_the_dagster_job_steers_a_live_run_and_refuses_in_one_line(tmp_path):
    """steer_training_job hands a change and a stop request to the trainer of a live run (the run folder's lease
    held, the trainer polling as between batches) and succeeds once it took them; a key a running run keeps, and a
    run that is not alive, fail the step with the one line `crrecon control` prints."""
    import threading

    import dagster as dg

    from crrecon_pipeline.defs.resources import CrreconPaths
    from crrecon_pipeline.defs.steering import steer_training_job
    from crrecon_pipeline.train import runfolder

    paths = CrreconPaths(home=str(tmp_path / "home"))
    run, config = paths.runs_path() / "run-1", tiny_config()

    def steer(**request) -> dg.ExecuteInProcessResult:
        return steer_training_job.execute_in_process(
            run_config={"ops": {"steer_training": {"config": {"run_id": "run-1", "timeout_s": 60, **request}}}},
            resources={"paths": paths}, raise_on_error=False)

    def failure(result) -> str:
        failed = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        return failed.step_failure_data.error.message

    with runfolder.claim(run, config, None), Steering(run, config) as steering:
        done = threading.Event()

        def between_batches_of_epoch_3():
            while not done.is_set():
                steering.poll(3)
                time.sleep(0.05)

        trainer = threading.Thread(target=between_batches_of_epoch_3)
        trainer.start()
        try:
            steered = steer(set=["loss.params.w_corr=0.3"], stop_after_epoch=True)
            kept = steer(set=["model.params.fields=4"])
        finally:
            done.set()
            trainer.join()
        taken = steering.take()
    assert steered.success, failure(steered)
    out = steered.output_for_node("steer_training")
    assert out["changed"] == ["loss.params.w_corr"] and (out["read_in_epoch"], out["applies_from_epoch"]) == (3, 4)
    assert [(r.changes, r.stop_after_epoch) for r in taken] == [({"loss.params.w_corr": 0.3}, True)]
    assert not kept.success and "model.params.fields" in failure(kept) and len(failure(kept).splitlines()) == 1
    over = steer(stop_after_epoch=True)  # the lease is free: no run trains there now
    assert not over.success and "no run is training there" in failure(over)
