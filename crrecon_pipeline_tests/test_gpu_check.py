"""benchmarks/gpu_check.py in CI's CPU mode: it says there is no CUDA, runs every check and measurement on tiny
models, writes $OUT/gpu_check.json and exits 0. And the way it travels to a lent GPU machine (whose image has only
PyTorch, numpy, pandas, matplotlib, tensorboard, tqdm and pyyaml, and no package index): with only those packages
importable plus the wheels benchmarks/gather_gpu_wheels.py gathers, benchmarks/run_gpu_check.sh runs it."""

import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from gather_gpu_wheels import IMAGE, gather  # noqa: E402

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the full check runs (make gpu-check)")


def run_timed(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    return done, time.perf_counter() - t


def assert_smoke_result(done: subprocess.CompletedProcess, wall_s: float, out: Path) -> dict:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("no CUDA device on this machine")
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["mode"] == "cpu-smoke" and result["machine"]["torch"] == torch.__version__
    checks = {c["check"]: c for c in result["checks"]}
    assert all(c["ok"] for name, c in checks.items() if not name.startswith("2 NCCL")), checks
    assert {"fp32 steps CPU = cpu (default)", "bf16 autocast near fp32 (quick)", "predict and design on cpu",
            "simulator multislice: cpu = CPU", "checkpoint written on cpu resumes on cpu"} <= set(checks)
    measured = {m["measurement"]: m for m in result["measurements"]}
    assert all(m["value"] is not None and m["value"] > 0 for m in measured.values()), measured
    assert {"train default (crrecon_xattn) batch 2 fp32", "train quick (cnn_field) batch 2 fp32 compiled",
            "design (2 designs)", "simulate rcwa (N=2, every 100 nm)"} <= set(measured)
    assert f"| {'simulate thin':<58} |" in done.stdout  # the table carries the JSON's rows
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"gpu_check CPU smoke mode: {wall_s:.1f} s wall, imports included ({result['seconds']} s after them; "
          f"load average {load})")
    return result


@NO_CUDA
@pytest.mark.slow
def test_gpu_check_runs_its_cpu_smoke_mode(tmp_path):
    env = os.environ | {"OUT": str(tmp_path), "OMP_NUM_THREADS": "2"}
    assert_smoke_result(*run_timed([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], env), tmp_path)


def distributions(names) -> dict[str, metadata.Distribution]:
    """The installed distributions `names` need: them and, recursively, what they require (markers evaluated)."""
    from packaging.requirements import Requirement

    found, todo = {}, list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. CUDA-only requirements of a CPU build
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def image_stand_in(folder: Path) -> Path:
    """A folder holding only the lent image's packages, linked from this environment: IMAGE and what they require."""
    folder.mkdir()
    for dist in distributions(IMAGE).values():
        for file in dist.files or []:
            if file.parts[0] in ("..", "__pycache__") or file.parts[0].endswith(".pth"):
                continue
            top = folder / file.parts[0]
            if not top.exists():
                top.symlink_to(Path(dist.locate_file(file.parts[0])).resolve())
    return folder


@NO_CUDA
@pytest.mark.slow
def test_gathered_wheels_carry_the_check_to_the_gpu_image(tmp_path):
    """The documented command (benchmarks/run_gpu_check.sh) with nothing importable but the image's packages and
    the gathered wheels: `python -S -s` (no site-packages) and PYTHONPATH = a stand-in of the image. The wheels are
    gathered for this interpreter (the lent image's are for 3.12: make gpu-wheels)."""
    wheels = tmp_path / "wheels"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        gathered = gather(wheels, version)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not download the wheels (no package index reachable? pip exit {exc.returncode})")
    names = {w.name.split("-")[0].lower() for w in gathered}
    assert {"pydantic", "pydantic_core", "blake3"} <= names and not any(n.startswith("dagster") for n in names)
    image = image_stand_in(tmp_path / "image")
    assert not (image / "pydantic").exists() and not (image / "dagster").exists() and (image / "torch").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "2", "WHEELS": str(wheels), "PYTHONPATH": str(image),
            "PYTHON": sys.executable, "CHECK_PYTHON": f"{sys.executable} -S -s", "TIMEOUT_S": "300"}
    done, wall_s = run_timed(["bash", str(ROOT / "benchmarks" / "run_gpu_check.sh")], env)
    assert_smoke_result(done, wall_s, tmp_path / "out")
