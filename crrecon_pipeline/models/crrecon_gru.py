"""crrecon_gru (this project's sequence model): the same CNN backbone as crrecon_xattn, its last map flattened
(positions kept) into a context vector that conditions a GRU running over the 30 spectral bins; a linear head gives
the 4 Bayer values per bin -> (B, 2, 2, 30).

Not the research code's `cnn_gru` (registered under that name), whose trunk pools the map to one vector: here the
flattened map keeps where each feature sits, and the outputs are in normalized units through OutputScale."""

from __future__ import annotations

import torch
from torch import nn

from crrecon_pipeline.models.backbone import Backbone, OutputScale


class CrreconGRU(nn.Module):
    # training.freeze names these: attribute prefixes of the parameters in each group (train/freeze.py)
    PARAM_GROUPS = {"encoder": ("backbone",), "decoder": ("context", "h0", "bin_embed", "gru"), "head": ("head",)}

    def __init__(self, out_len: int = 30, d_model: int = 256, gru_layers: int = 2, cnn_dropout: float = 0.05,
                 tr_dropout: float = 0.1, head_dropout: float = 0.2, use_circular_padding: bool = True,
                 channels=(64, 96, 128, 192, 256), blocks_per_stage: int = 2, in_pool: int = 1):
        super().__init__()
        self.out_len, self.gru_layers = out_len, gru_layers
        self.backbone = Backbone(tuple(channels), blocks_per_stage, cnn_dropout, use_circular_padding, in_pool)
        flat = self.backbone.out_channels * self.backbone.out_size ** 2
        self.context = nn.Sequential(nn.Linear(flat, d_model), nn.SiLU())
        self.h0 = nn.Linear(d_model, gru_layers * d_model)
        self.bin_embed = nn.Parameter(torch.randn(1, out_len, d_model) * 0.02)
        self.gru = nn.GRU(d_model, d_model, gru_layers, batch_first=True, dropout=tr_dropout if gru_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(d_model, 4))
        self.scale = OutputScale(out_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        ctx = self.context(self.backbone(x).flatten(1))  # (B, d)
        h0 = torch.tanh(self.h0(ctx)).view(b, self.gru_layers, -1).transpose(0, 1).contiguous()  # (layers, B, d)
        seq, _ = self.gru(self.bin_embed + ctx[:, None], h0)  # (B, 30, d)
        raw = self.head(seq).transpose(1, 2).reshape(b, 2, 2, self.out_len)
        return self.scale(raw)
