"""Data-quality checks on raw and prepared shards: plain functions the Dagster asset checks (and tests) call.

Each returns a CheckOutcome; the Dagster layer turns it into an AssetCheckResult.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import rotate_bayer, rotate_packed, row_status, structure_encoding
from .npyio import iter_chunks, read_header
from .rawfiles import open_shard

CHUNK_ROWS = 4096


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    warn_only: bool = False


# ------------------------------------------------------------------------------------------------ raw shards

def scan_raw_shard(raw_dir: str | Path, shard: int, n_wavelengths: int | None = None, progress=None) -> dict:
    """One streaming pass over a raw shard pair: checksums, value ranges, counts of unfinished/non-finite rows
    and of non-binary structure values. Headers are checked first (shape, dtype, row counts: DataError)."""
    raw = open_shard(raw_dir, shard, n_wavelengths)
    digests = {"structures": hashlib.sha256(), "spectra": hashlib.sha256()}
    for name, header in (("structures", raw.structures), ("spectra", raw.spectra)):
        with open(header.path, "rb") as f:
            while block := f.read(1 << 24):
                digests[name].update(block)
    encodings: set = set()
    unfinished = nonfinite = 0
    sp_min, sp_max = np.inf, -np.inf
    for (first, st), (_, sp) in zip(iter_chunks(raw.structures, CHUNK_ROWS), iter_chunks(raw.spectra, CHUNK_ROWS)):
        encodings.add(structure_encoding(st))
        finite, is_unfinished = row_status(sp)
        nonfinite += int((~finite).sum())
        unfinished += int(is_unfinished.sum())
        if finite.any():
            sp_min = min(sp_min, float(sp[finite].min()))
            sp_max = max(sp_max, float(sp[finite].max()))
        if progress:
            progress(len(st))
    encodings.discard(None)
    if not encodings:
        encoding = "all zero"
    elif "non-binary" in encodings:
        encoding = "non-binary"
    else:
        encoding = encodings.pop() if len(encodings) == 1 else "mixed"
    return {
        "shard": shard,
        "rows": raw.rows,
        "n_wavelengths": raw.n_wavelengths,
        "structures_path": str(raw.structures.path),
        "spectra_path": str(raw.spectra.path),
        "structures_sha256": digests["structures"].hexdigest(),
        "spectra_sha256": digests["spectra"].hexdigest(),
        "structures_shape": list(raw.structures.shape),
        "spectra_shape": list(raw.spectra.shape),
        "structures_dtype": str(raw.structures.dtype),
        "spectra_dtype": str(raw.spectra.dtype),
        "structure_encoding": encoding,
        "spectra_min": sp_min if np.isfinite(sp_min) else None,
        "spectra_max": sp_max if np.isfinite(sp_max) else None,
        "unfinished_rows": unfinished,
        "nonfinite_rows": nonfinite,
    }


def check_binary_structures(scan: dict) -> CheckOutcome:
    enc = scan["structure_encoding"]
    ok = enc in ("0/1", "0/255", "all zero")
    desc = f"structures are binary ({enc})" if ok else f"{scan['structures_path']}: structures are not binary ({enc})"
    return CheckOutcome(ok, desc, {"encoding": enc})


def check_finite_spectra(scan: dict, max_fraction: float) -> CheckOutcome:
    frac = scan["nonfinite_rows"] / max(scan["rows"], 1)
    return CheckOutcome(frac <= max_fraction,
                        f"{scan['nonfinite_rows']} of {scan['rows']} rows have NaN/Inf ({frac:.2%}; limit {max_fraction:.2%}); they are dropped",
                        {"nonfinite_rows": scan["nonfinite_rows"], "nonfinite_fraction": frac}, warn_only=True)


def check_sign_convention(scan: dict) -> CheckOutcome:
    mx = scan["spectra_max"]
    ok = mx is None or mx <= 1e-6
    return CheckOutcome(ok, f"raw spectra in [{scan['spectra_min']}, {mx}]: stored negative as the seed format says" if ok
                        else f"{scan['spectra_path']}: positive raw spectra (max {mx}); the seed format stores them negative",
                        {"spectra_min": scan["spectra_min"], "spectra_max": mx}, warn_only=True)


# ------------------------------------------------------------------------------------------------ prepared shards

def shard_record(prepared_dir: str | Path, shard: int) -> dict:
    return json.loads((Path(prepared_dir) / f"shard_{shard}.json").read_text())


def check_counts_consistent(record: dict) -> CheckOutcome:
    total = record["kept_rows"] + record["dropped_unfinished"] + record["dropped_nonfinite"]
    ok = total == record["raw_rows"]
    return CheckOutcome(ok, f"kept {record['kept_rows']} + unfinished {record['dropped_unfinished']} + non-finite "
                            f"{record['dropped_nonfinite']} = {total} {'=' if ok else '!='} raw {record['raw_rows']}",
                        {k: record[k] for k in ("raw_rows", "kept_rows", "dropped_unfinished", "dropped_nonfinite")})


def check_no_bad_rows_left(prepared_dir: str | Path, shard: int) -> CheckOutcome:
    """Re-reads the written Bayer file: no all-zero row, nothing non-finite, nothing negative."""
    h = read_header(Path(prepared_dir) / f"bayer_{shard}.npy")
    zero = nonfinite = negative = 0
    for _, b in iter_chunks(h, 1 << 16):
        flat = b.reshape(len(b), -1)
        nonfinite += int((~np.isfinite(flat)).any(axis=1).sum())
        zero += int((flat == 0).all(axis=1).sum())
        negative += int((flat < 0).any(axis=1).sum())
    ok = zero == 0 and nonfinite == 0 and negative == 0
    return CheckOutcome(ok, f"{h.shape[0]} kept rows: {zero} all-zero, {nonfinite} non-finite, {negative} with negative values",
                        {"rows": h.shape[0], "zero_rows": zero, "nonfinite_rows": nonfinite, "negative_rows": negative})


def check_greens_equal(record: dict, tolerance: float = 1e-6) -> CheckOutcome:
    mism = record["max_green_mismatch"]
    return CheckOutcome(mism <= tolerance, f"max |G1 - G2| = {mism:.3g} (tolerance {tolerance:g})", {"max_green_mismatch": mism})


def check_kept_fraction(record: dict, low: float, high: float) -> CheckOutcome:
    frac = record["kept_fraction"]
    return CheckOutcome(low <= frac <= high, f"kept fraction {frac:.3f} (expected {low}..{high}; the seed data keeps 0.528)",
                        {"kept_fraction": frac})


def check_rotation_exact(prepared_dir: str | Path, shard: int) -> CheckOutcome:
    """Turning the rotated set once more gives back the originals, bit for bit."""
    d = Path(prepared_dir)
    pairs = [("structures", rotate_packed), ("bayer", rotate_bayer)]
    mismatched = 0
    rows = 0
    for name, turn in pairs:
        h0, h1 = read_header(d / f"{name}_{shard}.npy"), read_header(d / f"{name}_rotated_{shard}.npy")
        if h0.shape != h1.shape:
            return CheckOutcome(False, f"{h1.path}: shape {h1.shape} differs from {h0.shape}")
        for (_, a), (_, b) in zip(iter_chunks(h0, 1 << 14), iter_chunks(h1, 1 << 14)):
            mismatched += int((turn(b).reshape(len(b), -1) != a.reshape(len(a), -1)).any(axis=1).sum())
        rows = h0.shape[0]
    return CheckOutcome(mismatched == 0, f"{rows} rows: turning the rotated set again reproduces {'every' if not mismatched else 'not every'} original "
                                         f"({mismatched} mismatches)", {"rows": rows, "mismatched_rows": mismatched})
