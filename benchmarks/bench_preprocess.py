"""Preprocessing speed and peak memory: the shipped streaming path against a straightforward numpy version
(load everything, mask, bin, stack, save), both on the same page-cached raw files, each in its own process
under /usr/bin/time -v (peak RSS counts pages of memory-mapped files).

    python benchmarks/bench_preprocess.py --raw DIR     (default: simulate 200,000 rows into a temp folder)
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NAIVE = r'''
import sys, numpy as np
from pathlib import Path
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
k = sorted(int(p.stem.rsplit("_", 1)[1]) for p in raw.glob("binary_dataset_128_*.npy"))
st = np.concatenate([np.load(raw / f"binary_dataset_128_{i}.npy") for i in k])
sp = np.concatenate([np.load(raw / f"spectra_latest_{i}.npy") for i in k])
keep = ~(sp == 0).all(axis=(1, 2)) & np.isfinite(sp).all(axis=(1, 2))
st, sp = st[keep], -sp[keep]
edges = np.append(np.arange(30) * 10, 301)
binned = (np.add.reduceat(sp, edges[:-1], axis=2) / np.diff(edges)).astype(np.float32)
bayer = np.stack([np.stack([binned[:, 0], binned[:, 1]], 1), np.stack([binned[:, 1], binned[:, 2]], 1)], 1)
out.mkdir(parents=True, exist_ok=True)
np.save(out / "struct.npy", st)
np.save(out / "bayer.npy", bayer)
np.save(out / "struct_rotated.npy", st[:, :, ::-1, ::-1])
np.save(out / "bayer_rotated.npy", bayer[:, ::-1, ::-1])
print(int(keep.sum()))
'''

FAST = r'''
import sys
from crrecon_pipeline.data import preprocess
print(preprocess(sys.argv[1], sys.argv[2])["kept_rows"])
'''


def timed(code: str, raw: Path, out: Path) -> tuple[float, float, str]:
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, str(raw), str(out)], capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    return wall, rss_kib / 1024, res.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", type=Path)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pre-"))
    try:
        raw = args.raw
        if raw is None:
            raw = tmp / "raw"
            subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "simulate", "--out", str(raw), "--rows", str(args.rows)],
                           check=True, cwd=ROOT)
        size = sum(p.stat().st_size for p in raw.glob("*.npy")) / 2**30
        for p in raw.glob("*.npy"):  # page-cache the raw files for both contenders
            with open(p, "rb") as f:
                while f.read(1 << 26):
                    pass
        results = {}
        for name, code in (("naive", NAIVE), ("streaming", FAST)) * args.repeat:
            out = tmp / f"out-{name}"
            wall, rss, kept = timed(code, raw, out)
            out_size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
            best = results.get(name)
            if best is None or wall < best["wall_s"]:
                results[name] = {"wall_s": round(wall, 2), "peak_rss_mib": round(rss), "kept_rows": int(kept), "output_mib": round(out_size)}
            shutil.rmtree(out, ignore_errors=True)
        print(f"raw: {raw} ({size:.2f} GiB)")
        for name, r in results.items():
            print(f"{name:10s} wall {r['wall_s']:7.2f} s   peak RSS {r['peak_rss_mib']:6d} MiB   output {r['output_mib']:6d} MiB   kept {r['kept_rows']}")
        ratio = results["streaming"]["wall_s"] / results["naive"]["wall_s"]
        print(f"streaming / naive wall time: {ratio:.2f} (target <= 0.5); peak RSS {results['streaming']['peak_rss_mib']} MiB (target <= 1024)")
        print(json.dumps(results))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
