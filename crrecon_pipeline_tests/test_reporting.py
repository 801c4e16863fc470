"""Live reporting: progress records paced by share of the epoch and by time, the loss-curve figure refreshed during
training within its time budget, and the per-epoch observation's keys."""

import time

import numpy as np

from crrecon_pipeline.report.run_metadata import LiveCurves, observation_metadata
from crrecon_pipeline.train import records
from crrecon_pipeline.train.sinks import JsonlSink


def test_progress_every_tenth_of_an_epoch_and_never_at_its_end():
    pacer = records.ProgressPacer(95, every_s=1e9)
    due = [b for b in range(1, 96) if pacer.due(b)]
    assert due == [10, 19, 29, 38, 48, 57, 67, 76, 86]  # the 95th batch is the epoch record's


def test_progress_every_few_seconds_when_batches_are_slow():
    pacer = records.ProgressPacer(10_000, every_s=0.05)  # the first 10 % mark is batch 1000: far away
    due = []
    for b in range(1, 6):
        time.sleep(0.06)
        due.append(pacer.due(b))
    assert due == [True] * 5
    assert not pacer.due(6), "the clock restarts at each record"


def epoch_record(epoch, epochs=20, loss=None):
    loss = 1.0 / epoch if loss is None else loss
    return records.EpochRecord(epoch=epoch, epochs=epochs, train_loss=loss, val_loss=loss * 1.1, best_val=loss,
                               lr=1e-3, samples_per_s=812.3456, seconds=2.0, elapsed_s=2.0 * epoch,
                               eta_s=2.0 * (epochs - epoch), progress=f"epoch {epoch}/{epochs}")


def test_live_curves_every_few_epochs_with_a_png(tmp_path):
    live = LiveCurves(tmp_path / "live.png", every_epochs=3, every_s=1e9, max_share=1e9)
    figures = {e: live.update(epoch_record(e)) for e in range(1, 8)}
    assert [e for e, f in figures.items() if f] == [3, 6]
    assert figures[6].startswith("![loss curves, epoch 6](data:image/png;base64,")
    assert (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"
    assert live.cost > 0


def test_live_curves_after_every_s_and_within_the_time_budget(tmp_path):
    live = LiveCurves(tmp_path / "live.png", every_epochs=1000, every_s=0.0, max_share=0.5)
    assert live.update(epoch_record(1))  # due by time; nothing drawn yet, so no cost to amortize
    assert live.update(epoch_record(2)) is None, "drawing again at once would take over half of the wall time"
    time.sleep(2 * live.cost + 0.01)
    assert live.update(epoch_record(3))


def test_live_curves_resume_from_the_run_history_and_survive_a_diverged_epoch(tmp_path):
    with JsonlSink(tmp_path / records.FILENAME) as log:
        for e in (1, 2):
            log.write(epoch_record(e))
    live = LiveCurves.for_run(tmp_path, every_epochs=1, every_s=1e9, max_share=1e9)
    assert [h.epoch for h in live.history] == [1, 2] and live.last_epoch == 2
    # a diverged epoch, as it comes back from the file (null losses)
    nan = records.parse_record(epoch_record(3).to_json() | {"train_loss": None, "val_loss": None})
    assert live.update(nan) and np.isnan(live.history[-1].val_loss)


def test_observation_carries_curves_progress_and_eta_rounded():
    obs = observation_metadata(epoch_record(4))
    assert obs["samples_per_s"] == 812.3 and obs["eta_s"] == 32.0 and obs["progress"] == "epoch 4/20"
    assert obs["eta"] == "32 s"  # for people; eta_s for code
    assert list(obs)[:3] == ["epoch", "progress", "eta"]  # no figure drawn: no dashboard key
    assert set(obs) == {"epoch", "train_loss", "val_loss", "best_val", "lr", "samples_per_s", "eta_s", "progress",
                        "eta"}


def test_observation_carries_the_dashboard_of_its_epoch(tmp_path):
    from crrecon_pipeline.plots import Dashboard

    wavelengths = np.linspace(400, 700, 30)
    history = [epoch_record(e).model_copy(update={"val_terms": {"mse": 0.8 / e, "corr": 0.3 / e},
                                                  "train_terms": {"mse": 0.7 / e, "corr": 0.3 / e}})
               for e in (1, 2, 3)]
    true = np.random.default_rng(0).random((2, 2, 2, 30))
    png = Dashboard(wavelengths, ["val #1", "train #1"]).draw(history, true, true * 0.9, tmp_path / "d.png", 20)
    assert png.read_bytes()[:4] == b"\x89PNG"
    obs = observation_metadata(history[-1].model_copy(update={"sample_figures": {"dashboard": str(png)}}))
    assert list(obs)[:2] == ["epoch", "dashboard"] and obs["epoch"] == 3
    assert obs["dashboard"].startswith("![dashboard, epoch 3/20](data:image/png;base64,")
    assert not {"samples_val", "samples_train"} & set(obs)  # the sample views only on the epochs drawn
