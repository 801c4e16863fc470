"""Row-wise transforms of the preprocessing: filter status, binning 301 -> n_bins (30; 301 = every sample), the
Bayer layout, bit packing and the 180-degree turn. Pure numpy on chunks; shared by the streaming pass, the checks
and the trainer."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.settings import Settings

BINNING_MODES = ("mean", "subsample")
# What a user sets for the preparation: the FilterSettings resource's fields and `crrecon preprocess`'s flags
# (chunk_rows bounds memory; it does not change the data).
PREPARE_FIELDS = ("binning", "n_bins", "wavelength_first_nm", "wavelength_last_nm", "n_wavelengths")

# The 180-degree turn reverses a packed row's flat bit string: the row's 64-bit words in reverse order, each word's
# bytes in reverse order (a big- to little-endian copy) and the bits inside every byte reversed (three mask-and-shift
# swaps: neighbouring bits, pairs, nibbles). No look-up table: the cost is a few streaming passes over blocks of rows
# small enough to stay in any core's L2 cache, whatever its size (a 64 Ki-entry table did not, on some CPUs).
_BIT_SWAPS = tuple((np.uint64(shift), np.uint64(mask)) for shift, mask in
                   ((1, 0x5555555555555555), (2, 0x3333333333333333), (4, 0x0F0F0F0F0F0F0F0F)))
ROTATE_BLOCK_ROWS = 64  # 64 rows x 2 KiB = 128 KiB, plus as much scratch: in L2 on any current x86 or ARM core


class PrepareSettings(Settings):
    """How raw spectra become the prepared Bayer spectra: the binning and the raw wavelength grid."""

    OWNER = "prepare"

    binning: Literal[BINNING_MODES] = Field(  # type: ignore[valid-type]
        "mean", description="mean: each bin integrates its band (a pixel does); subsample: the research code's samples")
    n_bins: int = Field(30, ge=1, le=100_000, description="spectral bins per pixel = data.out_len of the runs on it "
                                                          "(30; 301: every sample, no binning)")
    wavelength_first_nm: float = Field(400.0, gt=0, le=100_000, description="wavelength of raw sample 0 (a "
                                       "frequency-ordered export runs 700 -> 400)")
    wavelength_last_nm: float = Field(700.0, gt=0, le=100_000, description="wavelength of the last raw sample")
    n_wavelengths: int = Field(301, ge=2, le=100_000, description="samples per raw spectrum")
    chunk_rows: int = Field(4096, ge=1, le=2**24, description="rows read at a time (bounds memory; not in the output)")

    @model_validator(mode="after")
    def _bins_fit(self) -> PrepareSettings:
        if self.n_bins > self.n_wavelengths:
            raise ConfigError(f"prepare.n_bins={self.n_bins}: n_bins must be between 1 and n_wavelengths "
                              f"({self.n_wavelengths})")
        return self

    def identity(self) -> dict:
        """The settings that decide the output (the chunk size does not)."""
        return {k: v for k, v in self.model_dump().items() if k != "chunk_rows"}

    def raw_wavelengths_nm(self) -> np.ndarray:
        return np.linspace(self.wavelength_first_nm, self.wavelength_last_nm, self.n_wavelengths)

    @property
    def descending(self) -> bool:
        return self.wavelength_first_nm > self.wavelength_last_nm

    def bin_edges(self) -> np.ndarray:
        """Sample-index edges (ascending wavelength): bin k = samples edges[k] .. edges[k+1]-1. The rule
        floor(k (W-1) / n) puts the extra sample into the last bin (30 bins: 29 of 10 samples, one of 11); with
        n = W every bin is one sample (the rule would repeat an edge there)."""
        w, n = self.n_wavelengths, self.n_bins
        if n == w:
            return np.arange(w + 1)
        return np.append((np.arange(n) * (w - 1)) // n, w)

    def bin_centers_nm(self) -> np.ndarray:
        lam = np.sort(self.raw_wavelengths_nm())
        if self.binning == "subsample":
            return lam[np.linspace(0, self.n_wavelengths - 1, self.n_bins, dtype=int)]
        e = self.bin_edges()
        return np.array([lam[a:b].mean() for a, b in zip(e[:-1], e[1:])])


def row_status(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(finite, unfinished) per row of (n, 3, W) raw spectra: unfinished = finite and all exactly zero."""
    finite = np.isfinite(spectra).all(axis=(1, 2))
    return finite, finite & (spectra == 0).all(axis=(1, 2))


def bin_spectra(spectra: np.ndarray, settings: PrepareSettings) -> np.ndarray:
    """(n, 3, W) -> (n, 3, n_bins) in ascending wavelength, exactly as docs/data.md defines the two modes."""
    if settings.descending:
        spectra = spectra[..., ::-1]
    if settings.n_bins == settings.n_wavelengths:  # every sample: the values themselves, no arithmetic
        return np.ascontiguousarray(spectra, dtype=np.float32)
    if settings.binning == "subsample":
        return spectra[..., np.linspace(0, settings.n_wavelengths - 1, settings.n_bins, dtype=int)]
    edges = settings.bin_edges()
    sums = np.add.reduceat(spectra, edges[:-1], axis=-1, dtype=np.float64)
    return (sums / np.diff(edges)).astype(np.float32)


def count_set_bits(packed: np.ndarray) -> int:
    """Ones in bit-packed rows (the fill of the structures without unpacking them); counted on 64-bit words where
    the rows allow it (8x fewer elements to sum)."""
    packed = np.ascontiguousarray(packed)
    if packed.ndim == 2 and packed.dtype == np.uint8 and packed.shape[1] % 8 == 0:
        packed = packed.view(np.uint64)
    return int(np.bitwise_count(packed).sum(dtype=np.int64))


