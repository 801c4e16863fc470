"""Stopping and steering a running run: SIGINT / SIGTERM end it at a batch boundary with a checkpoint that resumes
to the uninterrupted run's numbers; `crrecon control` changes loss weights and asks for a stop after the epoch of a
live CLI run, both read back from the typed records; what a running run cannot take is refused in one line."""

import signal

import pytest

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.records import ProgressRecord, StopRecord, epoch_history, read_records

from .helpers import tiny_config


def quiet(msg):
    pass


@pytest.mark.slow
def test_a_stop_mid_epoch_resumes_to_the_uninterrupted_run(prepared_dir, tmp_path):
    """Ctrl-C during epoch 2: the epoch ends at the next batch boundary, last.pt holds its progress, and the resumed
    run ends with the uninterrupted run's losses, epoch by epoch, bit for bit (CPU)."""
    config, prepared = tiny_config(), load_prepared(prepared_dir)
    whole = train(config, prepared, tmp_path / "whole", device="cpu", log=quiet)
    seen = []

    def interrupt_in_epoch_2(record):
        if isinstance(record, ProgressRecord) and record.epoch == 2 and not seen:
            seen.append(record.batch)
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: noted, acted on before the next batch

    with pytest.raises(KeyboardInterrupt):
        train(config, prepared, tmp_path / "cut", device="cpu", on_record=interrupt_in_epoch_2, log=quiet)
    stop = [r for r in read_records(tmp_path / "cut" / "metrics.jsonl") if isinstance(r, StopRecord)][-1]
    assert (stop.epoch, stop.batch, stop.reason) == (2, seen[0], "SIGINT") and 0 < stop.batch < stop.batches
    assert stop.checkpoint == str((tmp_path / "cut" / "last.pt").resolve()) and "--resume auto" in stop.resume_command
    assert stop.resume_config["training"]["resume_from"] == stop.checkpoint
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    resumed = train(config, prepared, tmp_path / "cut", device="cpu", resume="auto", log=quiet)
    assert resumed.best_val == whole.best_val and resumed.val_mse == whole.val_mse
    ours = epoch_history(read_records(tmp_path / "cut" / "metrics.jsonl"))
    theirs = epoch_history(read_records(tmp_path / "whole" / "metrics.jsonl"))
    assert [(h.epoch, h.train_loss, h.val_loss) for h in ours] == [(h.epoch, h.train_loss, h.val_loss) for h in theirs]
    assert [r for r in read_records(tmp_path / "cut" / "metrics.jsonl") if isinstance(r, StopRecord)] == [stop]
