"""Data-parallel training under torchrun (2 CPU ranks, gloo) takes the same steps as one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crrecon_pipeline.train.checkpoints import load as load_checkpoint

from .helpers import TINY

TORCHRUN = Path(sys.executable).parent / "torchrun"
pytestmark = [pytest.mark.slow,  # torchrun ranks in subprocesses
              pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None,
                                 reason="torchrun not found")]


def test_two_ranks_match_one_process(prepared_dir, tmp_path):
    sets = sum((["--set", s] for s in TINY + ["training.epochs=2", "training.lr=0.0003"]), [])
    args = ["train", "--config", "configs/quick.yaml", "--prepared", str(prepared_dir), "--device", "cpu", *sets]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([str(TORCHRUN), "--nproc-per-node", "2", "--master-port", "29517",
                          "-m", "crrecon_pipeline.cli", *args,
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
    assert reports[0]["val_mse"] == pytest.approx(json.loads(single.stdout.strip().splitlines()[-1])["val_mse"],
                                                  rel=2e-2)
    assert torch.equal(a["scale.mean"], b["scale.mean"])


def test_each_rank_takes_its_share_of_a_global_batch():
    from crrecon_pipeline.train.distributed import DistContext

    idx = torch.arange(7)
    parts = [DistContext(rank=r, world=2).share(idx) for r in range(2)]
    assert parts[0].tolist() == [0, 2, 4, 6] and parts[1].tolist() == [1, 3, 5]
    assert DistContext().share(idx).tolist() == idx.tolist()


def test_trained_model_under_torchrun_reports_through_pipes_like_one_process(tmp_path, raw_dir):
    """TrainingDevice(processes=2): torchrun launched through Dagster Pipes; rank 0 sends the per-epoch
    observations (with progress and ETA) and the final metadata, with the same keys as a single-process run."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
    from crrecon_pipeline.defs.resources import TrainingDevice

    from .dagster_helpers import DATA_ASSETS, new_instance, resources
    from .helpers import tiny_config

    instance = new_instance(["0", "1"])
    for k in ("0", "1"):  # the lineage decides what trains: prepare both shards through the assets
        assert dg.materialize(DATA_ASSETS, partition_key=k, instance=instance,
                              resources=resources(tmp_path, raw_dir)).success
    run_config = dg.RunConfig({"trained_model": TrainedModelConfig(**tiny_config("training.epochs=2").to_dict())})
    results = {}
    for processes in (2, 1):
        result = dg.materialize([trained_model], instance=instance, run_config=run_config,
                                resources=resources(tmp_path, raw_dir)
                                | {"device": TrainingDevice(device="cpu", processes=processes)})
        assert result.success
        observations = [r.asset_observation.metadata for r in
                        instance.fetch_observations(dg.AssetKey("trained_model"), limit=10).records
                        if r.run_id == result.run_id]
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        results[processes] = (result.asset_materializations_for_node("trained_model")[0].metadata, observations, logs)
    (ddp, ddp_obs, ddp_logs), (one, one_obs, _) = results[2], results[1]
    assert ddp["device"].value == "cpu x 2 ranks" and one["device"].value == "cpu"
    assert set(ddp) == set(one) and ddp["epochs_completed"].value == 2
    assert set(ddp["training_set"].value) == {"0", "1"}  # every rank loaded exactly the lineage's versions
    assert ddp["training_set"].value == one["training_set"].value
    assert "data:image/png;base64" in ddp["loss_curves"].value
    assert sorted(o["epoch"].value for o in ddp_obs) == [1, 2]
    for obs in (ddp_obs, one_obs):
        figures = {"loss_curves", "samples_val", "samples_train"}  # drawn on the epochs their pace says
        assert all(set(o) - figures == set(one_obs[0]) - figures
                   and f"epoch {o['epoch'].value}/2" in o["progress"].value
                   and o["eta_s"].value >= 0 for o in obs)
        # every epoch's dashboard, in process and from torchrun rank 0 through Pipes
        assert all(o["dashboard"].value.startswith(f"![dashboard, epoch {o['epoch'].value}/2](data:image/png")
                   for o in obs)
    assert any(", batch " in m for m in ddp_logs), "progress lines within an epoch come through Pipes"


def test_bad_input_in_the_ranks_fails_the_step_in_one_line(tmp_path, raw_dir):
    """A DataError raised inside the torchrun ranks reaches the step failure as its one line (via rank 0's Pipes)."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
    from crrecon_pipeline.defs.resources import TrainingDevice

    from .dagster_helpers import DATA_ASSETS, new_instance, resources
    from .helpers import tiny_config

    instance = new_instance(["0"])
    assert dg.materialize(DATA_ASSETS, partition_key="0", instance=instance,
                          resources=resources(tmp_path, raw_dir)).success
    cfg = TrainedModelConfig(**tiny_config("training.epochs=1", "data.out_len=20", "model.params.out_len=20").to_dict())
    result = dg.materialize([trained_model], instance=instance, raise_on_error=False,
                            run_config=dg.RunConfig({"trained_model": cfg}),
                            resources=resources(tmp_path, raw_dir)
                            | {"device": TrainingDevice(device="cpu", processes=2)})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert description == "prepared data has 30 spectral bins, data.out_len is 20"


def test_pretrained_model_honours_processes(tmp_path):
    """pretrained_model launches its training the way trained_model does: TrainingDevice(processes=2) trains in two
    torchrun ranks through Dagster Pipes (rank 0 reports the epochs and the same final metadata)."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.pretrain import PretrainedModelConfig, pretrained_model
    from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource, TrainingDevice

    from .helpers import tiny_config

    instance = dg.DagsterInstance.ephemeral()
    resources = {"paths": CrreconPaths(home=str(tmp_path)), "filtering": FilterSettings(),
                 "simulator": SimulatorResource(), "device": TrainingDevice(device="cpu", processes=2)}
    config = PretrainedModelConfig(**tiny_config("training.epochs=1", "training.save_every=0").to_dict(),
                                   simulator={"rows": 40, "fidelity": "thin"})
    result = dg.materialize([pretrained_model], instance=instance, resources=resources,
                            run_config=dg.RunConfig({"pretrained_model": config}))
    assert result.success
    meta = result.asset_materializations_for_node("pretrained_model")[0].metadata
    assert meta["device"].value == "cpu x 2 ranks" and meta["epochs_completed"].value == 1
    assert meta["pretrain_rows"].value == 40 and meta["checkpoint"].value.startswith(str(tmp_path / "pretrain"))
    assert {"val_mse", "baseline_val_mse", "model_card", "simulation"} <= set(meta)
    observations = instance.fetch_observations(dg.AssetKey("pretrained_model"), limit=10).records
    assert [r.asset_observation.metadata["epoch"].value for r in observations] == [1]
