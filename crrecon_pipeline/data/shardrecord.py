"""What filtering one raw shard found: its row counts by fate and the statistics of what it kept. A filtered
version's manifest stores it under "record"; the checks, the asset metadata and the reports read it typed.

May import: errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from crrecon_pipeline.errors import DataError

COUNTS = ("raw_rows", "kept_rows", "dropped_unfinished", "dropped_nonfinite")


@dataclass(frozen=True)
class ShardRecord:
    shard: int
    raw_rows: int
    kept_rows: int
    dropped_unfinished: int  # all-zero spectra: the simulation did not finish
    dropped_nonfinite: int  # NaN/Inf anywhere in the row
    structure_values: str | None  # "0/1" or "0/255" as the raw file encoded the structures; None: no row kept
    bayer_min: list[float]  # per raw channel R, G, B over the kept rows
    bayer_max: list[float]
    bayer_mean: list[float]
    max_green_mismatch: float  # largest |G1 - G2| (equal by construction from one green channel)
    negative_after_flip: int  # values still negative after the sign flip
    kept_fraction: float
    mean_fill: float  # mean fraction of the unit cell filled, kept rows

    def counts(self) -> dict[str, int]:
        """The four row counts by name (raw = kept + unfinished + non-finite)."""
        return {name: getattr(self, name) for name in COUNTS}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "shard record") -> ShardRecord:
        """A manifest's record; keys a newer version added are ignored, a missing one is a DataError naming
        `source`."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise DataError(f"{source}: shard record lacks {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})
