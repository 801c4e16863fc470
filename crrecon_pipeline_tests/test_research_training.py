"""The research group's models and losses through this project's trainer: every research architecture trains a
tiny epoch from the registry (no output statistics to set, its parameter groups freeze, model.constraint applied as
their trainer's projection), adaptive_spectral's running averages survive a kill and a resume, and a checkpoint of
the previous format (this project's models under their old names) is read under today's names."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from crrecon_pipeline.data.prepared import PackedStructures, load_prepared
from crrecon_pipeline.models.research import RESEARCH_MODELS
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.freeze import group_of
from crrecon_pipeline.train.inference import load_model
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.setup import build_model

from .helpers import SMALL, TINY


def bayer_sum(spectra):
    return spectra[:, 0, 0] + 0.5 * (spectra[:, 0, 1] + spectra[:, 1, 0]) + spectra[:, 1, 1]


@pytest.fixture(scope="module")
def few_rows(prepared_dir):
    """8 prepared rows: a research trunk runs at full resolution, seconds per batch on a CPU."""
    p = load_prepared(prepared_dir)
    n = 8
    return dataclasses.replace(p, structures=PackedStructures(p.structures.packed[:n]), bayer=p.bayer[:n],
                               rotated_structures=PackedStructures(p.rotated_structures.packed[:n]),
                               rotated_bayer=p.rotated_bayer[:n], source_rows=p.source_rows[:n])


def small_model(name):
    """--set lines for a registered model with its small test parameters (test_training.SMALL)."""
    params = ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in SMALL[name].items())
    return [f"model.name={name}", f"model.params={{{params}}}"]


def research_config(name, *extra):
    return load_config("quick", [*small_model(name), "data.batch_size=4", "data.train_ratio=0.5",
                                 "data.augment_180=false", "data.augment_shifts=false", "training.epochs=1",
                                 "training.save_every=0", "output.tensorboard=false", *extra])


@pytest.mark.parametrize("name", sorted(RESEARCH_MODELS))
def test_every_research_model_trains_through_the_trainer(name, few_rows, tmp_path):
    """A tiny epoch from the registry, constrained and with the encoder frozen (the trunk's backward skipped: CPU
    seconds); the same models train unconstrained and unfrozen the same way (measured once, minutes on 2 cores)."""
    cfg = research_config(name, "model.constraint={sum_min: 0.9, sum_max: 1.0}", "training.freeze=[encoder]")
    held = train(cfg, few_rows, tmp_path / "held", device="cpu", log=lambda m: None)
    assert held.epochs_completed == 1 and np.isfinite(held.val_mse)
    free = build_model(research_config(name))
    encoder = [p for n, p in free.named_parameters() if group_of(free, n) == "encoder"]
    assert held.frozen_params == sum(p.numel() for p in encoder) > 0
    last = checkpoints.load(tmp_path / "held" / "last.pt")
    assert len(last["optimizer"]["state"]) == len(list(free.parameters())) - len(encoder)
    # no output statistics (set_stats is a no-op): the state dict stays exactly the research code's
    assert set(last["model"]) == set(free.state_dict()) and not any(k.startswith("scale") for k in last["model"])
    constrained, loaded = load_model(tmp_path / "held" / "best.pt", "cpu")
    assert loaded.model.constraint is not None
    free.load_state_dict(last["model"])
    x = torch.as_tensor(np.asarray(few_rows.structures[:4]), dtype=torch.float32)[:, None] * 2 - 1
    with torch.no_grad():
        out, unconstrained = constrained(x), free.eval()(x)
    assert bayer_sum(out).min() >= 0.9 - 1e-5 and bayer_sum(out).max() <= 1.0 + 1e-5
    assert not torch.equal(out, unconstrained)  # without model.constraint the outputs pass unchanged


def test_constraint_with_physical_is_negative_bounds_the_negated_sum():
    """physical_is_negative: the research trainer's flag, the same projection on -output: the output's sum lands in
    [-sum_max, -sum_min], for this project's models and the research ones alike."""
    x = (torch.rand(3, 1, 128, 128, generator=torch.Generator().manual_seed(0)) > 0.5).float() * 2 - 1
    for name in ("cnn_field", "se_disco"):
        cfg = load_config("quick", [*small_model(name),
                                    "model.constraint={sum_min: 0.45, sum_max: 0.95, physical_is_negative: true}"])
        assert cfg.model.constraint.output_bounds == (-0.95, -0.45)
        with torch.no_grad():
            out = build_model(cfg).eval()(x)
        assert bayer_sum(out).min() >= -0.95 - 1e-5 and bayer_sum(out).max() <= -0.45 + 1e-5, name


def test_adaptive_spectral_averages_survive_a_kill_and_resume(prepared_dir, tmp_path):
    """The loss's state is in every checkpoint ("loss_state") and comes back on resume: a run killed after its
    first epoch and resumed ends with the averages and weights of an uninterrupted run, bit for bit."""
    loss = ["loss.name=adaptive_spectral", "loss.params={use_uncertainty: true, w_rel: 0.5, w_grad: 1.0}"]
    sets = sum((["--set", s] for s in TINY + loss + ["training.epochs=2"]), [])
    cmd = [sys.executable, "-m", "crrecon_pipeline.cli", "train", "--config", "configs/quick.yaml",
           "--prepared", str(prepared_dir), "--device", "cpu", *sets]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "last.pt").exists():  # written whole (renamed into place)
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = checkpoints.load(killed / "last.pt")
    assert interrupted["epoch"] == 1
    assert set(interrupted["loss_state"]) == {"ema_mse", "ema_rel", "ema_grad"}
    assert all(float(v) > 0 for v in interrupted["loss_state"].values())  # seen values (-1: never)

    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume", "auto"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(cmd + ["--out", str(tmp_path / "clean")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    a, b = checkpoints.load(killed / "last.pt"), checkpoints.load(tmp_path / "clean" / "last.pt")
    assert all(torch.equal(a["loss_state"][k], b["loss_state"][k]) for k in b["loss_state"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]), "resumed weights differ"
    assert json.loads(resumed.stdout.splitlines()[-1])["val_mse"] == json.loads(clean.stdout.splitlines()[-1])[
        "val_mse"]


def test_a_previous_format_checkpoint_reads_under_todays_names(few_rows, tmp_path):
    """Format 2 named this project's models and losses cnn_xattn, cnn_gru, mse_pearson, ...; read today, its
    config names crrecon_xattn, crrecon_gru, crrecon_mse_pearson, ... and it loads for prediction and resume."""
    run = tmp_path / "run"
    cfg = load_config("quick", TINY + ["training.epochs=1", "output.tensorboard=false", "data.train_ratio=0.5"])
    train(cfg, few_rows, run, device="cpu", log=lambda m: None)
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["format"] == checkpoints.CHECKPOINT_FORMAT == 3
    state["format"], state["config"]["loss"]["name"] = 2, "mse_pearson"  # as the previous version wrote it
    torch.save(state, run / "last.pt")
    upgraded = checkpoints.load(run / "last.pt")
    assert upgraded["format"] == 3 and upgraded["config"]["loss"]["name"] == "crrecon_mse_pearson"
    model, loaded = load_model(run / "last.pt", "cpu")
    assert loaded == cfg
    metrics = train(cfg.replaced("training.epochs", 2), few_rows, run, device="cpu", log=lambda m: None,
                    resume="auto")
    assert metrics.epochs_completed == 2
