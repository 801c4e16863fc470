"""crrecon_xattn (this project's cross-attention model, the GPU presets'): CNN backbone -> spatial tokens with 2D
positions -> a transformer decoder whose 30 spectral queries cross-attend to the tokens -> (B, 2, 2, 30).

Not the research code's `cnn_xattn` (registered under that name): the backbone's widths, depth and input pooling
are parameters, the decoder is torch's pre-norm TransformerDecoder with plain learned queries (no FiLM from a
global summary), and the head predicts in normalized units through OutputScale (the training split's mean and
std) instead of a sigmoid."""

from __future__ import annotations

import torch
from torch import nn

from crrecon_pipeline.models.backbone import Backbone, OutputScale, sinusoidal_encoding


class CrreconXAttn(nn.Module):
    # training.freeze names these: attribute prefixes of the parameters in each group (train/freeze.py)
    PARAM_GROUPS = {"encoder": ("backbone", "token_proj", "token_pos"), "decoder": ("queries", "decoder", "norm"),
                    "head": ("head",)}

    def __init__(self, out_len: int = 30, d_model: int = 256, nhead: int = 8, dec_layers: int = 4,
                 cnn_dropout: float = 0.05, tr_dropout: float = 0.1, head_dropout: float = 0.2,
                 use_circular_padding: bool = True, channels=(64, 96, 128, 192, 256), blocks_per_stage: int = 2,
                 in_pool: int = 1):
        super().__init__()
        self.out_len = out_len
        self.backbone = Backbone(tuple(channels), blocks_per_stage, cnn_dropout, use_circular_padding, in_pool)
        n_tokens = self.backbone.out_size ** 2
        self.token_proj = nn.Linear(self.backbone.out_channels, d_model)
        self.token_pos = nn.Parameter(torch.randn(1, n_tokens, d_model) * 0.02)  # where in the cell
        self.queries = nn.Parameter(torch.randn(1, out_len, d_model) * 0.02)
        self.register_buffer("query_pos", sinusoidal_encoding(out_len, d_model)[None], persistent=False)
        layer = nn.TransformerDecoderLayer(d_model, nhead, 4 * d_model, tr_dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, dec_layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(d_model, 4))
        self.scale = OutputScale(out_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        feat = self.backbone(x)  # (B, C, h, w)
        tokens = self.token_proj(feat.flatten(2).transpose(1, 2)) + self.token_pos  # (B, h*w, d)
        q = (self.queries + self.query_pos).expand(b, -1, -1)  # (B, 30, d)
        h = self.norm(self.decoder(q, tokens))  # (B, 30, d)
        raw = self.head(h).transpose(1, 2).reshape(b, 2, 2, self.out_len)  # (B, 4, 30) -> [[R, G], [G, B]]
        return self.scale(raw)
