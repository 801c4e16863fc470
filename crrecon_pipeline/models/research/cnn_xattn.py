"""cnn_xattn, the research group's default model (MetaSpec_CNNXAttn): a circular-padded CNN trunk to a 4 × 4 map,
kept as 16 spatial tokens, and a pre-norm transformer decoder whose out_len wavelength queries (modulated by a
global summary of the map, FiLM-style) self-attend and cross-attend to them; sigmoid outputs in [0, 1].

Written from the architecture of hyoseokp/data_CR code/CR_recon/models/cnn_xattn.py (debe903): same constructor
parameters and defaults, same tensor names and shapes (their checkpoints load with strict=True), same computation.
Sequences are (length, batch, d_model) as there."""

from __future__ import annotations

import torch
from torch import nn

from crrecon_pipeline.models.research.parts import TRUNK_PREFIXES, FixedScale, add_trunk, run_trunk


class XAttnDecoderBlock(nn.Module):
    """Pre-norm: q += SelfAttn(LN(q)); q += CrossAttn(LN(q), memory); q += FFN(LN(q)), FFN = Linear-GELU-Dropout-
    Linear-Dropout with ff_mult · d_model hidden units."""

    def __init__(self, d_model: int = 256, nhead: int = 8, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * d_model, d_model), nn.Dropout(dropout))

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        h = self.norm1(q)  # (L, B, D)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        q = q + self.cross_attn(self.norm2(q), memory, memory, need_weights=False)[0]  # memory (16, B, D)
        return q + self.ff(self.norm3(q))


class CNNXAttn(nn.Module):
    """Research cnn_xattn: CNN trunk -> 16 spatial tokens -> transformer decoder over out_len wavelength queries."""

    PARAM_GROUPS = {"encoder": TRUNK_PREFIXES + ("s_proj", "s_pos"),
                    "decoder": ("to_z", "q_film", "query", "w_pos", "dec"),
                    "head": ("head", "spec_bias")}

    def __init__(self, out_len: int = 30, d_model: int = 256, nhead: int = 8, dec_layers: int = 4, ff_mult: int = 4,
                 cnn_dropout: float = 0.05, tr_dropout: float = 0.1, head_dropout: float = 0.2,
                 enforce_diag_sym: bool = False, use_circular_padding: bool = True):
        super().__init__()
        self.out_len, self.d_model = out_len, d_model
        self.enforce_diag_sym, self.use_circular_padding = enforce_diag_sym, use_circular_padding
        add_trunk(self, cnn_dropout, use_circular_padding)  # (B, 1, 128, 128) -> (B, 256, 4, 4)
        self.s_proj = nn.Conv2d(256, d_model, 1, bias=False)
        self.s_pos = nn.Parameter(torch.randn(16, 1, d_model) * 0.02)  # one position per cell of the 4 x 4 map
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.to_z = nn.Sequential(nn.Flatten(1), nn.Linear(256, d_model), nn.SiLU(), nn.Dropout(head_dropout))
        self.q_film = nn.Linear(d_model, d_model)
        self.query = nn.Parameter(torch.randn(out_len, d_model) * 0.02)
        self.w_pos = nn.Parameter(torch.randn(out_len, 1, d_model) * 0.02)
        self.dec = nn.ModuleList(XAttnDecoderBlock(d_model, nhead, ff_mult, tr_dropout) for _ in range(dec_layers))
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Dropout(head_dropout),
                                  nn.Linear(d_model, 4))
        self.spec_bias = nn.Parameter(torch.zeros(1, 4, out_len))
        self.scale = FixedScale(out_len)  # no tensors: the identity, then model.constraint when set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.enforce_diag_sym:
            x = 0.5 * (x + x.transpose(-1, -2))
        f = run_trunk(self, x, self.use_circular_padding)  # (B, 256, 4, 4)
        memory = self.s_proj(f).flatten(2).permute(2, 0, 1) + self.s_pos  # (16, B, D)
        z = self.to_z(self.pool(f))  # (B, D)
        q = self.query[:, None].expand(self.out_len, b, -1) + self.w_pos + self.q_film(z)[None]  # (L, B, D)
        for block in self.dec:
            q = block(q, memory)
        y = torch.sigmoid(self.head(q).permute(1, 2, 0) + self.spec_bias)  # (B, 4, L): R, G1, G2, B
        return self.scale(y.reshape(b, 2, 2, self.out_len))
