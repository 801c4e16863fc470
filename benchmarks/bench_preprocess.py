"""Preprocessing speed and peak memory: `crrecon preprocess` (one pass per shard: filter, sign, bins, packing, the
rotated set, the raw and data checks, the BLAKE3 digest of every raw byte, the versioned store's atomic commit)
against the straightforward numpy script a competent user writes in an afternoon (per shard: np.load both files,
boolean mask, sign flip, band means, packbits, the 180-degree set, np.save; no hashing, no checks).

It prints the machine (CPU model, cores, caches, load average) and the speed of each digest on this CPU (SHA-256,
BLAKE3 on one thread and on every core), then runs two layouts of the same rows: the research group's (2 shards of
100,000 rows, 3.7 GiB) and 8 smaller shards. Both commands run on the same page-cached raw files, alternately, each
in its own process under /usr/bin/time -v (peak RSS, CPU time); it reports the median and spread of the walls.

The raw files are made once and kept in --cache (reused by later runs): `crrecon simulate` of --seed-rows rows
(the built-in thin-element simulator, 47 % unfinished rows as in the research data), repeated in order to fill
each layout: hashing, filtering and packing cost the same whatever the rows hold, and simulating 200,000 rows on a
loaded 2-core machine takes many minutes (--seed-rows 200000: every row simulated). Both layouts need
2 x rows x 19.6 KB of disk; with less free space it halves the rows and says so.

    python benchmarks/bench_preprocess.py [--cache /tmp/crrecon-bench-raw] [--rows 100000] [--repeat 5]
"""

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROW_BYTES = 128 * 128 + 3 * 301 * 4  # one raw row: structures (uint8) + spectra (float32)

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


def machine() -> str:
    """CPU model, cores and caches (lscpu), and the load average: what the ratio was measured on."""
    try:
        info = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                                                   check=True).stdout.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        info = {}
    keys = ("Model name", "CPU(s)", "L1d cache", "L2 cache", "L3 cache")
    parts = [f"{k}: {info[k].strip()}" for k in keys if k in info]
    return "; ".join(parts + [f"load average {load()}"])


def load() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def digest_speeds(mib: int = 512, repeat: int = 3) -> dict[str, float]:
    """MB/s of each digest over one buffer in memory, best of `repeat`."""
    data = memoryview(np.random.default_rng(0).integers(0, 256, mib << 20, dtype=np.uint8))
    hashers = {"sha256 (hashlib)": hashlib.sha256, "blake3, 1 thread": lambda: blake3.blake3(max_threads=1),
               "blake3, all cores": lambda: blake3.blake3(max_threads=blake3.blake3.AUTO)}
    speeds = {}
    for name, make in hashers.items():
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            h = make()
            h.update(data)
            h.hexdigest()
            best = min(best, time.perf_counter() - t)
        speeds[name] = len(data) / 1e6 / best
    return speeds


def seed_rows(cache: Path, rows: int) -> tuple[Path, Path]:
    """The simulated rows every layout repeats: made once with `crrecon simulate`, kept in the cache."""
    seed = cache / f"seed-{rows}"
    if not (seed / "spectra_latest_0.npy").is_file():
        tmp = cache / f"seed-{rows}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "simulate", "--out", str(tmp), "--rows",
                        str(rows), "--shards", "1"], check=True, cwd=ROOT)
        tmp.rename(seed)
    return seed / "binary_dataset_128_0.npy", seed / "spectra_latest_0.npy"


def layout(cache: Path, seed: tuple[Path, Path], shards: int, rows: int) -> Path:
    """`shards` raw shard pairs of `rows` rows each, the seed rows repeated in order (made once, then reused)."""
    out = cache / f"{shards}x{rows}"
    if (out / f"spectra_latest_{shards - 1}.npy").is_file():
        return out
    tmp = cache / f"{shards}x{rows}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sources = [np.load(p, mmap_mode="r") for p in seed]
    n = len(sources[0])
    for k in range(shards):
        for name, src in zip(("binary_dataset_128", "spectra_latest"), sources):
            dst = np.lib.format.open_memmap(tmp / f"{name}_{k}.npy", "w+", src.dtype, (rows,) + src.shape[1:])
            for first in range(0, rows, 4096):  # bounded memory: a few thousand rows at a time
                idx = (k * rows + np.arange(first, min(first + 4096, rows))) % n
                dst[first:first + len(idx)] = src[idx]
            dst.flush()
            del dst
    tmp.rename(out)
    return out


