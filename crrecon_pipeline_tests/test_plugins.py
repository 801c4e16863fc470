"""Models and losses from other installed packages (entry points): the worked example of docs/extending.md,
installed into a temporary folder, trains and predicts by name through `crrecon` in fresh processes and shows in the
launchpad's choices; a broken plugin is one line naming its entry point and breaks nothing else."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.losses.terms import TermLoss
from crrecon_pipeline.registry import Registry

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "crrecon-tiny-mlp"


def example_files() -> dict[str, str]:
    """The example package's files, as docs/extending.md shows them (each block's first line names its path)."""
    text = (REPO / "docs" / "extending.md").read_text()
    files = {}
    for block in re.findall(r"```(?:toml|python)\n(.*?)```", text, flags=re.S):
        first, _, body = block.partition("\n")
        if first.startswith(f"# {EXAMPLE}/"):
            files[first.removeprefix(f"# {EXAMPLE}/")] = body
    assert set(files) == {"pyproject.toml", "crrecon_tiny_mlp.py"}, sorted(files)
    return files


def broken_plugin(folder: Path) -> Path:
    """An installed distribution (its metadata only) whose model entry point names a module that does not exist."""
    info = folder / "crrecon_broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crrecon-broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[crrecon_pipeline.models]\nbroken = no_such_module:Model\n")
    return folder


def cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """PYTHONPATH with the example installed by pip (no index, no build isolation) and the broken plugin."""
    root = tmp_path_factory.mktemp("plugins")
    src = root / EXAMPLE
    src.mkdir()
    for name, body in example_files().items():
        (src / name).write_text(body)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1"}
    site = root / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                          "--target", site, src], capture_output=True, text=True, env=env, timeout=600)
    assert pip.returncode == 0, pip.stderr
    assert (site / "crrecon_tiny_mlp.py").is_file()
    return env | {"PYTHONPATH": os.pathsep.join([str(site), str(broken_plugin(root / "broken"))])}


def test_the_documented_plugin_trains_and_predicts_by_name(plugin_env, prepared_dir, raw_dir, tmp_path):
    sets = ["model.name=tiny_mlp", "model.params={hidden: 16}", "loss.name=mae", "loss.params={}",
            "training.epochs=1", "data.batch_size=64", "data.augment_shifts=false", "output.tensorboard=false"]
    trained = cli(["train", "--config", "quick", "--prepared", prepared_dir, "--out", tmp_path / "run",
                   "--device", "cpu", *sum((["--set", s] for s in sets), [])], plugin_env, tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert result["model"] == "tiny_mlp" and result["loss"] == "mae" and result["epochs_completed"] == 1
    assert result["val_terms"].keys() == {"mae"} and np.isfinite(result["val_mse"])
    assert result["val_mse"] < result["baseline_val_mse"] * 10  # it trained: a finite, sane error

    np.save(tmp_path / "s.npy", np.load(raw_dir / "binary_dataset_128_0.npy")[:3])
    predict = ["predict", "--checkpoint", tmp_path / "run" / "best.pt", "--structures", tmp_path / "s.npy",
               "--out", tmp_path / "p.npy"]
    predicted = cli(predict, plugin_env, tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert np.load(tmp_path / "p.npy").shape == (3, 2, 2, 30)
    # without the package installed, the checkpoint's model is unknown: one line, not a traceback
    bare = cli(predict, {k: v for k, v in plugin_env.items() if k != "PYTHONPATH"}, tmp_path)
    assert bare.returncode == 2 and "unknown model 'tiny_mlp'" in bare.stderr and "Traceback" not in bare.stderr


def test_the_launchpad_lists_the_plugin_and_a_broken_one_is_one_line(plugin_env, tmp_path):
    code = ("from crrecon_pipeline.defs.assets.training import REGISTRY_CHOICES as c; "
            "print(c['model.name'][0], c['loss.name'][0], 'tiny_mlp:' in c['model.params:description'])")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plugin_env,
                           cwd=tmp_path, timeout=600)
    assert shown.returncode == 0, shown.stderr
    assert "'tiny_mlp'" in shown.stdout and "'mae'" in shown.stdout and shown.stdout.strip().endswith("True")
    assert "'broken'" not in shown.stdout

    refused = cli(["train", "--config", "quick", "--out", tmp_path / "run", "--set", "model.name=broken"],
                  plugin_env, tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert ("model.name: model plugin broken = no_such_module:Model (entry point group crrecon_pipeline.models): "
            "cannot be loaded (ModuleNotFoundError: No module named 'no_such_module')") in lines[0]


def test_registry_refuses_plugins_that_are_not_what_it_holds(monkeypatch):
    """A plugin of the wrong kind or with a built-in name stays out, each with its reason; the built-ins remain."""
    from importlib import metadata

    entries = [metadata.EntryPoint("mse", "crrecon_pipeline.registry:Registry", "g"),  # not a TermLoss
               metadata.EntryPoint("builtin", "crrecon_pipeline.losses.terms:TermLoss", "g"),
               metadata.EntryPoint("fine", "crrecon_pipeline.losses.terms:TermLoss", "g")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: [e for e in entries if e.group == group])
    registry = Registry("loss", "g", {"builtin": TermLoss}, base=TermLoss)
    assert sorted(registry) == ["builtin", "fine"]
    assert registry.broken["mse"].endswith("Registry is not a subclass of crrecon_pipeline.losses.terms.TermLoss")
    assert registry.broken["builtin"].endswith("the name is taken by a built-in loss")
    with pytest.raises(ConfigError, match=r"^loss plugin mse = crrecon_pipeline.registry:Registry \(entry point "):
        registry.lookup("mse")
    with pytest.raises(ConfigError, match=r"unknown loss 'nope' \(one of \['builtin', 'fine'\]\)"):
        registry.lookup("nope")