BAYER_CHANNELS = [[0, 1], [1, 2]]  # the channel (0 R, 1 G, 2 B) each pixel [[R, G1], [G2, B]] reads


def to_bayer(rgb):
    """(n, 3, L) channels R, G, B -> (n, 2, 2, L) pixels [[R, G], [G, B]]. numpy in, numpy out (C-contiguous);
    a torch tensor in, a tensor out (differentiable: the design optimization through the simulator uses it)."""
    pixels = rgb[:, BAYER_CHANNELS]
    return np.ascontiguousarray(pixels) if isinstance(rgb, np.ndarray) else pixels


def rotate_bayer(bayer: np.ndarray) -> np.ndarray:
    """A 180-degree turn of the cell moves pixel (i, j) to (1-i, 1-j): R <-> B, G1 <-> G2."""
    return np.ascontiguousarray(bayer[:, ::-1, ::-1, :])


def pack_structures(structures: np.ndarray) -> np.ndarray:
    """(n, [1,] 128, 128) {0,1} or {0,255} -> (n, 2048) uint8 (packbits packs any non-zero value as 1)."""
    return np.packbits(structures.reshape(len(structures), int(np.prod(structures.shape[1:]))), axis=1)


def pack_and_scan(piece: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(packed rows, largest value) of a piece of raw structures, for the reader's structures thread (the piece is
    still in cache from hashing). The largest value decides the encoding of uint8 data in one pass; for other
    dtypes it is None and structure_encoding judges the whole chunk."""
    top = int(piece.max()) if piece.dtype == np.uint8 and piece.size else None
    return pack_structures(piece), top


def encoding_from_scan(chunk: np.ndarray, tops: list[int | None]) -> str | None:
    """structure_encoding(chunk), knowing the pieces' largest values: {0, 1} data (the common case) costs nothing
    more; anything else takes structure_encoding's exact passes."""
    if not tops or any(t is None for t in tops) or max(tops) > 1:
        return structure_encoding(chunk)
    return "0/1" if max(tops) else None


def unpack_structures(packed: np.ndarray) -> np.ndarray:
    """(n, 2048) uint8 -> (n, 128, 128) uint8 {0,1}."""
    return np.unpackbits(packed, axis=1).reshape(-1, N_PIX, N_PIX)


def rotate_packed(packed: np.ndarray) -> np.ndarray:
    """180-degree turn of packed (n, bytes) structures without unpacking: s[::-1, ::-1] is the row's flat bit
    string reversed. Blocks of ROTATE_BLOCK_ROWS rows: word order and byte order reversed in one copy, then the
    bits of every byte swapped in place (the cost does not depend on a table staying in cache)."""
    src = np.ascontiguousarray(packed, dtype=np.uint8)
    if src.ndim != 2 or src.shape[1] % 8:
        raise ValueError(f"packed structures must be (n, bytes) with bytes a multiple of 8, got {src.shape}")
    out = np.empty_like(src)
    words, turned = src.view(">u8"), out.view("<u8")  # big- to little-endian copy: each word's bytes reversed
    scratch = np.empty((min(ROTATE_BLOCK_ROWS, len(src)), words.shape[1]), np.uint64)
    for start in range(0, len(src), ROTATE_BLOCK_ROWS):
        block = turned[start:start + ROTATE_BLOCK_ROWS]
        np.copyto(block, words[start:start + ROTATE_BLOCK_ROWS, ::-1])
        _reverse_bits_in_bytes(block, scratch[:len(block)])
    return out


def _reverse_bits_in_bytes(words: np.ndarray, scratch: np.ndarray) -> None:
    """In place on uint64 words: x = ((x >> s) & m) | ((x & m) << s) for s = 1, 2, 4 (the masks are the same in
    every byte, so the result does not depend on the words' byte order)."""
    for shift, mask in _BIT_SWAPS:
        np.right_shift(words, shift, out=scratch)
        scratch &= mask
        words &= mask
        words <<= shift
        words |= scratch


def count_rotation_mismatches(originals: np.ndarray, rotated: np.ndarray) -> int:
    """Rows of `rotated` whose turn is not the original row, bit for bit: one fused pass over blocks that stay in
    cache (turn, compare as 64-bit words), no full-size temporary."""
    mismatched = 0
    for start in range(0, len(rotated), ROTATE_BLOCK_ROWS * 4):
        stop = start + ROTATE_BLOCK_ROWS * 4
        back = rotate_packed(rotated[start:stop]).view(np.uint64)
        mismatched += int((back != np.ascontiguousarray(originals[start:stop]).view(np.uint64)).any(axis=1).sum())
    return mismatched


def structure_encoding(chunk: np.ndarray) -> str | None:
    """"0/1", "0/255", None (all zero), "mixed" (both 1 and 255) or "non-binary". The common case costs one
    vectorised max; only data holding values above 1 takes the slower exact passes."""
    if not chunk.size:
        return None
    if chunk.dtype != np.uint8:
        if chunk.min() < 0 or chunk.max() > 255:
            return "non-binary"
        chunk = chunk.astype(np.uint8)
    top = int(chunk.max())
    if top <= 1:
        return "0/1" if top else None
    if not ((chunk + np.uint8(1)) & 0xFE).any():  # 0 -> 1 and 255 -> 0 (wraps): nothing else survives the mask
        return "0/255"
    return "non-binary" if ((chunk != 0) & (chunk != 1) & (chunk != 255)).any() else "mixed"