def timed(code: str, raw: Path, out: Path) -> tuple[float, float, float]:
    """(wall s, peak RSS MiB, CPU s) of one command in its own process."""
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, str(raw), str(out)], capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", res.stderr).group(1))
              for kind in ("User", "System"))
    return wall, rss_kib / 1024, cpu


def page_cache(raw: Path) -> float:
    size = 0
    for p in raw.glob("*.npy"):  # the same starting point for both contenders
        with open(p, "rb") as f:
            while block := f.read(1 << 26):
                size += len(block)
    return size / 2**30


def alternate(raw: Path, repeat: int, work: Path) -> dict:
    """Both commands on one raw folder, alternately (the same machine state for each pair)."""
    page_cache(raw)
    runs: dict[str, dict[str, list]] = {name: {"wall": [], "rss": [], "cpu": []} for name in ("reference", "crrecon")}
    for _ in range(repeat):
        for name, code in (("reference", REFERENCE), ("crrecon", PROJECT)):
            out = work / f"out-{name}"
            wall, rss, cpu = timed(code, raw, out)
            shutil.rmtree(out, ignore_errors=True)
            for key, value in (("wall", wall), ("rss", rss), ("cpu", cpu)):
                runs[name][key].append(value)
    return runs


def report(title: str, size_gib: float, runs: dict) -> dict:
    print(f"\n{title} ({size_gib:.2f} GiB), {len(runs['crrecon']['wall'])} alternating runs each; "
          f"load average now {load()}")
    print(f"| {'':20} | {'wall median':>11} | {'spread (min-max)':>16} | {'CPU median':>10} | {'peak RSS':>9} |")
    for name, r in runs.items():
        label = "reference script" if name == "reference" else "crrecon preprocess"
        print(f"| {label:20} | {statistics.median(r['wall']):9.2f} s | {min(r['wall']):6.2f}-{max(r['wall']):6.2f} s "
              f"| {statistics.median(r['cpu']):8.2f} s | {max(r['rss']):5.0f} MiB |")
    ratio = statistics.median(runs["reference"]["wall"]) / statistics.median(runs["crrecon"]["wall"])
    pairs = [r / c for r, c in zip(runs["reference"]["wall"], runs["crrecon"]["wall"])]
    print(f"crrecon preprocess: {ratio:.2f}x the reference (median of walls; per-pair ratios "
          f"{min(pairs):.2f}-{max(pairs):.2f}x, median {statistics.median(pairs):.2f}x; target >= 3), peak RSS "
          f"{max(runs['crrecon']['rss']):.0f} MiB (target <= 1024), BLAKE3 of every raw byte and all checks included")
    return {"ratio": ratio, "pair_ratios": pairs, "runs": runs, "gib": size_gib}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "crrecon-bench-raw")
    ap.add_argument("--rows", type=int, default=100_000, help="rows per shard of the group's 2-shard layout")
    ap.add_argument("--seed-rows", type=int, default=20_000, help="rows simulated once, repeated to fill the layouts")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    speeds = digest_speeds()
    print("digests on one 512 MiB buffer: " + ", ".join(f"{k} {v:,.0f} MB/s" for k, v in speeds.items()))
    rows, free = args.rows, shutil.disk_usage(args.cache).free
    while rows > 1000 and free < 2 * 2 * rows * ROW_BYTES * 1.3:  # both layouts, plus the outputs
        rows //= 2
    if rows != args.rows:
        print(f"only {free / 2**30:.1f} GiB free in {args.cache}: {rows:,} rows per shard instead of {args.rows:,}")
    seed = seed_rows(args.cache, min(args.seed_rows, 2 * rows))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-pre-", dir=args.cache) as work:
        for name, shards in (("group layout", 2), ("8 shards", 8)):
            raw = layout(args.cache, seed, shards, 2 * rows // shards)
            size = page_cache(raw)
            title = f"{name}: {shards} x {2 * rows // shards:,} rows, {raw}"
            results[name] = report(title, size, alternate(raw, args.repeat, Path(work)))
    print(json.dumps({"machine": machine(), "digests_mb_s": speeds, "results": results}))


if __name__ == "__main__":
    main()
