"""cnn_gru, the research group's lighter baseline (MetaSpec_CNNGRU): the circular-padded CNN trunk, averaged to one
global vector, repeated out_len times as the input of a GRU whose steps are the wavelength bins; a shared MLP head
gives the four pixels per bin; sigmoid outputs in [0, 1].

Written from the architecture of hyoseokp/data_CR code/CR_recon/models/cnn_gru.py (debe903): same constructor
parameters and defaults, tensor names and shapes, and computation. Note: the global average pool discards where
features sit; with circular padding the trunk commutes with circular shifts by multiples of 32 px (its total
stride), so a structure and its half-period shift get the same output."""

from __future__ import annotations

import torch
from torch import nn

from crrecon_pipeline.models.research.parts import TRUNK_PREFIXES, FixedScale, add_trunk, run_trunk


class CNNGRU(nn.Module):
    """Research cnn_gru: CNN trunk -> global vector z -> GRU over out_len steps of z -> head."""

    PARAM_GROUPS = {"encoder": TRUNK_PREFIXES, "decoder": ("to_z", "gru"), "head": ("head", "spec_bias")}

    def __init__(self, out_len: int = 30, d_model: int = 128, gru_layers: int = 2, cnn_dropout: float = 0.05,
                 head_dropout: float = 0.1, use_circular_padding: bool = True):
        super().__init__()
        self.out_len, self.d_model, self.use_circular_padding = out_len, d_model, use_circular_padding
        add_trunk(self, cnn_dropout, use_circular_padding)  # (B, 1, 128, 128) -> (B, 256, 4, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.to_z = nn.Sequential(nn.Flatten(1), nn.Linear(256, d_model), nn.SiLU(), nn.Dropout(head_dropout))
        self.gru = nn.GRU(d_model, d_model, num_layers=gru_layers, batch_first=True,
                          dropout=head_dropout if gru_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Dropout(head_dropout),
                                  nn.Linear(d_model, 4))
        self.spec_bias = nn.Parameter(torch.zeros(1, 4, out_len))
        self.scale = FixedScale(out_len)  # no tensors: the identity, then model.constraint when set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_z(self.pool(run_trunk(self, x, self.use_circular_padding)))  # (B, D)
        steps, _ = self.gru(z[:, None].expand(-1, self.out_len, -1))  # (B, L, D)
        y = torch.sigmoid(self.head(steps).permute(0, 2, 1) + self.spec_bias)  # (B, 4, L)
        return self.scale(y.reshape(-1, 2, 2, self.out_len))
