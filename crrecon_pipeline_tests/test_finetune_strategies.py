"""The research group's fine-tuning workflow (issue 21) on simulator data: frozen parameter groups, early stopping,
the cosine floor, the spectral loss and its unit-free option, the hard Bayer-sum constraint, and resuming with
changed loss weights / freeze / patience (recorded) while a changed model is still refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.losses import LOSSES, get_loss
from crrecon_pipeline.models import MODELS
from crrecon_pipeline.models.backbone import project_bayer_sum
from crrecon_pipeline.report.modelcard import model_card
from crrecon_pipeline.report.run_metadata import final_metadata
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.early_stop import epochs_without_improvement
from crrecon_pipeline.train.freeze import group_of
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.schedule import Schedule
from crrecon_pipeline.train.setup import build_model

from .test_training import SMALL, TINY, tiny_config


def quiet(msg):
    pass


def bayer_sum(spectra):
    return spectra[:, 0, 0] + 0.5 * (spectra[:, 0, 1] + spectra[:, 1, 0]) + spectra[:, 1, 1]


@pytest.fixture(scope="module")
def pretrained(prepared_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "run"
    train(tiny_config("training.epochs=2", "training.save_every=0"), load_prepared(prepared_dir), run, device="cpu",
          log=quiet)
    return run


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_declares_groups_covering_every_parameter(name):
    small = [f"model.params.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in SMALL[name].items()]
    model = build_model(load_config(None, [f"model.name={name}", *small]))
    assert {group_of(model, n) for n, _ in model.named_parameters()} == set(MODELS[name].PARAM_GROUPS)


def test_unknown_freeze_group_is_one_line_naming_the_groups():
    with pytest.raises(ConfigError, match=r"training.freeze: unknown group 'backbone' of model cnn_field "
                                          r"\(its groups: encoder, decoder, head\)"):
        tiny_config("training.freeze=[backbone]")


def test_frozen_groups_stay_bit_identical_while_the_rest_trains(pretrained, prepared_dir, tmp_path):
    cfg = tiny_config("training.epochs=2", "training.save_every=0", "training.freeze=[encoder, decoder]",
                      f"training.init_from={pretrained / 'last.pt'}")
    lines = []
    metrics = train(cfg, load_prepared(prepared_dir), tmp_path / "ft", device="cpu", log=lines.append)
    before = checkpoints.load(pretrained / "last.pt")["model"]
    after = checkpoints.load(tmp_path / "ft" / "last.pt")
    model = build_model(cfg)
    for name, _ in model.named_parameters():
        same = torch.equal(before[name], after["model"][name])
        assert same == (group_of(model, name) != "head"), name
    frozen = sum(p.numel() for n, p in model.named_parameters() if group_of(model, n) != "head")
    assert metrics.frozen_params == frozen and metrics.trainable_params == metrics.n_params - frozen
    assert metrics.frozen_groups == ["encoder", "decoder"]
    # frozen parameters get no AdamW state: the optimizer holds exactly the head's tensors
    assert len(after["optimizer"]["state"]) == len(model.mix.state_dict())
    assert any(f"{metrics['trainable_params']:,} trainable" in line for line in lines)
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["frozen_params"] == frozen
    meta = final_metadata(metrics, cfg)
    assert meta["frozen_params"] == ("int", frozen) and meta["trainable_params"][1] == metrics.trainable_params
    assert f"{frozen:,} frozen" in meta["model_card"][1] and "Final loss terms" in meta["model_card"][1]


def test_frozen_modules_stay_in_eval_mode_during_training(prepared_dir, tmp_path, monkeypatch):
    from crrecon_pipeline.train import loop

    seen = []
    original = loop.predict_batches

    def spy(model, *args, **kwargs):  # called right after each epoch's training pass
        seen.append((model.backbone.training, model.mix.training))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(loop, "predict_batches", spy)
    train(tiny_config("training.epochs=1", "training.freeze=[encoder]", "model.params.cnn_dropout=0.5"),
          load_prepared(prepared_dir), tmp_path / "r", device="cpu", log=quiet)
    assert seen[0] == (False, True)


def test_early_stopping_counter():
    assert epochs_without_improvement([3, 2, 2.5, 2.4, 1.0, 1.0], 0.0) == 1
    assert epochs_without_improvement([3, 2, 1.95, 1.9], 0.1) == 2


def test_early_stopping_ends_a_plateaued_run_and_best_is_the_best_epoch(prepared_dir, tmp_path):
    # lr so small that nothing improves after the first epochs beyond min_delta: a plateau by construction
    cfg = tiny_config("training.epochs=8", "training.save_every=0", "training.lr=1e-9", "training.warmup_ratio=0",
                      "training.early_stopping={patience: 2, min_delta: 1.0}")
    metrics = train(cfg, load_prepared(prepared_dir), tmp_path / "r", device="cpu", log=quiet)
    # epoch 1 improves on inf; epochs 2 and 3 do not by more than 1.0: stopped after epoch 3
    assert metrics.stopped_early and metrics.stopped_at_epoch == 3 and metrics.epochs_completed == 3
    history = checkpoints.load(tmp_path / "r" / "last.pt")["history"]
    best_epoch = min(history, key=lambda h: h["val_loss"])["epoch"]
    assert metrics.best_epoch == best_epoch
    final = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["kind"] == "final" and final["stopped_at_epoch"] == 3
    # resumed with more epochs, the counter is kept (the history): no further epoch runs
    again = train(cfg.replaced("training.epochs", 10), load_prepared(prepared_dir), tmp_path / "r", device="cpu",
                  resume="auto", log=quiet)
    assert again.stopped_at_epoch == 3 and again.epochs_completed == 3


def test_min_lr_ratio_is_the_cosine_floor():
    s = Schedule.fresh(100, 0.1, 0.2)
    assert s.factor(100) == pytest.approx(0.2) and s.factor(500) == pytest.approx(0.2)
    assert min(s.factor(k) for k in range(10, 200)) == pytest.approx(0.2)
    assert s.extended(200).floor == 0.2


def test_spectral_terms_sum_to_the_total_and_unit_free_calibrates(prepared_dir):
    bayer = torch.as_tensor(load_prepared(prepared_dir).bayer[:64])
    pred = bayer + 0.01 * torch.randn_like(bayer)
    loss = get_loss("spectral", w_mse=1, w_mae=0.5, w_rel=0.1, w_grad=2, w_grad_mae=0.3, w_curv_mae=0.2,
                    pixel_weights=[1, 1, 1, 2])
    terms = loss.terms(pred, bayer)
    assert set(terms) == {"mse", "mae", "rel", "grad", "grad_mae", "curv_mae"}
    assert float(loss(pred, bayer)) == pytest.approx(float(sum(terms.values())), rel=1e-6)
    # pixel weights: an error on B only counts 2/1.25 times its unweighted mean
    only_b = bayer.clone()
    only_b[:, 1, 1] += 0.1
    plain = get_loss("spectral").terms(only_b, bayer)["mse"]
    assert float(get_loss("spectral", pixel_weights=[1, 1, 1, 2]).terms(only_b, bayer)["mse"]) == pytest.approx(
        float(plain) * 2 / 1.25, rel=1e-5)
    unit_free = get_loss("spectral", w_mse=1, w_grad=1, unit_free=True)
    unit_free.calibrate(bayer)
    mean = bayer.mean(0, keepdim=True).expand_as(bayer)
    assert all(float(v) == pytest.approx(1.0, rel=1e-5) for v in unit_free.terms(mean, bayer).values())
    assert "spectral" in LOSSES


def test_crrecon_mse_corr_l1_by_hand_with_a_flat_spectrum_left_out_of_the_correlation():
    """This project's crrecon_mse_corr_l1 on small arrays: MSE and MAE with B weighted, the mean (1 - r) over the
    spectra that are not flat, computed here with numpy."""
    rng = np.random.default_rng(0)
    target = rng.random((3, 2, 2, 12))
    pred = target + 0.1 * rng.standard_normal(target.shape)
    pred[0, 0, 1] = 0.4  # a flat prediction: its correlation is undefined and must not count
    w = np.ones((2, 2, 1))
    w[1, 1] = 3.0
    err = pred - target
    pc, tc = pred - pred.mean(-1, keepdims=True), target - target.mean(-1, keepdims=True)
    r = (pc * tc).sum(-1) / (np.linalg.norm(pc, axis=-1) * np.linalg.norm(tc, axis=-1) + 1e-8)
    valid = np.ones((3, 2, 2), bool)
    valid[0, 0, 1] = False
    expected = {"mse": 1.0 * np.mean(w * err ** 2), "corr": 0.5 * np.mean(1 - r[valid]),
                "l1": 0.2 * np.mean(w * np.abs(err))}
    loss = get_loss("crrecon_mse_corr_l1", w_mse=1.0, w_corr=0.5, w_l1=0.2, blue_weight=3.0)
    terms = loss.terms(torch.as_tensor(pred, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32))
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-5), name
    flat = torch.full((2, 2, 2, 12), 0.3)
    assert float(loss.terms(flat, flat)["corr"]) == 0.0  # nothing left to correlate: 0, not NaN


def test_spectral_unit_free_run_reports_per_term_values(prepared_dir, tmp_path):
    cfg = tiny_config("training.epochs=1", "loss.name=spectral",
                      "loss.params={w_mse: 1, w_rel: 0.5, w_grad: 1, unit_free: true}")
    metrics = train(cfg, load_prepared(prepared_dir), tmp_path / "r", device="cpu", log=quiet)
    terms = metrics.val_terms
    assert set(terms) == {"mse", "rel", "grad"}
    history = checkpoints.load(tmp_path / "r" / "best.pt")["history"]
    assert sum(terms.values()) == pytest.approx(history[-1]["val_loss"], rel=1e-4)


def test_constraint_holds_for_every_output_and_is_identity_when_inactive(prepared_dir, tmp_path):
    spectra = torch.randn(16, 2, 2, 30)
    projected = project_bayer_sum(spectra, -0.2, 0.3)
    assert bayer_sum(projected).min() >= -0.2 - 1e-6 and bayer_sum(projected).max() <= 0.3 + 1e-6
    spread = projected - spectra  # one uniform shift of the four pixels per bin
    assert torch.allclose(spread, spread[:, :1, :1].expand_as(spread))
    inside = project_bayer_sum(spectra, -1e9, 1e9)
    assert torch.equal(inside, spectra)
    # trained with it, every validation output of the model satisfies it
    cfg = tiny_config("training.epochs=1", "model.constraint={sum_min: 0.9, sum_max: 1.0}")
    run = tmp_path / "r"
    train(cfg, load_prepared(prepared_dir), run, device="cpu", log=quiet)
    model = build_model(cfg)
    model.load_state_dict(checkpoints.load(run / "best.pt")["model"])
    x = torch.as_tensor(np.asarray(load_prepared(prepared_dir).structures[:32]), dtype=torch.float32)[:, None] * 2 - 1
    with torch.no_grad():
        out = model.eval()(x)
    assert bayer_sum(out).min() >= 0.9 - 1e-5 and bayer_sum(out).max() <= 1.0 + 1e-5
    free = build_model(tiny_config())
    free.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.equal(free.eval()(x), out)  # the constraint acted (the data's sums are outside [0.9, 1])
    with pytest.raises(ConfigError, match="model.constraint"):
        tiny_config("model.constraint={sum_min: 1.0, sum_max: 0.5}")


def test_resume_with_changed_loss_weights_freeze_and_patience_is_recorded(pretrained, prepared_dir, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(pretrained, run)
    cfg = tiny_config("training.epochs=3", "training.save_every=0", "loss.params.w_mse=2.0",
                      "training.freeze=[encoder]", "training.early_stopping={patience: 5}")
    lines = []
    metrics = train(cfg, load_prepared(prepared_dir), run, device="cpu", resume="auto", log=lines.append)
    changes = {c.key: (c.old, c.new) for c in metrics.resume_changes}
    assert changes["loss.params.w_mse"] == (1.0, 2.0)
    assert changes["training.freeze"] == ([], ["encoder"])
    assert any("resume: loss.params.w_mse 1.0 -> 2.0" in line for line in lines)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "resume_changes" and r["epoch"] == 2 for r in records)
    assert metrics.epochs_completed == 3
    card = model_card(cfg, metrics)
    assert "after epoch 2: `loss.params.w_mse` 1.0 → 2.0" in card and "frozen groups: encoder" in card
    # a second resume with another change: both resumes stay on the record, in order
    again = cfg.with_overrides({"training.epochs": 4, "loss.params.w_mse": 3.0})
    metrics = train(again, load_prepared(prepared_dir), run, device="cpu", resume="auto", log=quiet)
    w_mse = [(c.epoch, c.old, c.new) for c in metrics.resume_changes if c.key == "loss.params.w_mse"]
    assert w_mse == [(2, 1.0, 2.0), (3, 2.0, 3.0)]
    card = model_card(again, metrics)
    assert "after epoch 2: `loss.params.w_mse` 1.0 → 2.0" in card
    assert "after epoch 3: `loss.params.w_mse` 2.0 → 3.0" in card


def test_resume_with_a_changed_model_is_still_refused(pretrained, prepared_dir, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(pretrained, run)
    cfg = load_config("configs/quick.yaml", TINY + ["training.epochs=3", "model.params.fields=4"])
    with pytest.raises(ConfigError, match=r"cannot resume, the config differs in model.params.fields"):
        train(cfg, load_prepared(prepared_dir), run, device="cpu", resume="auto", log=quiet)


def test_load_weights_centre_crops_1d_kernels():
    wide = torch.arange(2 * 3 * 7, dtype=torch.float32).view(2, 3, 7)
    cropped = checkpoints.centre_crop_kernel(wide, torch.Size([2, 3, 5]))
    assert torch.equal(cropped, wide[:, :, 1:6])
    assert checkpoints.centre_crop_kernel(wide, torch.Size([2, 3, 4])) is None
    assert checkpoints.centre_crop_kernel(wide, torch.Size([2, 4, 5])) is None
    # load_weights applies it to Conv1d kernels only (a (2, 2, L) buffer of another L is skipped, not cropped)
    small, big = torch.nn.Sequential(torch.nn.Conv1d(3, 2, 5)), torch.nn.Sequential(torch.nn.Conv1d(3, 2, 7))
    small.register_buffer("mean", torch.zeros(2, 2, 20))
    big.register_buffer("mean", torch.ones(2, 2, 30))
    cfg = tiny_config()
    state = {"config": cfg.to_dict(), "model": big.state_dict()}
    skipped = checkpoints.load_weights(small, state, cfg, Path("big.pt"))
    assert skipped == ["mean"] and torch.equal(small[0].weight, big[0].weight[:, :, 1:6])


def test_kill_and_resume_with_freeze_and_early_stopping_is_exact(prepared_dir, tmp_path):
    """SIGKILL a CLI run (encoder frozen, early stopping made to fire at epoch 3) after its first epoch, resume it:
    the same weights, the same stopping epoch as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sets = sum((["--set", s] for s in TINY + ["training.epochs=6", "training.freeze=[encoder]",
                                              "training.early_stopping={patience: 2, min_delta: 1.0}"]), [])
    cmd = [sys.executable, "-m", "crrecon_pipeline.cli", "train", "--config", "configs/quick.yaml",
           "--prepared", str(prepared_dir), "--device", "cpu", *sets]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "last.pt").exists():  # written atomically: complete once there
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= checkpoints.load(killed / "last.pt")["epoch"] <= 3
    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume", "auto"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(cmd + ["--out", str(tmp_path / "clean")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    results = [json.loads(r.stdout.strip().splitlines()[-1]) for r in (resumed, clean)]
    assert [r["stopped_at_epoch"] for r in results] == [3, 3]
    a = checkpoints.load(killed / "last.pt")["model"]
    b = checkpoints.load(tmp_path / "clean" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    assert results[0]["val_mse"] == results[1]["val_mse"]
