"""Data-parallel training under torchrun (2 CPU ranks, gloo) takes the same steps as one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crrecon_pipeline.training import load_checkpoint

from .test_training import TINY

TORCHRUN = Path(sys.executable).parent / "torchrun"
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun not found")


def test_two_ranks_match_one_process(prepared_dir, tmp_path):
    sets = sum((["--set", s] for s in TINY + ["training.epochs=2", "training.lr=0.0003"]), [])
    args = ["train", "--config", "configs/quick.yaml", "--prepared", str(prepared_dir), "--device", "cpu", *sets]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([str(TORCHRUN), "--nproc-per-node", "2", "--master-port", "29517", "-m", "crrecon_pipeline.cli", *args,
                          "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    reports = [json.loads(line) for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, "only rank 0 reports"
    assert reports[0]["device"] == "cpu x 2 ranks"
    assert len((tmp_path / "ddp" / "train_log.txt").read_text().splitlines()) == 2, "only rank 0 writes the log"
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    # the same global batches and averaged gradients: equal up to float summation order
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    print(f"max weight difference 2 ranks vs 1 process: {worst:.2e}")
    assert worst < 1e-3, worst
    assert reports[0]["val_mse"] == pytest.approx(json.loads(single.stdout.strip().splitlines()[-1])["val_mse"], rel=2e-2)
    assert torch.equal(a["scale.mean"], b["scale.mean"])


def test_each_rank_takes_its_share_of_a_global_batch():
    from crrecon_pipeline.distributed import DistContext

    idx = torch.arange(7)
    parts = [DistContext(rank=r, world=2).share(idx) for r in range(2)]
    assert parts[0].tolist() == [0, 2, 4, 6] and parts[1].tolist() == [1, 3, 5]
    assert DistContext().share(idx).tolist() == idx.tolist()


def test_trained_model_asset_under_torchrun(tmp_path, raw_dir):
    """TrainingDevice(processes=2): the asset launches torchrun and streams rank 0's epochs to the UI."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
    from crrecon_pipeline.defs.resources import TrainingDevice

    from .test_dagster import DATA_ASSETS, new_instance, resources
    from .test_training import tiny_config

    instance = new_instance(["0", "1"])
    for k in ("0", "1"):  # the lineage decides what trains: prepare both shards through the assets
        assert dg.materialize(DATA_ASSETS, partition_key=k, instance=instance, resources=resources(tmp_path, raw_dir)).success
    result = dg.materialize([trained_model], instance=instance,
                            resources=resources(tmp_path, raw_dir) | {"device": TrainingDevice(device="cpu", processes=2)},
                            run_config=dg.RunConfig({"trained_model": TrainedModelConfig(**tiny_config("training.epochs=2"))}))
    assert result.success
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    assert meta["device"].value == "cpu x 2 ranks" and meta["epochs_completed"].value == 2
    assert set(meta["training_set"].value) == {"0", "1"}  # every rank loaded exactly the lineage's versions
    epochs = sorted(r.asset_observation.metadata["epoch"].value
                    for r in instance.fetch_observations(dg.AssetKey("trained_model"), limit=10).records)
    assert epochs == [1, 2]
