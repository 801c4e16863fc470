"""Data-quality checks on raw and prepared shards, each defined ONCE here: its name, the data stage it judges, its
description, whether a failure blocks (and how it is reported) and the plain function that judges it.

The registry DATA_CHECKS (grouped by Stage) is what everything else reads: raw_checks / filter_checks /
rotation_checks run it for `crrecon preprocess` and the assets alike and return typed CheckResults, which a
version's manifest records in their JSON form ({asset, passed, blocking, description, metadata}, "asset" naming the
stage as the first release wrote it); the Dagster layer (defs/checks.py) maps each stage to its asset and builds the
AssetCheckSpecs and results from the registry, and the lineage its list of blocking checks. No Dagster import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crrecon_pipeline.data.npyio import iter_chunks, read_header
from crrecon_pipeline.data.rawfiles import ShardReader, open_shard
from crrecon_pipeline.data.shardrecord import ShardRecord
from crrecon_pipeline.data.transforms import (
    count_rotation_mismatches,
    rotate_bayer,
    row_status,
    structure_encoding,
)
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.settings import Settings

CHUNK_ROWS = 4096
SEVERITIES = ("error", "warn")


class Stage(str, Enum):
    """What a check judges: a stage of the data (raw files, the filtered and the rotated versions), a trained model
    or a design run. defs/checks.py maps each to its Dagster asset."""

    RAW_STRUCTURES = "raw.structures"
    RAW_SPECTRA = "raw.spectra"
    FILTERED = "filtered"
    ROTATED = "rotated"
    MODEL = "model"
    DESIGNS = "designs"


RAW_STAGES = (Stage.RAW_STRUCTURES, Stage.RAW_SPECTRA)

# How a manifest's check record names its stage (its "asset" key, as the first release wrote it): stored manifests
# and the tools that read them keep these words.
RECORDED_NAMES = {Stage.RAW_STRUCTURES: "raw_structures", Stage.RAW_SPECTRA: "raw_spectra",
                  Stage.FILTERED: "filtered_bayer", Stage.ROTATED: "rotated_bayer"}
_STAGE_OF_NAME = {name: stage for stage, name in RECORDED_NAMES.items()}


@dataclass(frozen=True)
class CheckOutcome:
    """What a judge found. `warn_only`: this failure is a warning although the check's severity is "error" (a
    model a little better than the baseline); a "warn" check's failures are warnings anyway."""

    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    warn_only: bool = False


class CheckResult(BaseModel):
    """A check's result as recorded: `blocking` when its failure is an error (a failed blocking result keeps the
    version out of LATEST and out of training), a warning otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Stage
    passed: bool
    blocking: bool
    description: str
    metadata: dict[str, Any] = {}

    @property
    def failed_blocking(self) -> bool:
        return self.blocking and not self.passed

    def to_json(self) -> dict:
        """The manifest's form: {asset, passed, blocking, description, metadata}."""
        return {"asset": RECORDED_NAMES.get(self.stage, self.stage.value), "passed": self.passed,
                "blocking": self.blocking, "description": self.description, "metadata": self.metadata}

    @classmethod
    def from_json(cls, data: dict, source: str = "check record") -> CheckResult:
        """A manifest's record (keys a newer version added are ignored); DataError naming `source` if malformed."""
        try:
            values = {k: data[k] for k in ("passed", "blocking", "description") if k in data}
            return cls(stage=_STAGE_OF_NAME.get(data["asset"], data["asset"]), metadata=data.get("metadata") or {},
                       **values)
        except (KeyError, TypeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise DataError(f"{source}: not a check record ({type(exc).__name__}: {first})") from None


@dataclass(frozen=True)
class CheckDef:
    """One check. blocking: a failure stops the assets downstream in that run and keeps the shard out of training
    (Dagster's AssetCheckSpec.blocking). severity: how a failure is reported and recorded ("warn": the version is
    still usable, e.g. NaN rows that the filter drops anyway). judge(subject, limits) -> CheckOutcome."""

    name: str
    stage: Stage
    description: str
    judge: Callable[[Any, Any], CheckOutcome]
    blocking: bool = True
    severity: str = "error"

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"check {self.name}: severity must be one of {SEVERITIES}, got {self.severity!r}")

    def result(self, outcome: CheckOutcome) -> CheckResult:
        """The outcome as recorded (in a version's manifest, by the Dagster layer and the trainer)."""
        return CheckResult(stage=self.stage, passed=bool(outcome.passed),
                           blocking=self.severity == "error" and not outcome.warn_only,
                           description=outcome.description, metadata=outcome.metadata)

    def evaluate(self, subject, limits) -> CheckResult:
        return self.result(self.judge(subject, limits))


Registry = dict[Stage, tuple[CheckDef, ...]]


