"""The shared CNN backbone: circular padding (the unit cell is periodic), GroupNorm + SiLU, residual stages.

(B, 1, 128, 128) -> stem 5x5/2 -> stages of residual blocks, each stage halving the map -> (B, C_last, h, w).
The map keeps WHERE features sit; the heads must not pool it away (which pixel gets the light depends on it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float, padding_mode: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, padding_mode=padding_mode, bias=False)
        self.norm1 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, padding_mode=padding_mode, bias=False)
        self.norm2 = group_norm(c_out)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Identity() if (c_in == c_out and stride == 1) else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), group_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(self.drop(h)))
        return F.silu(h + self.skip(x))


class Backbone(nn.Module):
    def __init__(self, channels=(64, 96, 128, 192, 256), blocks_per_stage: int = 2, dropout: float = 0.05,
                 use_circular_padding: bool = True, in_pool: int = 1, in_size: int = 128):
        super().__init__()
        pm = "circular" if use_circular_padding else "zeros"
        self.in_pool = in_pool
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 5, 2, 2, padding_mode=pm, bias=False),
                                  group_norm(channels[0]), nn.SiLU())
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks.append(ResBlock(c_in, c_out, 2, dropout, pm))
            blocks += [ResBlock(c_out, c_out, 1, dropout, pm) for _ in range(blocks_per_stage - 1)]
        self.stages = nn.Sequential(*blocks)
        self.out_channels = channels[-1]
        self.out_size = in_size // in_pool // 2 ** len(channels)  # the stem and every stage halve the map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_pool > 1:
            x = F.avg_pool2d(x, self.in_pool)
        return self.stages(self.stem(x))


class OutputScale(nn.Module):
    """Maps the head's normalized output to physical units with the training set's statistics (buffers, so
    they travel in the checkpoint): prediction = mean[pixel, bin] + std * raw."""

    def __init__(self, out_len: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(2, 2, out_len))
        self.register_buffer("std", torch.ones(()))
        self.bounds: tuple[float, float] | None = None  # model.constraint, set by the builder (not a weight)

    def set_constraint(self, sum_min: float, sum_max: float) -> None:
        self.bounds = (float(sum_min), float(sum_max))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        out = self.mean + self.std * raw
        return out if self.bounds is None else project_bayer_sum(out, *self.bounds)


def project_bayer_sum(spectra: torch.Tensor, sum_min: float, sum_max: float) -> torch.Tensor:
    """The research code's hard constraint (the one formula, research models' included): per bin,
    s = R + (G1 + G2)/2 + B is moved into [sum_min, sum_max] by one shift c = (clamp(s) - s)/3 added to all four
    pixels (s changes by 3c), the smallest change that makes the output plausible. Computed in float32 and cast
    back, as the research trainer does. (B, 2, 2, L) -> (B, 2, 2, L); the identity where s is already inside."""
    phys = spectra.float()
    total = phys[:, 0, 0] + 0.5 * (phys[:, 0, 1] + phys[:, 1, 0]) + phys[:, 1, 1]  # (B, L)
    shift = (total.clamp(sum_min, sum_max) - total) / 3.0
    return (phys + shift[:, None, None, :]).to(spectra.dtype)


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe
