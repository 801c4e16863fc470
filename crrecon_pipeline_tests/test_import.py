"""`crrecon import`: configs shaped like the research group's (written here from their key inventory) and checkpoints
in their trainer's layout (built here from the registered research models: no research code at run time) become
run configs and checkpoints of this project that predict exactly as their model does (projection included),
design, and fine-tune from the CLI and from Dagster."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.migrate.importer import import_research
from crrecon_pipeline.models import get_model
from crrecon_pipeline.models.research.parts import research_projection
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.config import flatten, load_config

RAW = "../../data_CR-main"
SMALL_GRU = {"out_len": 301, "d_model": 16, "gru_layers": 1, "cnn_dropout": 0.05, "head_dropout": 0.1,
             "use_circular_padding": True}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", *map(str, args)], capture_output=True,
                          text=True)


def their_default() -> dict:
    """The shape of their configs/default.yaml (every key of their key inventory but the optional ones)."""
    return {"seed": 42,
            "data": {"struct_files": [f"{RAW}/binary_dataset_128_0.npy", f"{RAW}/binary_dataset_128_1.npy"],
                     "spectra_files": [f"{RAW}/spectra_latest_0.npy", f"{RAW}/spectra_latest_1.npy"],
                     "out_len": 301, "map_to_pm1": True, "augment_180": True, "train_ratio": 0.95,
                     "batch_size": 512, "num_workers": 0},
            "model": {"name": "cnn_xattn", "params": {"out_len": 301, "d_model": 256, "nhead": 8, "dec_layers": 4,
                                                      "cnn_dropout": 0.02, "tr_dropout": 0.03, "head_dropout": 0.05,
                                                      "use_circular_padding": True}},
            "loss": {"name": "multiscale_spectral",
                     "params": {"w_abs": 1.0, "w_corr": 0.3, "w_grad1": 0.5, "w_grad2": 0.2, "w_fft": 0.1,
                                "blue_weight": 2.0, "beta": 0.02, "fft_start_ratio": 0.5}},
            "training": {"epochs": 500, "lr": 0.0016, "weight_decay": 0.005, "grad_clip": 0.5, "use_amp": True,
                         "warmup_ratio": 0.05, "save_every": 10},
            "dashboard": {"enabled": True, "port": 8501},
            "constraints": {"sum_min": 0.45, "sum_max": 0.95, "physical_is_negative": False},
            "output": {"dir": "outputs/", "log_file": "train_log.txt"}}


def their_gru(**model_params) -> dict:
    """The shape of their configs/test_cnn_gru.yaml: no constraints block (their trainer projects anyway)."""
    config = their_default()
    del config["constraints"]
    config["data"]["batch_size"] = 64
    config["model"] = {"name": "cnn_gru", "params": {"out_len": 301, "d_model": 128, "gru_layers": 2,
                                                    "cnn_dropout": 0.05, "head_dropout": 0.1,
                                                    "use_circular_padding": True, **model_params}}
    config["loss"] = {"name": "weighted_smooth",
                      "params": {"lambda1": 0.1, "lambda2": 0.05, "channel_weights": [1.0, 0.8, 0.8, 1.2]}}
    config["training"] = {"epochs": 5, "lr": 0.001, "weight_decay": 0.005, "grad_clip": 1.0, "use_amp": True,
                          "warmup_ratio": 0.05, "save_every": 1}
    return config


def write_theirs(root: Path, name: str, config: dict) -> Path:
    """Their layout: code/CR_recon/configs/<name>.yaml (their train.py runs in code/CR_recon)."""
    path = root / "data_CR" / "code" / "CR_recon" / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def their_checkpoint(path: Path, config: dict, seed: int = 0, loss_state: dict | None = None) -> torch.nn.Module:
    """The registered research model, saved as their trainer's save_checkpoint writes it (epoch: 0-based)."""
    torch.manual_seed(seed)
    model = get_model(config["model"]["name"], **config["model"]["params"]).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 4, "val_loss": 0.011,
             "best_val_loss": 0.0105, "train_losses": [0.05, 0.03, 0.02, 0.015, 0.012],
             "val_losses": [0.04, 0.025, 0.018, 0.0105, 0.011]}
    if loss_state is not None:
        state["loss_fn"] = loss_state
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return model


