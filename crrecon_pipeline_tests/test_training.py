"""Models, losses, the split, determinism, atomic checkpoints and exact resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.symmetry import shift_bayer
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.losses.crrecon_mse_pearson import pearson_per_spectrum
from crrecon_pipeline.models import MODELS, get_model
from crrecon_pipeline.models.contract import check_model, probe_pair
from crrecon_pipeline.report.run_metadata import final_metadata
from crrecon_pipeline.train.checkpoints import load as load_checkpoint
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.split import split_rows, structure_keys

SMALL = {"crrecon_xattn": {"d_model": 32, "nhead": 4, "channels": (8, 8, 16, 16, 16)},  # per model, for unit tests
         "crrecon_gru": {"d_model": 32, "channels": (8, 8, 16, 16, 16)},
         "cnn_field": {"fields": 8, "channels": (8, 16, 16)},
         # the research architectures: their CNN trunk has fixed widths, only the heads shrink
         "cnn_xattn": {"d_model": 32, "nhead": 4, "dec_layers": 1},
         "cnn_gru": {"d_model": 16},
         "cnn_diffraction": {"out_len": 30, "d_model": 64, "nhead": 4, "dec_layers": 1},
         "se_disco": {"out_len": 30, "width": 8, "fno_blocks": 1, "fno_modes": 4, "z_dim": 16, "siren_hidden": 16,
                      "siren_layers": 2}}
# Research architectures that break the position clause of the contract, kept because they are the group's own
# (their checkpoints must load): at random initialisation their output does not change when a block moves from above
# the R pixel to above the B pixel. se_disco: max |Δ| = 0; cnn_gru: its trunk's global average pool after circular
# padding is invariant to circular shifts by multiples of its 32 px stride, and R -> B is a 64 px shift.
POSITION_BLIND = {"se_disco", "cnn_gru"}
TINY = ["model.params.channels=[8, 8, 8]", "model.params.fields=8", "model.params.in_pool=2",
        "data.batch_size=32", "data.train_ratio=0.8", "training.epochs=3", "training.save_every=2",
        "data.augment_shifts=false"]  # 4x shorter epochs; test_training_is_deterministic... trains with the shifts


def tiny_config(*extra):
    return load_config("configs/quick.yaml", TINY + list(extra))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_keeps_the_contract(name):
    """Shape, finite outputs, position sensitivity, parameter groups (models.contract.check_model), for every
    registered model; the POSITION_BLIND research models break exactly the position clause, with max |Δ| ~ 0."""
    torch.manual_seed(0)
    model = get_model(name, **SMALL[name])
    assert model(probe_pair()).shape == (2, 2, 2, 30)
    failures = check_model(model, out_len=30)
    if name in POSITION_BLIND:
        assert len(failures) == 1 and failures[0].startswith("position-blind"), failures
        assert float(failures[0].split("max |Δ| = ")[1].split()[0]) < 1e-6
    else:
        assert failures == []


def test_contract_reports_each_broken_clause():
    class Wrong(torch.nn.Module):
        PARAM_GROUPS = {"encoder": ("a",), "head": ("a",)}

        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
            self.out_len = 30

        def forward(self, x):
            return torch.zeros(x.shape[0], 2, 2, 30) + self.a.weight.sum() * float("nan")

    failures = check_model(Wrong())
    assert failures[0] == "output has non-finite values at the initial weights"
    assert failures[1].startswith("position-blind") or failures[1].startswith("parameter a.weight")
    assert any(f.startswith("parameter a.weight is in 2 of PARAM_GROUPS (encoder, head)") for f in failures)
    assert any(f.startswith("parameter b.weight is in 0 of PARAM_GROUPS (none)") for f in failures)
    assert check_model(Wrong(), out_len=301) == ["output shape (2, 2, 2, 30), expected (2, 2, 2, 301)"]


@pytest.mark.parametrize("x_shift, y_shift", [(True, False), (False, True), (True, True)])
def test_cnn_field_is_exactly_shift_equivariant(x_shift, y_shift):
    """A half-period shift of the structure permutes the four outputs as the physics does (symmetry.shift_bayer),
    with random weights: the group is built into the architecture, not learned."""
    torch.manual_seed(1)
    model = get_model("cnn_field", **SMALL["cnn_field"]).eval()
    x = (torch.rand(3, 1, 128, 128) > 0.6).float() * 2 - 1
    shifted = torch.roll(x, (64 * x_shift, 64 * y_shift), (2, 3))
    with torch.no_grad():
        y, y_shifted = model(x), model(shifted)
    assert torch.allclose(y_shifted, shift_bayer(y, x_shift, y_shift), atol=1e-5)
    assert (y_shifted - y).abs().max() > 1e-3  # the pixels really differ: the permutation is not trivially true


@pytest.mark.parametrize("in_pool, stages", [(2, 7), (6, 3)])  # 128 / 2 / 2^7 < 1; 6 * 8 = 48 px does not divide 64
def test_cnn_field_refuses_a_map_it_cannot_split_into_quadrants(in_pool, stages):
    with pytest.raises(ValueError, match="even feature map"):
        get_model("cnn_field", channels=(8,) * stages, in_pool=in_pool)


def test_model_registry_rejects_unknown():
    with pytest.raises(ValueError, match="unknown model"):
        get_model("resnet9000")
    with pytest.raises(ValueError, match="bad parameters"):
        get_model("crrecon_gru", nhead=8)


def test_crrecon_mse_pearson_by_hand():
    t = torch.arange(30, dtype=torch.float32).repeat(1, 2, 2, 1)  # (1, 2, 2, 30)
    loss = get_loss("crrecon_mse_pearson", w_mse=1.0, w_corr=0.2)
    assert float(loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    # p = 2t + 1: correlation 1; MSE = mean((t + 1)^2) over 0..29 = mean of 1..30 squared
    p = 2 * t + 1
    assert float(loss(p, t)) == pytest.approx(np.mean(np.arange(1, 31) ** 2), rel=1e-5)
    # anti-correlated with equal values on average: 1 - (-1) = 2
    r = 29 - t
    expected = np.mean((np.arange(30) - (29 - np.arange(30))) ** 2) + 0.2 * 2
    assert float(loss(r, t)) == pytest.approx(expected, rel=1e-5)
    assert pearson_per_spectrum(r, t).shape == (1, 2, 2)


def test_crrecon_weighted_smooth_by_hand():
    t = torch.zeros(1, 2, 2, 30)
    p = torch.zeros(1, 2, 2, 30)
    p[..., ::2] = 1.0  # 0/1 alternating: every adjacent difference is 1, MSE 0.5
    loss = get_loss("crrecon_weighted_smooth", w_mse=1.0, w_smooth=0.1)
    assert float(loss(p, t)) == pytest.approx(0.5 + 0.1 * 1.0)


def test_split_keeps_rotated_twins_together(prepared_dir):
    p = load_prepared(prepared_dir)
    train_rows, val_rows = split_rows(p.structures.packed, 0.8)
    assert 0.1 < len(val_rows) / len(p) < 0.3
    assert not set(train_rows) & set(val_rows)
    # the key is the same for a structure and its twin, so a twin that is also a row lands on the same side
    np.testing.assert_array_equal(structure_keys(p.structures.packed), structure_keys(p.rotated_structures.packed))
    # and the split does not depend on which other rows are present
    sub_train, sub_val = split_rows(p.structures.packed[::2], 0.8)
    np.testing.assert_array_equal(np.sort(sub_val * 2), np.sort(val_rows[val_rows % 2 == 0]))


def test_training_is_deterministic_and_beats_baseline(prepared_dir, tmp_path):
    p = load_prepared(prepared_dir)
    cfg = tiny_config("training.epochs=3", "data.augment_shifts=true")
    a = train(cfg, p, tmp_path / "a", device="cpu", log=lambda m: None)
    assert a.train_samples == 8 * len(split_rows(p.structures.packed, 0.8)[0])  # 8 images per structure
    b = train(cfg, p, tmp_path / "b", device="cpu", log=lambda m: None)
    assert a.val_mse == b.val_mse
    wa = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lines = (tmp_path / "a" / "train_log.txt").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[EPOCH] 1/3 train_loss=")
    assert {"val_mse", "baseline_val_mse", "val_pearson", "epochs_completed", "best_checkpoint"} <= set(a.model_dump())
    field = {"val_mse_R", "val_mse_G1", "val_mse_G2", "val_mse_B", "val_peak_error_nm", "val_routing_error"}
    assert field <= set(json.loads((tmp_path / "a" / "metrics.json").read_text()))
    assert np.mean([getattr(a, f"val_mse_{p}") for p in ("R", "G1", "G2", "B")]) == pytest.approx(a.val_mse, rel=1e-5)
    metadata = final_metadata(a, cfg)
    assert all(metadata[k][0] == "float" and metadata[k][1] == float(f"{getattr(a, k):.4g}") for k in field)
    assert (tmp_path / "a" / "epoch_0002.pt").exists() and (tmp_path / "a" / "best.pt").exists()
    assert (tmp_path / "a" / "outputs" / "loss_curves.png").stat().st_size > 1000  # output.dir inside the run
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("epoch") == 3 and kinds.count("final") == 1 and kinds.count("progress") >= 3


def test_kill_and_resume_is_exact(prepared_dir, tmp_path):
    """SIGKILL a CLI training run after its second epoch, resume with --resume auto, compare with a clean run."""
    sets = sum((["--set", s] for s in TINY + ["training.epochs=4"]), [])
    cmd = [sys.executable, "-m", "crrecon_pipeline.cli", "train", "--config", "configs/quick.yaml",
           "--prepared", str(prepared_dir), "--device", "cpu", *sets]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = killed / "train_log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(killed / "last.pt")  # whatever moment the kill hit, last.pt is complete
    assert 1 <= ckpt["epoch"] < 4  # the log line of epoch 2 is written just before its checkpoint

    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume", "auto"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["epochs_completed"] == 4

    clean = subprocess.run(cmd + ["--out", str(tmp_path / "clean")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    a = load_checkpoint(killed / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "clean" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    assert json.loads(clean.stdout.strip().splitlines()[-1])["val_mse"] == result["val_mse"]


def test_predict_cli(prepared_dir, tmp_path, raw_dir):
    p = load_prepared(prepared_dir)
    train(tiny_config("training.epochs=1"), p, tmp_path / "run", device="cpu", log=lambda m: None)
    structures = np.load(raw_dir / "binary_dataset_128_0.npy")[:5]
    np.save(tmp_path / "s.npy", structures)
    res = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "predict",
                          "--checkpoint", str(tmp_path / "run" / "best.pt"),
                          "--structures", str(tmp_path / "s.npy"), "--out", str(tmp_path / "pred.npy")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    pred = np.load(tmp_path / "pred.npy")
    assert pred.shape == (5, 2, 2, 30) and np.isfinite(pred).all()
    bad = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "predict",
                          "--checkpoint", str(tmp_path / "s.npy"),
                          "--structures", str(tmp_path / "s.npy"), "--out", str(tmp_path / "x.npy")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "s.npy" in bad.stderr and "Traceback" not in bad.stderr


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config("configs/default.yaml", ["training.epochs=4", "model.params.d_model=128"])
    assert cfg.training.epochs == 4 and cfg.model.params["d_model"] == 128
    assert cfg.model.params["nhead"] == 8 and cfg.data.batch_size == 400
    with pytest.raises(ValueError, match="trainng: unknown key"):
        load_config("configs/default.yaml", ["trainng.epochs=4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: nope}\n")
    with pytest.raises(ValueError, match="unknown model"):
        load_config(bad)


def test_the_run_config_object_travels_and_round_trips_through_the_checkpoint(prepared_dir, tmp_path):
    """train() takes the RunConfig; the checkpoint and config.json store its plain dict, which validates back into an
    equal RunConfig (load_model returns it); a checkpoint whose config does not validate is one line naming it."""
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.train.config import RunConfig
    from crrecon_pipeline.train.inference import load_model

    cfg = tiny_config("training.epochs=1", "training.lr=0.003")
    assert isinstance(cfg, RunConfig)
    train(cfg, load_prepared(prepared_dir), tmp_path / "run", device="cpu", log=lambda m: None)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert type(state["config"]) is dict and RunConfig.from_dict(state["config"]) == cfg
    assert RunConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text())) == cfg
    model, loaded = load_model(tmp_path / "run" / "last.pt", "cpu")
    assert loaded == cfg and loaded.training.lr == 0.003 and not model.training
    state["config"]["training"]["epoch"] = 1  # a key this version does not know
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ConfigError) as refused:
        load_model(tmp_path / "odd.pt", "cpu")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "odd.pt" in message and "training.epoch: unknown key" in message
