"""A non-editable install works: build the wheel, install it into a fresh venv outside the repo (torch, dagster,
... from this venv through a .pth, the package itself only from the wheel), and from a folder outside the repo
validate the code location and train the packaged quick preset for one epoch on tiny simulated data."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(cmd, cwd, env, timeout=600):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: {res.stderr[-3000:]}"
    return res


def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRRECON_HOME", "CRRECON_RAW_DIR")}
    env |= {"DAGSTER_HOME": str(tmp_path / "dagster_home"), "CRRECON_HOME": str(tmp_path / "home"),
            "PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1"}
    (tmp_path / "dagster_home").mkdir()
    src = tmp_path / "src"  # build from a clean copy: no build/ or egg-info left in the repo, none reused from it
    shutil.copytree(REPO / "crrecon_pipeline", src / "crrecon_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "setup.cfg"):
        shutil.copy(REPO / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src],
        cwd=tmp_path, env=env)
    wheel = next((tmp_path / "dist").glob("crrecon_pipeline-*.whl"))

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    target = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      tmp_path, env).stdout.strip())
    # dependencies from this venv, appended after the new venv's own site-packages (the editable hook is not run)
    (target / "deps_from_repo_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "-q", wheel], cwd=tmp_path, env=env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([python, "-c", "import crrecon_pipeline, os; print(os.path.dirname(crrecon_pipeline.__file__))"],
                work, env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert not (work / "configs").exists()

    validate = run([python, "-m", "dagster", "definitions", "validate", "-m", "crrecon_pipeline.definitions"],
                   work, env)
    assert "All code locations passed validation" in validate.stderr + validate.stdout

    crrecon = venv / "bin" / "crrecon"
    run([crrecon, "simulate", "--out", "raw", "--rows", "160", "--shards", "1", "--seed", "3"], work, env)
    trained = run([crrecon, "train", "--config", "quick", "--raw", "raw", "--out", "run", "--device", "cpu",
                   "--set", "training.epochs=1", "--set", "data.batch_size=32"], work, env)
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert result["epochs_completed"] == 1 and result["val_mse"] > 0
    assert Path(result["best_checkpoint"]).is_file() and (work / "run" / "metrics.jsonl").is_file()