def test_a_config_shaped_like_theirs_imports_with_every_key_in_one_report(tmp_path):
    theirs = their_default()
    result = import_research(write_theirs(tmp_path, "default", theirs), tmp_path / "imported")
    leaves = set(flatten(theirs))
    assert set(result["mapped"]) | set(result["dropped"]) == leaves  # every key, mapped or dropped, once
    assert not set(result["mapped"]) & set(result["dropped"])
    assert result["checkpoint"] is None
    assert json.loads((tmp_path / "imported" / "import.json").read_text()) == result
    config = load_config(result["config"])
    assert (config.seed, config.model.name, config.loss.name) == (42, "cnn_xattn", "multiscale_spectral")
    assert config.model.params["d_model"] == 256 and config.loss.params["fft_start_ratio"] == 0.5
    assert config.model.constraint.model_dump() == {"sum_min": 0.45, "sum_max": 0.95, "physical_is_negative": False}
    assert config.training.warmup_ratio == pytest.approx(24 / 500)  # 25 warmup epochs: the peak at epoch 25
    assert config.training.min_lr_ratio == 0.01 and "training.min_lr_ratio" in result["filled"]
    assert config.data.augment_shifts is False and config.output.dir == "outputs"
    raw_note = result["dropped"]["data.struct_files"]
    assert "CRRECON_RAW_DIR" in raw_note and str(tmp_path / "data_CR" / "data_CR-main") in raw_note
    assert "Dagster UI" in result["dropped"]["dashboard.enabled"] and "data.num_workers" in result["dropped"]
    assert any(d.startswith("schedule: per epoch") for d in result["differences"])
    assert result["warnings"] == []  # their cnn_xattn keeps the model contract


def test_their_trainer_defaults_are_written_out_and_contract_failures_are_warnings(tmp_path):
    theirs = their_gru()
    del theirs["seed"]
    theirs["training"]["pretrained_from"] = "outputs/cnn_gru_epoch_0003.pt"  # not there: their trainer skips it
    theirs["training"]["min_lr_ratio"] = 0.05
    theirs["training"]["label_smoothing"] = 0.1  # a key their trainer never reads
    result = import_research(write_theirs(tmp_path, "test_cnn_gru", theirs), tmp_path / "imported")
    config = load_config(result["config"])
    assert config.seed == 42 and "seed" in result["filled"]
    assert config.model.constraint.model_dump() == {"sum_min": 0.45, "sum_max": 0.95, "physical_is_negative": False}
    assert "absent" in result["filled"]["model.constraint"]  # projected with their defaults, no block needed
    assert config.training.warmup_ratio == 0.0  # 0.05 x 5 epochs: max(1, 0) = 1 warmup epoch = the peak at once
    assert config.training.min_lr_ratio == 0.05 and result["mapped"]["training.min_lr_ratio"] == "training.min_lr_ratio"
    assert config.training.init_from == "" and "is not there" in result["notes"]["training.pretrained_from"]
    assert "not a key the research trainer reads" in result["dropped"]["training.label_smoothing"]
    assert [w for w in result["warnings"] if "cnn_gru breaks the model contract: position-blind" in w]

    negative = their_gru()
    negative["constraints"] = {"sum_min": 0.0, "sum_max": 3.0, "physical_is_negative": True}
    result = import_research(write_theirs(tmp_path, "negative", negative), tmp_path / "negative")
    assert load_config(result["config"]).model.constraint.model_dump() == {
        "sum_min": 0.0, "sum_max": 3.0, "physical_is_negative": True}
    assert result["mapped"]["constraints.physical_is_negative"] == "model.constraint.physical_is_negative"


def test_a_bad_research_config_is_one_line_naming_every_problem_and_writes_nothing(tmp_path):
    theirs = their_gru()
    theirs["data"]["batch_size"] = 0
    theirs["training"]["lr"] = -1.0
    res = run_cli("import", "--config", write_theirs(tmp_path, "bad", theirs), "--out", tmp_path / "out")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "data.batch_size" in res.stderr and "training.lr" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
    theirs = their_gru()
    theirs["model"]["params"]["heads"] = 4
    with pytest.raises(ConfigError, match=r"model\.params\.heads: not a parameter of model cnn_gru"):
        import_research(write_theirs(tmp_path, "bad2", theirs), tmp_path / "out")


