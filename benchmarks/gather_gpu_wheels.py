"""The wheels benchmarks/gpu_check.py needs on a lent GPU machine beyond what its image has, gathered here.

The lent machines run an image with Python 3.12 on x86-64 and IMAGE's packages (PyTorch with CUDA, numpy, pandas,
matplotlib, tensorboard, tqdm, pyyaml) and reach no package index. The check imports the project's data and train
code, which also needs the project's other runtime dependencies except Dagster (the check never imports it):
pydantic (with pydantic-core, annotated-types, typing-extensions, typing-inspection) and blake3. This script
downloads those wheels, and their dependencies, for that platform into a folder that travels with the working tree:
`build/gpu_wheels` is ignored by git, so the device tool takes it only when named in its `carry`. There
`benchmarks/run_gpu_check.sh` installs them into a temporary target and runs the check (docs/benchmarks.md).

    python benchmarks/gather_gpu_wheels.py [--dest build/gpu_wheels] [--python-version 3.12]   (make gpu-wheels)

A test (crrecon_pipeline_tests/test_gpu_check.py) gathers them for the interpreter that runs it and runs the
check's smoke mode with only IMAGE's packages and these wheels importable.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ("torch", "numpy", "pandas", "matplotlib", "tensorboard", "tqdm", "pyyaml")  # what the lent image has
NEVER = ("dagster",)  # project dependencies the check does not import (dagster, dagster-webserver, dagster-pipes)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64")


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def needed() -> list[str]:
    """The project's runtime dependencies that the image lacks, Dagster's family left out: pyproject is the list."""
    text = (ROOT / "pyproject.toml").read_text()  # the [project] dependencies array (no tomllib on Python 3.10)
    deps = re.findall(r'^\s*"([^"]+)"', re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1), re.M)
    return [d for d in deps if requirement_name(d) not in IMAGE and not requirement_name(d).startswith(NEVER)]


def gather(dest: Path, python_version: str, platforms: tuple[str, ...] = PLATFORMS) -> list[Path]:
    """Download binary wheels of needed() and their dependencies for that Python and platform; returns them."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python_version, "-d", str(dest)]
    for platform in platforms:
        cmd += ["--platform", platform]
    subprocess.run(cmd + needed(), check=True)
    return sorted(dest.glob("*.whl"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=ROOT / "build" / "gpu_wheels")
    ap.add_argument("--python-version", default="3.12")
    args = ap.parse_args()
    try:
        wheels = gather(args.dest, args.python_version)
    except subprocess.CalledProcessError as exc:
        print(f"gather_gpu_wheels: pip download failed (exit {exc.returncode}); is a package index reachable?",
              file=sys.stderr)
        return 2
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {args.dest} (for {', '.join(needed())}): "
          + ", ".join(w.name.split("-")[0] for w in wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
