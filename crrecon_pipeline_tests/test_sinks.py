"""The metric logger's sinks: TensorBoard event files of a real short run hold every loss term (per step and per
epoch), the lr and the sample images; records carry the terms; the readable number formats."""

import json

import pytest

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.train import records
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.sinks import TENSORBOARD_DIR
from crrecon_pipeline.train.trainlog import log_line, parse_train_log
from crrecon_pipeline_tests.helpers import tiny_config


@pytest.fixture(scope="module")
def multiscale_run(prepared_dir, tmp_path_factory):
    """Two epochs with the multi-term loss (its four terms), TensorBoard on by default."""
    run_dir = tmp_path_factory.mktemp("tb_run")
    config = tiny_config("training.epochs=2", "loss.name=multiscale", "loss.params={}")
    seen = []
    metrics = train(config, load_prepared(prepared_dir), run_dir, device="cpu", on_record=seen.append,
                    log=lambda msg: None)
    return run_dir, config, metrics, seen


@pytest.mark.slow
def test_tensorboard_holds_every_term_the_lr_and_sample_images(multiscale_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, config, metrics, _ = multiscale_run
    steps = EventAccumulator(str(run_dir / TENSORBOARD_DIR / "step"), size_guidance={"scalars": 0}).Reload()
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR / "epoch"),
                              size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    names = list(get_loss(config.loss.name, **config.loss.params).terms(*_dummy_batch()))
    assert len(names) >= 2
    for name in names:
        assert f"step/term/{name}" in steps.Tags()["scalars"], name
        assert f"epoch/train_term/{name}" in tags["scalars"], name
        assert [e.step for e in events.Scalars(f"epoch/val_term/{name}")] == [1, 2]
    assert [e.step for e in events.Scalars("epoch/lr")] == [1, 2]
    assert "step/lr" in steps.Tags()["scalars"] and "epoch/val_loss" in tags["scalars"]
    assert {"samples/val", "samples/train"} <= set(tags["images"])
    picture = events.Images("samples/val")[-1]
    assert picture.width > 100 and picture.height > 100
    # the epoch scalars are the records' numbers
    epoch2 = [r for r in records.read_records(run_dir / records.FILENAME) if r.kind == "epoch"][-1]
    assert events.Scalars("epoch/val_loss")[-1].value == pytest.approx(epoch2.val_loss, rel=1e-5)


@pytest.mark.slow
def test_tensorboard_shows_each_redone_step_once_after_a_resume(prepared_dir, tmp_path):
    """A run killed after logging epoch 3 but resumed from its epoch-2 checkpoint redoes epoch 3: TensorBoard
    shows every step and epoch once, with the redone values (the earlier process's events purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    config = tiny_config("training.epochs=3", "training.save_every=2")
    train(config, load_prepared(prepared_dir), run_dir, device="cpu", log=lambda msg: None)
    first = EventAccumulator(str(run_dir / TENSORBOARD_DIR / "epoch")).Reload().Scalars("epoch/train_loss")
    train(config, load_prepared(prepared_dir), run_dir, device="cpu", resume=str(run_dir / "epoch_0002.pt"),
          log=lambda msg: None)
    epochs = EventAccumulator(str(run_dir / TENSORBOARD_DIR / "epoch")).Reload()
    assert [e.step for e in epochs.Scalars("epoch/train_loss")] == [1, 2, 3]
    assert [e.wall_time for e in epochs.Scalars("epoch/train_loss")][:2] == [e.wall_time for e in first[:2]]
    assert epochs.Scalars("epoch/train_loss")[2].wall_time > first[2].wall_time  # epoch 3 is the redone one
    steps = [e.step for e in EventAccumulator(str(run_dir / TENSORBOARD_DIR / "step")).Reload().Scalars(
        "step/train_loss")]
    assert steps == sorted(set(steps)) and len(steps) > 3


def _dummy_batch():
    import torch

    torch.manual_seed(0)
    return torch.rand(4, 2, 2, 30), torch.rand(4, 2, 2, 30)


@pytest.mark.slow
def test_records_carry_the_terms_per_step_and_epoch(multiscale_run):
    run_dir, config, metrics, seen = multiscale_run
    progress = [r for r in seen if r.kind == "progress"]
    epochs = [r for r in seen if r.kind == "epoch"]
    assert progress and len(epochs) == 2
    for r in progress:
        assert len(r.train_terms) >= 2 and sum(r.train_terms.values()) == pytest.approx(r.train_loss)
        assert r.progress.startswith("run ") and f"batch {r.batch}/{r.batches}" in r.progress
    for r in epochs:
        assert sum(r.val_terms.values()) == pytest.approx(r.val_loss, rel=1e-5)
        assert sum(r.train_terms.values()) == pytest.approx(r.train_loss, rel=1e-4)
        assert r.val_mse_per_pixel > 0
    assert set(epochs[0].sample_figures) == {"val", "train"}  # the first epoch is always drawn
    final = json.loads((run_dir / "metrics.json").read_text())
    assert set(final["val_terms"]) == set(epochs[0].val_terms)


def test_train_log_has_four_significant_figures_and_old_logs_still_parse(tmp_path):
    line = log_line(27, 40, 6.2345e-6, 5.9031e-6, 5.9031e-6, 1.234567e-4)
    assert "val_loss=5.903e-06" in line and "lr=0.0001235" in line
    old = "[EPOCH] 26/40 train_loss=0.000006 val_loss=0.000007 best_val=0.000006 lr=1.234567e-04"
    log = tmp_path / "train_log.txt"
    log.write_text(old + "\n" + line + "\n")
    parsed = parse_train_log(log)
    assert [r.epoch for r in parsed] == [26, 27]
    assert parsed[0].val_loss == pytest.approx(7e-6) and parsed[0].lr == pytest.approx(1.234567e-4)
    assert parsed[1].val_loss == pytest.approx(5.903e-6) and parsed[1].best_val == pytest.approx(5.903e-6)


def test_progress_text_says_what_the_percentage_is_of():
    assert records.progress_text(1, 40, 0.02, 319.0, 8, 77) == "run 2 % · epoch 1/40, batch 8/77 · ETA 5 min 19 s"
    assert records.progress_text(3, 30, 0.1, None) == "run 10 % · epoch 3/30"