def test_their_checkpoint_imports_and_predicts_exactly_their_models_output(tmp_path):
    theirs = their_gru(**SMALL_GRU)
    theirs["loss"] = {"name": "adaptive_spectral", "params": {"w_mse": 1.0, "w_rel": 1.0, "w_grad": 100.0}}
    loss_state = {k: v + 0.25 for k, v in get_loss("adaptive_spectral").state_dict().items()}
    config_path = write_theirs(tmp_path, "gru", theirs)
    model = their_checkpoint(tmp_path / "their" / "cnn_gru_best.pt", theirs, loss_state=loss_state)
    res = run_cli("import", "--config", config_path, "--checkpoint", tmp_path / "their" / "cnn_gru_best.pt",
                  "--out", tmp_path / "imported")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"config", "checkpoint", "mapped", "dropped"} <= set(result)
    assert "crrecon import: warning: model cnn_gru breaks the model contract" in res.stderr
    state = checkpoints.load(result["checkpoint"])  # what predict, design and --init-weights read
    assert state["epoch"] == 5 and state["best_val"] == 0.0105  # their epoch 4 is the 5th, 0-based
    provenance = state["provenance"]
    assert provenance["val_losses"][-1] == 0.011 and provenance["train_losses"][0] == 0.05
    assert provenance["research_config"]["model"]["name"] == "cnn_gru" and len(provenance["sha256"]) == 64
    assert all(torch.equal(v, state["loss_state"][k]) for k, v in loss_state.items())
    assert state["config"]["model"]["name"] == "cnn_gru"  # the research architecture, not renamed on load
    for key, tensor in model.state_dict().items():
        assert torch.equal(state["model"][key], tensor)

    structures = (np.random.default_rng(0).random((5, 1, 128, 128)) > 0.5).astype(np.uint8)
    np.save(tmp_path / "s.npy", structures)
    res = run_cli("predict", "--checkpoint", result["checkpoint"], "--structures", tmp_path / "s.npy",
                  "--out", tmp_path / "pred.npy", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    with torch.no_grad():
        raw = model(torch.from_numpy(structures).float() * 2 - 1)  # their map_to_pm1
        expected = research_projection(raw, 0.45, 0.95).numpy()  # their trainer's projection, its defaults
    assert (raw.numpy() != expected).mean() > 0.5  # the projection really acts on these outputs
    np.testing.assert_allclose(np.load(tmp_path / "pred.npy"), expected, rtol=0, atol=1e-6)

    with pytest.raises(ConfigError, match="imported from another trainer.*--init-weights"):
        stored = checkpoints.stored_config(state, Path(result["checkpoint"]))
        checkpoints.check_resumable(state, stored, stored, Path(result["checkpoint"]))


def test_their_pretrained_from_is_converted_for_init(tmp_path):
    theirs = their_gru(**SMALL_GRU)
    theirs["training"]["pretrained_from"] = "outputs/cnn_gru_epoch_0003.pt"
    config_path = write_theirs(tmp_path, "gru", theirs)
    their_checkpoint(config_path.parent.parent / "outputs" / "cnn_gru_epoch_0003.pt", theirs)
    result = import_research(config_path, tmp_path / "imported")
    init = Path(load_config(result["config"]).training.init_from)
    assert init == (tmp_path / "imported" / "init_cnn_gru_epoch_0003.pt").resolve()
    config = load_config(result["config"])
    model = get_model("cnn_gru", **SMALL_GRU)
    assert checkpoints.load_weights(model, checkpoints.load(init), config, init) == []


def test_bad_checkpoints_are_one_line(tmp_path):
    theirs = their_gru(**SMALL_GRU)
    config_path = write_theirs(tmp_path, "gru", theirs)
    pointer = tmp_path / "cnn_gru_best.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:b4c6\nsize 106763993\n")
    wrong = their_gru(**{**SMALL_GRU, "d_model": 8})
    their_checkpoint(tmp_path / "wrong.pt", wrong)
    torch.save({"model": {"w": torch.zeros(1)}, "note": Path("a pickled object")}, tmp_path / "pickled.pt")
    for path, expected in ((pointer, "not the checkpoint itself: fetch the file with `git lfs pull`"),
                           (tmp_path / "wrong.pt", "its weights do not fit model cnn_gru"),
                           (tmp_path / "pickled.pt", "not a plain checkpoint")):
        res = run_cli("import", "--config", config_path, "--checkpoint", path, "--out", tmp_path / "out")
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert expected in res.stderr and str(path) in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_imported_checkpoint_fine_tunes_and_designs_from_the_cli(tmp_path):
    """301 bins, as their data: the checkpoint's every tensor fits, nothing is skipped."""
    theirs = their_gru(**SMALL_GRU)
    their_checkpoint(tmp_path / "cnn_gru_best.pt", theirs)
    res = run_cli("import", "--config", write_theirs(tmp_path, "gru", theirs), "--checkpoint",
                  tmp_path / "cnn_gru_best.pt", "--out", tmp_path / "imported")
    assert res.returncode == 0, res.stderr
    imported = json.loads(res.stdout.strip().splitlines()[-1])
    for args in (("simulate", "--out", tmp_path / "raw", "--rows", 48, "--shards", 1, "--unfinished-fraction", 0),
                 ("preprocess", "--raw", tmp_path / "raw", "--out", tmp_path / "p301", "--bins", 301)):
        assert run_cli(*args).returncode == 0
    res = run_cli("train", "--config", imported["config"], "--prepared", tmp_path / "p301", "--out", tmp_path / "run",
                  "--init-weights", imported["checkpoint"], "--device", "cpu",
                  *[a for s in ("training.epochs=1", "data.batch_size=16", "data.augment_180=false",
                                "data.train_ratio=0.75") for a in ("--set", s)])
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    assert metrics["init_from"] == str(Path(imported["checkpoint"]).resolve()) and metrics["init_skipped"] == []
    assert metrics["model"] == "cnn_gru" and np.isfinite(metrics["val_mse"])
    res = run_cli("design", "--checkpoint", imported["checkpoint"], "--prepared", tmp_path / "p301",
                  "--out", tmp_path / "designs", "--designs", 2, "--steps", 2, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout.strip().splitlines()[-1])["designs"]) == 2


@pytest.mark.slow
def test_an_imported_checkpoint_fine_tunes_in_dagster_on_30_bins(tmp_path):
    """--out-len 30: the run config trains on the built-in 30-bin data, the checkpoint keeps its 301 bins, and
    training.init_from skips (and lists) the one tensor shaped by the bins."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.prepared import filtered_bayer, rotated_bayer
    from crrecon_pipeline.defs.assets.raw import raw_shard
    from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
    from crrecon_pipeline.defs.partitions import shards
    from crrecon_pipeline.defs.resources import (
        CrreconPaths,
        FilterSettings,
        ModelChecks,
        SimulatorResource,
        TrainingDevice,
    )

    theirs = their_gru(**SMALL_GRU)
    their_checkpoint(tmp_path / "cnn_gru_best.pt", theirs)
    imported = import_research(write_theirs(tmp_path, "gru", theirs), tmp_path / "imported",
                               checkpoint=tmp_path / "cnn_gru_best.pt", out_len=30)
    assert checkpoints.load(imported["checkpoint"])["config"]["data"]["out_len"] == 301
    res = {"paths": CrreconPaths(home=str(tmp_path / "home")), "filtering": FilterSettings(),
           "model_checks": ModelChecks(), "device": TrainingDevice(device="cpu"),
           "simulator": SimulatorResource(rows_per_shard=80, initial_shards=1, seed=3)}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])
    dg.materialize([raw_shard, filtered_bayer, rotated_bayer], partition_key="0", instance=instance, resources=res)
    config = load_config(imported["config"], ["training.epochs=1", "data.batch_size=16", "data.augment_180=false",
                                               f"training.init_from={imported['checkpoint']}"])
    assert config.data.out_len == 30
    result = dg.materialize([trained_model], instance=instance, resources=res,
                            run_config=dg.RunConfig({"trained_model": TrainedModelConfig(**config.to_dict())}))
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    assert meta["init_from"].value == str(Path(imported["checkpoint"]).resolve())
    assert meta["init_skipped"].value == "spec_bias"
    assert checkpoints.load(meta["checkpoint"].value)["model"]["spec_bias"].shape == (1, 4, 30)
