"""The metric logger's sinks: TensorBoard event files of a real short run hold train and val as two runs under the
same tags, every loss term (weighted, raw, share; per step and per epoch), the lr, the dashboard and sample images;
records carry the terms; the readable number formats."""

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


def _runs(run_dir):
    """{sub-run: its EventAccumulator} of a run's TensorBoard folder, and every folder under it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = run_dir / TENSORBOARD_DIR
    folders = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())
    guidance = {"images": 0, "scalars": 0, "tensors": 0}
    return {split: EventAccumulator(str(root / split), size_guidance=guidance).Reload()
            for split in ("train", "val")}, folders


@pytest.mark.slow
def test_tensorboard_train_and_val_are_two_runs_under_the_same_tags(multiscale_run):
    """Read back with TensorBoard's own reader: `loss` in both the train/ and val/ sub-runs (one card overlays
    them), each term weighted, raw (x its weight = weighted) and as a share (they sum to 1), the lr, the per-step
    curves, the dashboard and sample images, the Custom Scalars layout; no other run folder."""
    run_dir, config, metrics, seen = multiscale_run
    runs, folders = _runs(run_dir)
    assert folders == ["train", "val"], folders
    steps_per_epoch = max(r.batches for r in seen if r.kind == "progress")
    loss = get_loss(config.loss.name, **config.loss.params)
    names, weights = list(loss.terms(*_dummy_batch())), loss.term_weights()
    assert len(names) >= 2
    epochs = [r for r in seen if r.kind == "epoch"]
    for split, acc in runs.items():
        scalars = acc.Tags()["scalars"]
        assert [e.step for e in acc.Scalars("loss")] == [steps_per_epoch, 2 * steps_per_epoch]
        assert acc.Scalars("loss")[-1].value == pytest.approx(getattr(epochs[-1], f"{split}_loss"), rel=1e-5)
        shares = 0.0
        for name in names:
            weighted = acc.Scalars(f"loss_terms/{name}")[-1].value
            assert acc.Scalars(f"loss_raw/{name}")[-1].value * weights[name] == pytest.approx(weighted, rel=1e-5)
            shares += acc.Scalars(f"loss_share/{name}")[-1].value
        assert shares == pytest.approx(1.0, rel=1e-4), split
        assert "lr" in scalars if split == "train" else "best_loss" in scalars
    train, val = runs["train"], runs["val"]
    assert {f"step/loss_terms/{n}" for n in names} | {"step/loss", "step/lr"} <= set(train.Tags()["scalars"])
    assert {"dashboard", "samples/val", "samples/train"} <= set(val.Tags()["images"])
    assert [e.step for e in val.Images("dashboard")] == [steps_per_epoch, 2 * steps_per_epoch]
    assert val.Images("dashboard")[-1].width > 300
    assert "custom_scalars__config__" in train.Tags()["tensors"]
    assert val.Scalars("final/val_mse")[-1].value == pytest.approx(metrics.val_mse, rel=1e-5)


@pytest.mark.slow
def test_tensorboard_shows_each_redone_step_once_after_a_resume(prepared_dir, tmp_path):
    """A run killed after logging epoch 3 but resumed from its epoch-2 checkpoint redoes epoch 3: TensorBoard
    shows every step and epoch once, with the redone values (the earlier process's events purged)."""
    run_dir = tmp_path / "run"
    config = tiny_config("training.epochs=3", "training.save_every=2")
    train(config, load_prepared(prepared_dir), run_dir, device="cpu", log=lambda msg: None)
    first = {split: acc.Scalars("loss") for split, acc in _runs(run_dir)[0].items()}
    train(config, load_prepared(prepared_dir), run_dir, device="cpu", resume=str(run_dir / "epoch_0002.pt"),
          log=lambda msg: None)
    runs, folders = _runs(run_dir)
    assert folders == ["train", "val"], folders
    for split, acc in runs.items():
        points = acc.Scalars("loss")
        assert len(points) == 3 and [e.step for e in points] == sorted({e.step for e in points}), split
        assert [e.wall_time for e in points][:2] == [e.wall_time for e in first[split][:2]]
        assert points[2].wall_time > first[split][2].wall_time  # epoch 3 is the redone one
    steps = [e.step for e in runs["train"].Scalars("step/loss")]
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
    assert set(epochs[0].sample_figures) == {"val", "train", "dashboard"}  # the first epoch is always drawn
    assert all("dashboard" in r.sample_figures for r in epochs)  # the dashboard every epoch
    assert (run_dir / "outputs" / "dashboard.png").read_bytes()[:4] == b"\x89PNG"
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
    assert [records.duration(s) for s in (907.4, 12, 3780)] == ["15 min 07 s", "12 s", "1 h 03 min"]
