"""What coordinating writers costs `crrecon preprocess`: the store lock, the writer's lease and the flocked
temporaries (variant `now`) against the same code with every flock call a no-op (`no-flock`), and reading raw rows
into buffers (`now`) against the memory-mapped windows of earlier versions (`mmap`, which a truncation under the
mapping turns into SIGBUS). The variants run alternately, each in its own process, into a fresh store each time,
on the same page-cached raw files; wall and CPU time (user + system) per run, medians printed.

    python benchmarks/bench_store_locking.py [--raw DIR] [--rows 200000] [--shards 8] [--repeat 3]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "now": "",
    "no-flock": (
        "import crrecon_pipeline.data.store as s, crrecon_pipeline.data.npyio as n\n"
        "class F:\n"
        "    LOCK_EX, LOCK_NB = 2, 4\n"
        "    @staticmethod\n"
        "    def flock(*a): pass\n"
        "s.fcntl = n.fcntl = F\n"),
    "mmap": (
        "import mmap, numpy as np, crrecon_pipeline.data.rawfiles as r\n"
        "def _map_rows(f, header, first, count, buffer=None):\n"
        "    start = header.offset + first * header.row_bytes\n"
        "    base = start - start % mmap.ALLOCATIONGRANULARITY\n"
        "    window = mmap.mmap(f.fileno(), start - base + count * header.row_bytes, access=mmap.ACCESS_READ,\n"
        "                       offset=base)\n"
        "    array = np.frombuffer(window, header.dtype, count * int(np.prod(header.shape[1:])), start - base)\n"
        "    return memoryview(window)[start - base:], array.reshape((count,) + header.shape[1:])\n"
        "r._read_rows = _map_rows\n"),
}

RUN = "import sys\nfrom crrecon_pipeline.cli import main\nsys.exit(main(['preprocess', '--raw', sys.argv[1], " \
      "'--out', sys.argv[2]]))\n"


def make_raw(folder: Path, rows: int, shards: int) -> None:
    """Random rows in the raw format (the preparation's cost does not depend on the physics), 47 % unfinished."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(np.diff(np.linspace(0, rows, shards + 1).astype(int))):
        np.save(folder / f"binary_dataset_128_{k}.npy", (rng.random((n, 1, 128, 128)) < 0.3).astype(np.uint8))
        spectra = -rng.random((n, 3, 301), dtype=np.float32) * 0.5 - 0.01
        spectra[rng.random(n) < 0.47] = 0
        np.save(folder / f"spectra_latest_{k}.npy", spectra)


def timed(variant: str, raw: Path, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", VARIANTS[variant] + RUN, str(raw), str(out)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, env=os.environ | {"CRRECON_TEST_PAUSE": ""})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", type=Path)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "raw"
        if args.raw is None:
            make_raw(raw, args.rows, args.shards)
        timed("now", raw, Path(tmp) / "warm")  # page cache warm for every variant
        results: dict[str, list] = {v: [] for v in VARIANTS}
        for _ in range(args.repeat):
            for variant in VARIANTS:
                results[variant].append(timed(variant, raw, Path(tmp) / "out"))
    summary = {v: {"wall_s": [round(w, 2) for w, _ in r], "cpu_s": [round(c, 2) for _, c in r],
                   "median_wall_s": round(statistics.median(w for w, _ in r), 2),
                   "median_cpu_s": round(statistics.median(c for _, c in r), 2)} for v, r in results.items()}
    for v in VARIANTS:
        print(f"{v:9s} wall {summary[v]['wall_s']} (median {summary[v]['median_wall_s']} s), "
              f"cpu {summary[v]['cpu_s']} (median {summary[v]['median_cpu_s']} s)")
    print(json.dumps({"summary": summary, "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
