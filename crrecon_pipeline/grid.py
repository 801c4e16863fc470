"""The fixed shapes every layer agrees on: one 128 x 128 binary cell, its bit-packed row, the 301 raw samples.

Bottom of the package: imports nothing of it, so the simulator, the data store, the models and the trainer all
take the same numbers from here."""

N_PIX = 128  # pixels per side of a structure (the cell is sampled N_PIX x N_PIX)
PACKED_BYTES = N_PIX * N_PIX // 8  # one bit-packed structure row (np.packbits): 2 KiB instead of 16
N_WAVELENGTHS = 301  # raw spectral samples, 400..700 nm every 1 nm
