"""Resume and init against the checkpoint's config, a diverged run, and the one-line CLI errors of train/predict."""

import numpy as np
import pytest
import torch

from crrecon_pipeline import cli
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.train import checkpoints, records
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.schedule import Schedule
from crrecon_pipeline.train.setup import build_model

from .test_training import TINY, tiny_config


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def two_epochs(prepared_dir, tmp_path_factory):
    """A finished 2-epoch tiny run, the checkpoint the tests below resume from or start with."""
    run = tmp_path_factory.mktemp("two") / "run"
    train(tiny_config("training.epochs=2"), load_prepared(prepared_dir), run, device="cpu", log=quiet)
    return run


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_schedule_reaches_zero_and_never_climbs():
    s = Schedule.fresh(100, 0.05)
    assert s.factor(0) == pytest.approx(1e-3) and s.factor(5) == pytest.approx(1.0) and s.factor(100) == 0.0
    assert s.factor(130) == 0.0  # past the end: stays at 0 (the old cosine climbed back up)
    longer = s.extended(200)
    assert longer.warmup == s.warmup and longer.factor(200) == 0.0 and longer.factor(100) > 0.4
    assert all(longer.factor(k) >= longer.factor(k + 1) for k in range(60, 200))


def test_resume_with_more_epochs_rebuilds_the_schedule(prepared_dir, two_epochs, tmp_path):
    run = copy_run(two_epochs, tmp_path / "run")
    logs = []
    metrics = train(tiny_config("training.epochs=4"), load_prepared(prepared_dir), run, device="cpu", resume="auto",
                    log=logs.append)
    assert metrics.epochs_completed == 4
    assert any("training.epochs 2 -> 4" in m for m in logs)
    history = records.epoch_history(records.read_records(run / "metrics.jsonl"))
    lrs = [h.lr for h in history]
    assert [h.epoch for h in history] == [1, 2, 3, 4]
    assert lrs[1] == 0.0 and lrs[2] > lrs[3] == 0.0, lrs  # the 2-epoch run had ended at 0; 4 epochs end at 0 again
    lines = (run / "train_log.txt").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["1/2", "2/2", "3/4", "4/4"]