def by_stage(*checks: CheckDef) -> Registry:
    """A registry: the checks grouped by the stage they judge, in the order given (names unique)."""
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"check names must be unique, got {names}")
    grouped: Registry = {}
    for check in checks:
        grouped[check.stage] = grouped.get(check.stage, ()) + (check,)
    return grouped


def blocking_checks(registry: Registry) -> dict[Stage, list[str]]:
    """{stage: names of its blocking checks}."""
    return {stage: [c.name for c in checks if c.blocking] for stage, checks in registry.items()}


class CheckLimits(Settings):
    """The limits the data checks enforce (the FilterSettings resource is generated from these fields)."""

    OWNER = "limits"

    kept_fraction_min: float = Field(0.2, ge=0, le=1, description="check_kept_fraction: lowest kept fraction")
    kept_fraction_max: float = Field(1.0, ge=0, le=1, description="check_kept_fraction: highest kept fraction")
    max_nonfinite_fraction: float = Field(0.01, ge=0, le=1, description="check_finite_spectra: the largest fraction "
                                                                        "of rows with NaN/Inf before it warns")
    green_tolerance: float = Field(1e-6, ge=0, le=1, description="check_greens_equal: largest |G1 - G2| allowed")


class FilteredShard(NamedTuple):
    """What the filter checks judge: the shard's record (counts, statistics), the folder of its written files and
    the raw checks' results of the same pass over the raw files."""

    record: ShardRecord | None  # None where only the raw checks are judged again (recorded_checks)
    folder: Path
    raw_checks: dict[str, CheckResult] = {}


class ScanResult(BaseModel):
    """What one pass over a raw shard learned (a filtered version's manifest records it as `raw_scan`; the sha256
    keys are absent when the pass did not hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard: int
    rows: int
    n_wavelengths: int
    structures_path: str
    spectra_path: str
    structures_shape: list[int]
    spectra_shape: list[int]
    structures_dtype: str
    spectra_dtype: str
    structure_encoding: str  # "0/1", "0/255", "all zero", "non-binary" or "mixed"
    spectra_min: float | None  # over the finite rows (None: none)
    spectra_max: float | None
    unfinished_rows: int
    nonfinite_rows: int
    structures_sha256: str | None = None
    spectra_sha256: str | None = None

    def to_json(self) -> dict:
        data = self.model_dump()
        return {k: v for k, v in data.items() if v is not None or not k.endswith("_sha256")}


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
            good = sp[finite]
            self.sp_min, self.sp_max = min(self.sp_min, float(good.min())), max(self.sp_max, float(good.max()))

    def result(self, sha256: dict[str, str] | None = None) -> ScanResult:
        raw = self.raw
        encodings = self.encodings - {None}
        if not encodings:
            encoding = "all zero"
        elif "non-binary" in encodings:
            encoding = "non-binary"
        else:
            encoding = encodings.pop() if len(encodings) == 1 else "mixed"
        return ScanResult(
            shard=raw.index, rows=raw.rows, n_wavelengths=raw.n_wavelengths,
            structures_path=str(raw.structures.path), spectra_path=str(raw.spectra.path),
            structures_shape=list(raw.structures.shape), spectra_shape=list(raw.spectra.shape),
            structures_dtype=str(raw.structures.dtype), spectra_dtype=str(raw.spectra.dtype),
            structure_encoding=encoding,
            spectra_min=self.sp_min if np.isfinite(self.sp_min) else None,
            spectra_max=self.sp_max if np.isfinite(self.sp_max) else None,
            unfinished_rows=self.unfinished, nonfinite_rows=self.nonfinite,
            **({"structures_sha256": sha256["structures"], "spectra_sha256": sha256["spectra"]} if sha256 else {}))


# ------------------------------------------------------------------------------------------------ raw shards

def scan_raw_shard(raw_dir: str | Path, shard: int, n_wavelengths: int | None = None,
                   progress=None) -> ScanResult:
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


def raw_checks(scan: ScanResult, limits: CheckLimits) -> dict[str, CheckResult]:
    """The raw-data checks on one scan: one function for the assets and the CLI."""
    return run_checks(Stage.RAW_STRUCTURES, scan, limits) | run_checks(Stage.RAW_SPECTRA, scan, limits)


def filter_checks(record: ShardRecord, folder: str | Path, limits: CheckLimits,
                  raw: dict[str, CheckResult] | None = None) -> dict[str, CheckResult]:
    """The checks on a filtered shard (its record, the written files and the raw checks of the same pass)."""
    return run_checks(Stage.FILTERED, FilteredShard(record, Path(folder), raw or {}), limits)


def rotation_checks(folder: str | Path, limits: CheckLimits | None = None) -> dict[str, CheckResult]:
    return run_checks(Stage.ROTATED, Path(folder), limits or CheckLimits())


def manifest_checks(manifest: dict, source: str = "manifest") -> dict[str, CheckResult]:
    """The check results a version's manifest records, exactly as recorded."""
    return {name: CheckResult.from_json(record, f"{source}: check {name}")
            for name, record in manifest.get("checks", {}).items()}


def checks_json(checks: dict[str, CheckResult]) -> dict[str, dict]:
    """Check results in the manifest's form."""
    return {name: result.to_json() for name, result in checks.items()}


def recorded_checks(manifest: dict) -> dict[str, CheckResult]:
    """A version's check results, with those of checks added since it was committed derived from what it records
    (check_raw_data_passed from its raw checks), so a store written by an earlier release reports every check."""
    checks = manifest_checks(manifest)
    if manifest.get("kind") in ("filtered", "rotated") and "check_raw_data_passed" not in checks:
        raw = {n: c for n, c in checks.items() if c.stage in RAW_STAGES}
        check = next(c for c in DATA_CHECKS[Stage.FILTERED] if c.name == "check_raw_data_passed")
        checks["check_raw_data_passed"] = check.evaluate(FilteredShard(None, Path("."), raw),
                                                         CheckLimits())
    return checks


def run_checks(stage: Stage, subject, limits: CheckLimits) -> dict[str, CheckResult]:
    return {check.name: check.evaluate(subject, limits) for check in DATA_CHECKS[stage]}


def failed_blocking(checks: dict[str, CheckResult]) -> list[str]:
    return [name for name, c in checks.items() if c.failed_blocking]


# ------------------------------------------------------------------------------------------------ the judges

def check_binary_structures(scan: ScanResult, limits: CheckLimits) -> CheckOutcome:
    enc = scan.structure_encoding
    ok = enc in ("0/1", "0/255", "all zero")
    desc = f"structures are binary ({enc})" if ok else f"{scan.structures_path}: structures are not binary ({enc})"
    return CheckOutcome(ok, desc, {"encoding": enc})


def check_finite_spectra(scan: ScanResult, limits: CheckLimits) -> CheckOutcome:
    frac, limit = scan.nonfinite_rows / max(scan.rows, 1), limits.max_nonfinite_fraction
    return CheckOutcome(frac <= limit, f"{scan.nonfinite_rows} of {scan.rows} rows have NaN/Inf ({frac:.2%}; "
                                       f"limit {limit:.2%}); they are dropped",
                        {"nonfinite_rows": scan.nonfinite_rows, "nonfinite_fraction": frac})


def check_sign_convention(scan: ScanResult, limits: CheckLimits) -> CheckOutcome:
    mx = scan.spectra_max
    ok = mx is None or mx <= 1e-6
    text = (f"raw spectra in [{scan.spectra_min}, {mx}]: stored negative as the raw format says" if ok
            else f"{scan.spectra_path}: positive raw spectra (max {mx}); the raw format stores them negative")
    return CheckOutcome(ok, text, {"spectra_min": scan.spectra_min, "spectra_max": mx})


def check_raw_data_passed(shard: FilteredShard, limits: CheckLimits) -> CheckOutcome:
    """The blocking raw checks of the files this version was filtered from, judged in the same pass. Why here too:
    in Dagster the raw assets' own check results date from their last materialization; raw files changed since
    then and only re-filtered would otherwise show every check green on a version its manifest records as failed."""
    failed = failed_blocking(shard.raw_checks)
    if not failed:
        return CheckOutcome(True, f"the raw files' blocking checks passed in this pass ({len(shard.raw_checks)} run)",
                            {"failed_raw_checks": ""})
    first = shard.raw_checks[failed[0]]
    return CheckOutcome(False, f"{failed[0]} failed on the files this version was made from: {first.description} "
                               f"(the raw data changed since raw_structures / raw_spectra were materialized? "
                               f"fix the files; materialize the raw assets to refresh their checks)",
                        {"failed_raw_checks": ", ".join(failed)})


def check_row_counts(shard: FilteredShard, limits: CheckLimits) -> CheckOutcome:
    r = shard.record
    total = r.kept_rows + r.dropped_unfinished + r.dropped_nonfinite
    ok = total == r.raw_rows
    return CheckOutcome(ok, f"kept {r.kept_rows} + unfinished {r.dropped_unfinished} + non-finite "
                            f"{r.dropped_nonfinite} = {total} {'=' if ok else '!='} raw {r.raw_rows}", r.counts())


