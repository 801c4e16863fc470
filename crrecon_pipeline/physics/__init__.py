"""The built-in color-router simulator and the color router's figure of merit.

Owns: the geometry (params), the Fourier-order algebra the fidelities share (fourier), the wavelength sub-grid
(wavelengths), the thin-element, multi-slice and rigorous (vector RCWA) fidelities behind one registry (thin,
multislice, rcwa, simulate), the brute-force reference (reference),
random structures made as the research group makes theirs (structures), the raw-shard writer (shards) and the
Bayer band efficiencies (bands). May import: grid, errors, numpy/torch, and data/ for the raw-file format and
atomic .npy writing (shards only). Never Dagster, never train/.

Public API: `crrecon_pipeline.physics.simulate_spectra(structures) -> (B, 3, 301) float32` (raw format:
negative), with the default geometry of docs/simulator.md.
"""

from crrecon_pipeline.physics.simulate import simulate_spectra

__all__ = ["simulate_spectra"]
