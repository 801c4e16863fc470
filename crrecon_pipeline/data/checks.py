"""Data-quality checks on raw and prepared shards: plain functions the Dagster asset checks (and tests) call.

Each returns a CheckOutcome; the Dagster layer turns it into an AssetCheckResult.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crrecon_pipeline.data.npyio import iter_chunks, read_header
from crrecon_pipeline.data.rawfiles import ShardReader, open_shard
from crrecon_pipeline.data.transforms import rotate_bayer, rotate_packed, row_status, structure_encoding

CHUNK_ROWS = 4096


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    warn_only: bool = False

    def record(self, asset: str) -> dict:
        """The form kept in a version's manifest (and read back by the Dagster layer and the trainer)."""
        return {"asset": asset, "passed": bool(self.passed), "blocking": not self.warn_only,
                "description": self.description, "metadata": self.metadata}


@dataclass(frozen=True)
class CheckLimits:
    """The limits the data checks enforce (FilterSettings in Dagster; defaults for the CLI)."""

    kept_fraction_min: float = 0.2
    kept_fraction_max: float = 1.0
    max_nonfinite_fraction: float = 0.01
    green_tolerance: float = 1e-6


class RawScan:
    """What one pass over a raw shard learns about it: encodings, unfinished and non-finite rows, value range."""

    def __init__(self, raw):
        self.raw = raw
        self.encodings: set = set()
        self.unfinished = self.nonfinite = 0
        self.sp_min, self.sp_max = np.inf, -np.inf

    def update(self, st: np.ndarray, sp: np.ndarray, finite: np.ndarray, unfinished: np.ndarray,
               encoding: str | None = "unknown") -> None:
        """One chunk; `encoding` when the caller already knows it (one structure pass, not two)."""
        self.encodings.add(structure_encoding(st) if encoding == "unknown" else encoding)
        self.nonfinite += int(len(finite) - np.count_nonzero(finite))
        self.unfinished += int(np.count_nonzero(unfinished))
        if finite.all():
            self.sp_min, self.sp_max = min(self.sp_min, float(sp.min())), max(self.sp_max, float(sp.max()))
        elif finite.any():
            self.sp_min, self.sp_max = min(self.sp_min, float(sp[finite].min())), max(self.sp_max, float(sp[finite].max()))

    def result(self, sha256: dict[str, str] | None = None) -> dict:
        raw = self.raw
        encodings = self.encodings - {None}
        if not encodings:
            encoding = "all zero"
        elif "non-binary" in encodings:
            encoding = "non-binary"
        else:
            encoding = encodings.pop() if len(encodings) == 1 else "mixed"
        out = {
            "shard": raw.index,
            "rows": raw.rows,
            "n_wavelengths": raw.n_wavelengths,
            "structures_path": str(raw.structures.path),
            "spectra_path": str(raw.spectra.path),
            "structures_shape": list(raw.structures.shape),
            "spectra_shape": list(raw.spectra.shape),
            "structures_dtype": str(raw.structures.dtype),
            "spectra_dtype": str(raw.spectra.dtype),
            "structure_encoding": encoding,
            "spectra_min": self.sp_min if np.isfinite(self.sp_min) else None,
            "spectra_max": self.sp_max if np.isfinite(self.sp_max) else None,
            "unfinished_rows": self.unfinished,
            "nonfinite_rows": self.nonfinite,
        }
        if sha256:
            out |= {"structures_sha256": sha256["structures"], "spectra_sha256": sha256["spectra"]}
        return out


# ------------------------------------------------------------------------------------------------ raw shards

def scan_raw_shard(raw_dir: str | Path, shard: int, n_wavelengths: int | None = None, progress=None) -> dict:
    """One streaming pass over a raw shard pair: checksums (hashed while reading), value ranges, counts of
    unfinished/non-finite rows and of non-binary structure values. Headers are checked first (DataError)."""
    raw = open_shard(raw_dir, shard, n_wavelengths)
    reader = ShardReader(raw, CHUNK_ROWS)
    scan = RawScan(raw)
    for _, st, sp in reader:
        scan.update(st, sp, *row_status(sp))
        if progress:
            progress(len(st))
    return scan.result(reader.sha256)


