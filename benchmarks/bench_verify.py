"""What verifying the prepared store's content costs: load_prepared with and without the
digest check (BLAKE3) of every output, and the hashing that the commit adds to `crrecon preprocess`, on N rows of random
binary structures with negative spectra (the physics does not matter to hashing). Page-cached files, best of R.

    python benchmarks/bench_verify.py [--rows 20000] [--repeat 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from crrecon_pipeline.data.digest import file_digest
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.store import PreparedStore


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "prepared"
        raw.mkdir()
        rng = np.random.default_rng(0)
        np.save(raw / "binary_dataset_128_0.npy", (rng.random((args.rows, 1, 128, 128)) < 0.3).astype(np.uint8))
        np.save(raw / "spectra_latest_0.npy", -rng.random((args.rows, 3, 301), dtype=np.float32))
        t_prep = best_of(1, lambda: preprocess(raw, out))
        files = [v.path / name for v in PreparedStore(out).latest_all().values() for name in v.manifest["files"]]
        filtered = PreparedStore(out).versions(0)[0]
        files += [filtered.path / name for name in filtered.manifest["files"]]
        size = sum(f.stat().st_size for f in files)
        t_hash = best_of(args.repeat, lambda: [file_digest(f) for f in files])
        t_plain = best_of(args.repeat, lambda: load_prepared(out, verify=False))
        t_verified = best_of(args.repeat, lambda: load_prepared(out))
    print(f"rows {args.rows}: preprocess {t_prep:.2f} s, of which hashing the outputs at commit ~{t_hash:.2f} s "
          f"({size / 1e6:.0f} MB, {size / 1e6 / t_hash:.0f} MB/s)")
    print(f"load_prepared: {t_plain * 1e3:.0f} ms without the digest check, {t_verified * 1e3:.0f} ms with it "
          f"(+{(t_verified - t_plain) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
