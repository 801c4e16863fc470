"""Data on disk: the raw shard format, streaming .npy I/O, the transforms and symmetry of Bayer arrays, the data
checks, the versioned prepared store, and preparation (raw -> filtered -> rotated) and loading.

May import: grid, errors, numbers, numpy, blake3 (the content digests). Never torch models, Dagster, physics/ or train/.
Public API: `crrecon_pipeline.data.load_prepared(dir)` -> structures, bayer (M, 2, 2, 30) float32,
rotated_structures, rotated_bayer, source_rows.
"""

from crrecon_pipeline.data.prepared import load_prepared

__all__ = ["load_prepared"]