def raw_checks(scan: dict, limits: CheckLimits) -> dict[str, dict]:
    """The raw-data checks, as manifest records: one function for the assets and the CLI."""
    return {
        "check_binary_structures": check_binary_structures(scan).record("raw_structures"),
        "check_finite_spectra": check_finite_spectra(scan, limits.max_nonfinite_fraction).record("raw_spectra"),
        "check_sign_convention": check_sign_convention(scan).record("raw_spectra"),
    }


def failed_blocking(checks: dict[str, dict]) -> list[str]:
    return [name for name, c in checks.items() if c["blocking"] and not c["passed"]]


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
                        {"spectra_min": scan["spectra_min"], "spectra_max": mx})


# ------------------------------------------------------------------------------------------------ prepared shards

def check_counts_consistent(record: dict) -> CheckOutcome:
    total = record["kept_rows"] + record["dropped_unfinished"] + record["dropped_nonfinite"]
    ok = total == record["raw_rows"]
    return CheckOutcome(ok, f"kept {record['kept_rows']} + unfinished {record['dropped_unfinished']} + non-finite "
                            f"{record['dropped_nonfinite']} = {total} {'=' if ok else '!='} raw {record['raw_rows']}",
                        {k: record[k] for k in ("raw_rows", "kept_rows", "dropped_unfinished", "dropped_nonfinite")})


def check_no_bad_rows_left(folder: str | Path) -> CheckOutcome:
    """Re-reads the written Bayer file: no all-zero row, nothing non-finite, nothing negative."""
    h = read_header(Path(folder) / "bayer.npy")
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


def check_rotation_exact(folder: str | Path) -> CheckOutcome:
    """Turning the rotated set once more gives back the originals, bit for bit."""
    d = Path(folder)
    pairs = [("structures", rotate_packed), ("bayer", rotate_bayer)]
    mismatched = 0
    rows = 0
    for name, turn in pairs:
        h0, h1 = read_header(d / f"{name}.npy"), read_header(d / f"{name}_rotated.npy")
        if h0.shape != h1.shape:
            return CheckOutcome(False, f"{h1.path}: shape {h1.shape} differs from {h0.shape}")
        for (_, a), (_, b) in zip(iter_chunks(h0, 1 << 14), iter_chunks(h1, 1 << 14)):
            mismatched += int((turn(b).reshape(len(b), -1) != a.reshape(len(a), -1)).any(axis=1).sum())
        rows = h0.shape[0]
    return CheckOutcome(mismatched == 0, f"{rows} rows: turning the rotated set again reproduces {'every' if not mismatched else 'not every'} original "
                                         f"({mismatched} mismatches)", {"rows": rows, "mismatched_rows": mismatched})


def filter_checks(record: dict, folder: str | Path, limits: CheckLimits) -> dict[str, dict]:
    """The checks on a filtered shard (its record and the written files), as manifest records."""
    return {
        "check_row_counts": check_counts_consistent(record).record("filtered_bayer"),
        "check_no_bad_rows": check_no_bad_rows_left(folder).record("filtered_bayer"),
        "check_greens_equal": check_greens_equal(record, limits.green_tolerance).record("filtered_bayer"),
        "check_kept_fraction": check_kept_fraction(record, limits.kept_fraction_min, limits.kept_fraction_max).record("filtered_bayer"),
    }


def rotation_checks(folder: str | Path) -> dict[str, dict]:
    return {"check_rotation_exact": check_rotation_exact(folder).record("rotated_bayer")}


def check_beats_baseline(metrics: dict, max_ratio: float = 0.5) -> CheckOutcome:
    """val MSE against the mean-spectrum baseline on the same split: a pass at ratio <= max_ratio; between
    max_ratio and 1 a warning (better than the mean, not good); at 1 or above a failure (no better than the mean)."""
    mse, base = metrics["val_mse"], metrics["baseline_val_mse"]
    ratio = mse / base if base else float("inf")
    passed = bool(ratio <= max_ratio)
    verdict = "pass" if passed else ("warn: better than the mean spectrum, not by enough" if ratio < 1 else "fail: no better than the mean spectrum")
    return CheckOutcome(passed, f"val MSE {mse:.3g} vs baseline {base:.3g}: ratio {ratio:.3g} (limit {max_ratio:g}; {verdict})",
                        {"ratio": float(f"{ratio:.4g}"), "max_ratio": max_ratio}, warn_only=not passed and ratio < 1)