def test_resume_refuses_a_changed_model_in_one_line(two_epochs, tmp_path, prepared_dir, capsys):
    run = copy_run(two_epochs, tmp_path / "run")
    sets = sum((["--set", s] for s in TINY + ["training.epochs=3", "model.params.fields=16", "training.lr=0.01"]), [])
    rc = cli.main(["train", "--config", "quick", "--prepared", str(prepared_dir), "--out", str(run), "--device", "cpu",
                   "--resume", "auto", *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "model.params.fields" in err[0] and "training.lr" in err[0] and "training.epochs" not in err[0]


def test_resume_refuses_fewer_epochs_than_done(two_epochs, tmp_path, prepared_dir):
    with pytest.raises(ConfigError, match="already trained 2 epochs"):
        train(tiny_config("training.epochs=1"), load_prepared(prepared_dir), copy_run(two_epochs, tmp_path / "r"),
              device="cpu", resume="auto", log=quiet)


def test_init_weights_loads_weights_only(two_epochs, tmp_path, prepared_dir, capsys):
    source = checkpoints.load(two_epochs / "best.pt")
    out = tmp_path / "fine"
    sets = sum((["--set", s] for s in TINY + ["training.epochs=1", "training.lr=1e-12"]), [])
    rc = cli.main(["train", "--config", "quick", "--prepared", str(prepared_dir), "--out", str(out), "--device", "cpu",
                   "--init-weights", str(two_epochs / "best.pt"), *sets])
    assert rc == 0, capsys.readouterr().err
    state = checkpoints.load(out / "last.pt")
    assert state["epoch"] == 1 and state["config"]["training"]["init_from"] == str(two_epochs / "best.pt")
    steps = state["schedule"]["total"]
    assert all(int(s["step"]) == steps for s in state["optimizer"]["state"].values())  # fresh optimizer: one epoch
    # lr ~ 0: the weights are the source's (the learned output scale is set from this run's data, as always)
    diffs = [float((state["model"][k].float() - v.float()).abs().max()) for k, v in source["model"].items()
             if not k.startswith("scale.")]
    assert max(diffs) < 1e-6
    fresh = build_model(RunConfig.from_dict(state["config"])).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in source["model"].items() if v.dtype.is_floating_point)


def test_init_weights_skips_tensors_of_another_shape(two_epochs):
    """Fine-tuning across out_len: the spectral mix and output scale differ, the backbone and fields are taken."""
    state = checkpoints.load(two_epochs / "best.pt")
    config = RunConfig.from_dict(state["config"]).with_overrides({"data.out_len": 20, "model.params.out_len": 20})
    model = build_model(config)
    skipped = checkpoints.load_weights(model, state, config, two_epochs / "best.pt")
    assert "mix.weight" in skipped and not any(k.startswith(("backbone", "propagation")) for k in skipped)
    assert torch.equal(model.state_dict()["to_field.weight"], state["model"]["to_field.weight"])


def test_another_models_checkpoint_is_refused_in_one_line(two_epochs, tmp_path, prepared_dir, capsys):
    gru = ["model.params.channels=[8, 8, 8, 8, 8]", "model.params.d_model=16", "data.batch_size=32",
           "data.train_ratio=0.8", "training.epochs=1", "model.params.gru_layers=1"]
    sets = sum((["--set", s] for s in gru), [])
    base = ["train", "--config", "test_cnn_gru", "--prepared", str(prepared_dir), "--device", "cpu", *sets]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--init-weights", str(two_epochs / "best.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cnn_field checkpoint cannot initialize model crrecon_gru" in err[0], err
    run = copy_run(two_epochs, tmp_path / "b")  # resuming it as another model: the differing keys, not a traceback
    assert cli.main([*base, "--out", str(run), "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.name" in err[0] and "Traceback" not in err[0]


def test_nan_loss_stops_with_the_epoch_named(prepared_dir, tmp_path, capsys):
    out = tmp_path / "nan"
    sets = sum((["--set", s] for s in TINY + ["training.epochs=3", "training.lr=1e30", "training.grad_clip=0"]), [])
    rc = cli.main(["train", "--config", "quick", "--prepared", str(prepared_dir), "--out", str(out), "--device", "cpu",
                   *sets])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and "training diverged at epoch 1/3" in err[-1], err
    assert captured.out == ""  # no result JSON naming a best.pt that does not exist
    assert not (out / "best.pt").exists() and not list(out.glob(".*.tmp"))


def test_cli_one_line_errors_leave_no_temp_files(two_epochs, prepared_dir, raw_dir, tmp_path, capsys, monkeypatch):
    from crrecon_pipeline.train import inference

    s = np.load(raw_dir / "binary_dataset_128_0.npy")[:40]
    np.save(tmp_path / "s.npy", s)
    bad = s.copy()
    bad[37, 0, 5, 5] = 7  # beyond the first chunk: the whole file is checked
    np.save(tmp_path / "bad.npy", bad)
    monkeypatch.setattr(inference, "CHUNK_ROWS", 16)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    ckpt = str(two_epochs / "best.pt")
    predict = ["predict", "--checkpoint", ckpt, "--structures"]
    cases = [
        ([*predict, str(tmp_path / "s.npy"), "--out", str(tmp_path / "folder")], "is a folder"),
        ([*predict, str(tmp_path / "bad.npy"), "--out", str(tmp_path / "p.npy")], "rows 32..39"),
        ([*predict, str(tmp_path / "s.npy"), "--out", str(tmp_path / "p.npy"), "--device", "foo"], "--device foo"),
        (["train", "--config", "quick", "--prepared", str(prepared_dir), "--out", str(tmp_path / "afile"),
          "--device", "cpu"], "afile"),
        (["train", "--config", "quick", "--prepared", str(prepared_dir), "--out", str(tmp_path / "x"),
          "--device", "cpu", "--init-weights", str(tmp_path / "nope.pt")], "nope.pt"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*predict, str(tmp_path / "s.npy"), "--out", str(tmp_path / "p.npy"), "--device", "cuda"],
                      "no such CUDA GPU"))
    for argv, expected in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)
    assert not (tmp_path / "p.npy").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    assert cli.main([*predict, str(tmp_path / "s.npy"), "--out", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (40, 2, 2, 30)


def test_full_disk_while_checkpointing_then_resume(prepared_dir, tmp_path, capsys, monkeypatch):
    """ENOSPC in the 2nd epoch's checkpoint: one line, no .tmp left; the resumed run logs each epoch once."""
    out = tmp_path / "full"
    real_save, calls = torch.save, []

    def save_until_full(obj, f, *a, **kw):
        calls.append(f)
        if len(calls) > 2:  # epoch 1: best.pt + last.pt; epoch 2 runs out of space halfway through writing
            f.write(b"partial")  # checkpoints write through npyio.atomic_output's open temporary file
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoints.torch, "save", save_until_full)
    sets = sum((["--set", s] for s in TINY + ["training.epochs=3", "training.save_every=0"]), [])
    base = ["train", "--config", "quick", "--prepared", str(prepared_dir), "--out", str(out), "--device", "cpu", *sets]
    assert cli.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in err[-1] and len([e for e in err if "error" in e]) == 1
    assert not list(out.glob(".*.tmp")) and checkpoints.load(out / "last.pt")["epoch"] == 1
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert cli.main([*base, "--resume", "auto"]) == 0
    lines = (out / "train_log.txt").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    epochs = [r.epoch for r in records.read_records(out / "metrics.jsonl") if r.kind == "epoch"]
    assert epochs == [1, 2, 3]


def test_a_checkpoint_written_before_a_key_existed_resumes(prepared_dir, two_epochs, tmp_path):
    """An upgrade that adds run-config keys must not block resuming: the checkpoint's config is validated with
    today's defaults filled in before it is compared, so keys it lacks are not 'changed'."""
    run = copy_run(two_epochs, tmp_path / "run")
    state = checkpoints.load(run / "last.pt")
    for section, key in (("data", "train_all"), ("data", "oversample"), ("training", "min_lr_ratio")):
        del state["config"][section][key]  # as a checkpoint from before these keys existed stores it
    checkpoints.save_atomic(state, run / "last.pt")
    logs = []
    metrics = train(tiny_config("training.epochs=3"), load_prepared(prepared_dir), run, device="cpu", resume="auto",
                    log=logs.append)
    assert metrics.epochs_completed == 3 and not metrics.resume_changes
    assert any("training.epochs 2 -> 3" in m for m in logs)
    # a real change beside the missing keys is still refused, by name
    with pytest.raises(ConfigError, match=r"training\.lr") as refused:
        train(tiny_config("training.epochs=4", "training.lr=0.05"), load_prepared(prepared_dir), run, device="cpu",
              resume="auto", log=quiet)
    assert "min_lr_ratio" not in str(refused.value) and "train_all" not in str(refused.value)