def check_no_bad_rows(shard: FilteredShard, limits: CheckLimits) -> CheckOutcome:
    """Re-reads the written Bayer file: no all-zero row, nothing non-finite, nothing negative."""
    h = read_header(shard.folder / "bayer.npy")
    zero = nonfinite = negative = 0
    for _, b in iter_chunks(h, 1 << 16):
        flat = b.reshape(len(b), -1)
        nonfinite += int((~np.isfinite(flat)).any(axis=1).sum())
        zero += int((flat == 0).all(axis=1).sum())
        negative += int((flat < 0).any(axis=1).sum())
    ok = zero == 0 and nonfinite == 0 and negative == 0
    return CheckOutcome(ok, f"{h.shape[0]} kept rows: {zero} all-zero, {nonfinite} non-finite, "
                            f"{negative} with negative values",
                        {"rows": h.shape[0], "zero_rows": zero, "nonfinite_rows": nonfinite, "negative_rows": negative})


def check_greens_equal(shard: FilteredShard, limits: CheckLimits) -> CheckOutcome:
    mism, tolerance = shard.record.max_green_mismatch, limits.green_tolerance
    return CheckOutcome(mism <= tolerance, f"max |G1 - G2| = {mism:.3g} (tolerance {tolerance:g})",
                        {"max_green_mismatch": mism})


def check_kept_fraction(shard: FilteredShard, limits: CheckLimits) -> CheckOutcome:
    frac, low, high = shard.record.kept_fraction, limits.kept_fraction_min, limits.kept_fraction_max
    return CheckOutcome(low <= frac <= high,
                        f"kept fraction {frac:.3f} (expected {low}..{high}; the research data keeps 0.528)",
                        {"kept_fraction": frac})


def check_rotation_exact(folder: Path, limits: CheckLimits) -> CheckOutcome:
    """Turning the rotated set once more gives back the originals, bit for bit: every row of the files as written,
    read back (the packed structures compared as 64-bit words in one fused, cache-sized pass)."""
    counters = [("structures", count_rotation_mismatches), ("bayer", _count_bayer_mismatches)]
    mismatched = 0
    rows = 0
    for name, count in counters:
        h0, h1 = read_header(folder / f"{name}.npy"), read_header(folder / f"{name}_rotated.npy")
        if h0.shape != h1.shape:
            return CheckOutcome(False, f"{h1.path}: shape {h1.shape} differs from {h0.shape}")
        for (_, a), (_, b) in zip(iter_chunks(h0, 1 << 14), iter_chunks(h1, 1 << 14)):
            mismatched += count(a, b)
        rows = h0.shape[0]
    every = "every" if not mismatched else "not every"
    return CheckOutcome(mismatched == 0, f"{rows} rows: turning the rotated set again reproduces {every} original "
                                         f"({mismatched} mismatches)", {"rows": rows, "mismatched_rows": mismatched})


def _count_bayer_mismatches(originals: np.ndarray, rotated: np.ndarray) -> int:
    """Rows whose turned-back (2, 2, L) pixels differ from the originals' (compared as bits: -0.0 != 0.0, NaN == NaN
    of the same payload)."""
    bits = np.dtype(f"u{originals.dtype.itemsize}")
    back = rotate_bayer(rotated).reshape(len(rotated), -1).view(bits)
    return int((back != originals.reshape(len(originals), -1).view(bits)).any(axis=1).sum())


# ------------------------------------------------------------------------------------------------ the registry

DATA_CHECKS = by_stage(
    CheckDef("check_binary_structures", Stage.RAW_STRUCTURES, "structures are {0,1} or {0,255}",
             check_binary_structures),
    CheckDef("check_finite_spectra", Stage.RAW_SPECTRA,
             "rows with NaN/Inf stay under FilterSettings.max_nonfinite_fraction (they are dropped)",
             check_finite_spectra, blocking=False, severity="warn"),
    CheckDef("check_sign_convention", Stage.RAW_SPECTRA,
             "raw spectra are stored negative (a flipped export would train on wrong signs)", check_sign_convention),
    CheckDef("check_raw_data_passed", Stage.FILTERED,
             "the raw files it was made from pass their blocking checks, judged in the same pass (the raw assets' "
             "results may be older)", check_raw_data_passed),
    CheckDef("check_row_counts", Stage.FILTERED, "kept + dropped_unfinished + dropped_nonfinite = raw_rows",
             check_row_counts),
    CheckDef("check_no_bad_rows", Stage.FILTERED,
             "no all-zero, non-finite or negative row is left in the written Bayer file", check_no_bad_rows),
    CheckDef("check_greens_equal", Stage.FILTERED, "the two green pixels agree (diagonal-symmetric structures)",
             check_greens_equal),
    CheckDef("check_kept_fraction", Stage.FILTERED,
             "the kept fraction lies in FilterSettings [kept_fraction_min, kept_fraction_max]", check_kept_fraction),
    CheckDef("check_rotation_exact", Stage.ROTATED,
             "turning the rotated set once more gives back the originals exactly", check_rotation_exact),
)
