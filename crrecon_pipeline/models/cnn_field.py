"""cnn_field (the quick preset's): the CNN predicts complex fields leaving the pillar layer, a learned transfer
function carries them to the detector, and each pixel reads the power falling on its quadrant.

That is the shape of the physics (docs/simulator.md: exit field -> angular-spectrum propagation -> flux per quadrant),
so the network only has to learn the layer's local response; the interference that routes the light is built in.
Everything is circular or elementwise in Fourier space, so a half-period shift of the structure moves the power to
the neighbouring quadrant exactly as in data/symmetry.py: the shift group is built in
(data.augment_shifts adds nothing).

    (B, 1, 128, 128) -> Backbone -> (B, C, s, s) -> 1x1 conv -> K complex fields t_k      (B, K, s, s)
      -> u_k = ifft2(H_k * fft2(t_k))                  H_k: learned, one per field        (B, K, s, s)
      -> P_k[a, b] = mean of |u_k|^2 over quadrant (a, b)                                 (B, K, 2, 2)
      -> one linear map K -> L for every pixel (a spectrum is a mix of the fields' powers) (B, 2, 2, L)
"""

from __future__ import annotations

import torch
from torch import nn

from crrecon_pipeline.models.backbone import Backbone, OutputScale


class Propagation(nn.Module):
    """u_k = ifft2(H_k * fft2(t_k)) with H_k (K, s, s) complex, starting near the identity (no propagation)."""

    def __init__(self, fields: int, size: int):
        super().__init__()
        h = torch.zeros(fields, size, size, 2)
        h[..., 0] = 1.0
        self.transfer = nn.Parameter(h + 0.1 * torch.randn_like(h))  # (K, s, s, re/im)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(t) * torch.view_as_complex(self.transfer))


class CNNField(nn.Module):
    # training.freeze names these: attribute prefixes of the parameters in each group (train/freeze.py); the
    # head is the linear map from the fields' powers to the spectra (~1 % of the parameters)
    PARAM_GROUPS = {"encoder": ("backbone",), "decoder": ("to_field", "propagation"), "head": ("mix",)}

    def __init__(self, out_len: int = 30, channels=(32, 64, 96), blocks_per_stage: int = 1, in_pool: int = 2,
                 fields: int = 64, cnn_dropout: float = 0.0, use_circular_padding: bool = True):
        super().__init__()
        self.out_len, self.fields = out_len, fields
        self.backbone = Backbone(tuple(channels), blocks_per_stage, cnn_dropout, use_circular_padding, in_pool)
        stride = in_pool * 2 ** len(channels)  # input pixels per map cell (the stem and every stage halve)
        if 64 % stride:  # else a half-period shift is no whole roll of the map and the quadrants split cells
            raise ValueError(f"cnn_field needs an even feature map of at least 2x2 to split into the four quadrants; "
                             f"in_pool {in_pool} with {len(channels)} channel stages gives {stride}-pixel cells "
                             f"(their size must divide 64)")
        s = self.size = self.backbone.out_size
        self.to_field = nn.Conv2d(self.backbone.out_channels, 2 * fields, 1)
        self.propagation = Propagation(fields, s)
        self.mix = nn.Linear(fields, out_len)
        self.scale = OutputScale(out_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, s = x.shape[0], self.fields, self.size
        f = self.to_field(self.backbone(x)).float()  # (B, 2K, s, s)
        with torch.autocast(device_type=f.device.type, enabled=False):  # FFTs in float32 (bf16 has none)
            u = self.propagation(torch.complex(f[:, :k], f[:, k:]))  # (B, K, s, s) complex
            power = (u.real ** 2 + u.imag ** 2).view(b, k, 2, s // 2, 2, s // 2).mean((3, 5))  # (B, K, 2, 2)
            raw = self.mix(power.permute(0, 2, 3, 1))  # (B, 2, 2, L)
        return self.scale(raw)
