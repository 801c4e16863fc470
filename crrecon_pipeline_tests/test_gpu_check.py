"""benchmarks/gpu_check.py in CI's CPU mode: it says there is no CUDA, runs every check and measurement on tiny
models, writes $OUT/gpu_check.json and exits 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the full check runs (make gpu-check)")
def test_gpu_check_runs_its_cpu_smoke_mode(tmp_path):
    env = os.environ | {"OUT": str(tmp_path), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("no CUDA device on this machine")
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["mode"] == "cpu-smoke" and result["machine"]["torch"] == torch.__version__
    checks = {c["check"]: c for c in result["checks"]}
    assert all(c["ok"] for name, c in checks.items() if not name.startswith("2 NCCL")), checks
    assert {"fp32 steps CPU = cpu (default)", "bf16 autocast near fp32 (quick)", "predict and design on cpu",
            "simulator multislice: cpu = CPU", "checkpoint written on cpu resumes on cpu"} <= set(checks)
    measured = {m["measurement"]: m for m in result["measurements"]}
    assert all(m["value"] is not None and m["value"] > 0 for m in measured.values()), measured
    assert "train default (crrecon_xattn) batch 8 bf16 compiled" in measured and "design (8 designs)" in measured
    assert f"| {'simulate thin':<58} |" in done.stdout  # the table carries the JSON's rows
