"""Preprocessing speed and peak memory: `crrecon preprocess` (one pass per shard: filter, sign, bins, packing, the
rotated set, the raw and data checks, sha256 of every raw byte, the versioned store's atomic commit) against the
straightforward numpy script a competent user writes in an afternoon (per shard: np.load both files, boolean
mask, sign flip, band means, packbits, the 180-degree set, np.save; no hashing, no checks). Both run on the same
page-cached raw files, alternately, each in its own process under /usr/bin/time -v for its peak RSS and CPU time
(user + system: steadier than wall time on a shared machine, and it shows the work the hashing adds). The machine
(CPU model, cores, cache sizes from lscpu, load average) is printed beside the ratio: the ratio depends on it.

    python benchmarks/bench_preprocess.py [--raw DIR] [--rows 200000] [--repeat 3]
"""

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REFERENCE = r'''
import sys, numpy as np
from pathlib import Path
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
edges = np.append((np.arange(30) * 300) // 30, 301)
kept_total = 0
for k in sorted(int(p.stem.rsplit("_", 1)[1]) for p in raw.glob("binary_dataset_128_*.npy")):
    st = np.load(raw / f"binary_dataset_128_{k}.npy")
    sp = np.load(raw / f"spectra_latest_{k}.npy")
    keep = np.isfinite(sp).all(axis=(1, 2)) & (sp != 0).any(axis=(1, 2))
    rows = np.nonzero(keep)[0]
    binned = -(np.add.reduceat(sp[keep], edges[:-1], axis=2) / np.diff(edges)).astype(np.float32)
    bayer = np.stack([np.stack([binned[:, 0], binned[:, 1]], 1), np.stack([binned[:, 1], binned[:, 2]], 1)], 1)
    flat = st[keep].reshape(len(rows), -1)
    np.save(out / f"structures_{k}.npy", np.packbits(flat, axis=1))
    np.save(out / f"structures_rotated_{k}.npy", np.packbits(flat[:, ::-1], axis=1))  # 180 degrees: bits reversed
    np.save(out / f"bayer_{k}.npy", bayer)
    np.save(out / f"bayer_rotated_{k}.npy", bayer[:, ::-1, ::-1])
    np.save(out / f"rows_{k}.npy", rows)
    kept_total += len(rows)
print(kept_total)
'''

PROJECT = r'''
import sys
from crrecon_pipeline.cli import main
sys.exit(main(["preprocess", "--raw", sys.argv[1], "--out", sys.argv[2]]))
'''

FILTER_ONE_SHARD = r'''
import sys, time
from crrecon_pipeline.data.prepare import prepare_shard
t = time.perf_counter()
v = prepare_shard(sys.argv[1], 0, sys.argv[2])
print(v.manifest["record"]["raw_rows"] / (time.perf_counter() - t))
'''


def machine() -> str:
    """CPU model, cores and caches (lscpu), and the load average: what the ratio was measured on."""
    try:
        info = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                                                   check=True).stdout.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        info = {}
    keys = ("Model name", "CPU(s)", "L1d cache", "L2 cache", "L3 cache")
    parts = [f"{k}: {info[k].strip()}" for k in keys if k in info]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    return "; ".join(parts + [f"load average {' '.join(load)}"])


def timed(code: str, raw: Path, out: Path) -> tuple[float, float, str, float]:
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, str(raw), str(out)], capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", res.stderr).group(1))
              for kind in ("User", "System"))
    return wall, rss_kib / 1024, res.stdout.strip().splitlines()[-1], cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", type=Path)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pre-"))
    try:
        raw = args.raw
        if raw is None:
            raw = tmp / "raw"
            subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "simulate", "--out", str(raw),
                            "--rows", str(args.rows)], check=True, cwd=ROOT)
        size = sum(p.stat().st_size for p in raw.glob("*.npy")) / 2**30
        for p in raw.glob("*.npy"):  # page-cache the raw files for both contenders
            with open(p, "rb") as f:
                while f.read(1 << 26):
                    pass
        walls: dict[str, list] = {"reference": [], "crrecon": []}
        cpus: dict[str, list] = {"reference": [], "crrecon": []}
        rss: dict[str, float] = {}
        before = machine()
        for i in range(args.repeat):
            for name, code in (("reference", REFERENCE), ("crrecon", PROJECT)):  # alternate: same machine state
                out = tmp / f"out-{name}"
                wall, peak, _, cpu = timed(code, raw, out)
                walls[name].append(wall)
                cpus[name].append(cpu)
                rss[name] = max(rss.get(name, 0), peak)
                shutil.rmtree(out, ignore_errors=True)
        out = tmp / "out-filter"
        _, _, rate, _ = timed(FILTER_ONE_SHARD, raw, out)
        shutil.rmtree(out, ignore_errors=True)
        print(f"machine: {before} (before); load average {machine().rsplit('load average ', 1)[-1]} (after)")
        print(f"raw: {raw} ({size:.2f} GiB), {args.repeat} alternating runs each")
        for name in walls:
            print(f"{name:10s} wall median {statistics.median(walls[name]):6.2f} s "
                  f"(all: {', '.join(f'{w:.2f}' for w in walls[name])})   CPU median "
                  f"{statistics.median(cpus[name]):6.2f} s   peak RSS {rss[name]:6.0f} MiB")
        ratio = statistics.median(walls["reference"]) / statistics.median(walls["crrecon"])
        per_run = [r / c for r, c in zip(walls["reference"], walls["crrecon"])]
        cpu_ratio = statistics.median(cpus["reference"]) / statistics.median(cpus["crrecon"])
        total_rows = args.rows if args.raw is None else None
        print(f"crrecon preprocess is {ratio:.2f}x faster than the reference (median of walls; median of the "
              f"per-pair ratios {statistics.median(per_run):.2f}x; target >= 3), using {cpu_ratio:.2f}x less CPU, "
              f"peak RSS {rss['crrecon']:.0f} MiB (target <= 1024), sha256 of every raw byte included")
        print(f"filtered_bayer's core (prepare_shard, one shard, no rotation): {float(rate):,.0f} rows/s")
        print(json.dumps({"walls": walls, "cpu_s": cpus, "peak_rss_mib": rss, "ratio": ratio,
                          "pair_ratio_median": statistics.median(per_run), "cpu_ratio": cpu_ratio,
                          "prepare_shard_rows_per_s": float(rate), "rows": total_rows, "machine": before}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
