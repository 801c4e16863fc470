"""cnn_diffraction, the research group's diffraction-inspired model (MetaSpec_DiffractionNet): the CNN trunk of
cnn_xattn with a learned 2D Fourier filter at its 16 × 16 map, 16 spatial tokens plus one global token, sinusoidal
embeddings of the physical wavelength (400 … 700 nm) as queries, FiLM-shifted by the structure's global summary,
and decoder blocks of cross-attention + a depthwise convolution along wavelength (no self-attention) + FFN;
sigmoid outputs in [0, 1] (its docstring says softplus; the code applies a sigmoid).

Written from the architecture of hyoseokp/data_CR code/CR_recon/models/cnn_diffraction.py (debe903): same
constructor parameters and defaults, tensor names and shapes (the wavelength buffers lam_norm and freqs are in the
state dict there too), and computation. Sequences are (length, batch, d_model) as there."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crrecon_pipeline.models.research.parts import TRUNK_PREFIXES, FixedScale, add_trunk, research_norm, run_trunk


class FourierFeatureMixing(nn.Module):
    """x + irfft2(W ⊙ rfft2(x)) (orthonormal FFTs in float32, one complex weight per channel and frequency,
    initialized near 1), then GN and SiLU."""

    def __init__(self, channels: int, spatial_h: int = 16, spatial_w: int = 16):
        super().__init__()
        shape = (channels, spatial_h, spatial_w // 2 + 1)
        near_one = torch.stack([torch.ones(shape), torch.zeros(shape)], dim=-1)
        self.spectral_weight = nn.Parameter(near_one + 0.02 * torch.randn(*shape, 2))  # (C, H, W/2+1, re/im)
        self.norm = research_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W/2+1) complex
            spectrum = spectrum * torch.view_as_complex(self.spectral_weight.contiguous())
            filtered = torch.fft.irfft2(spectrum, s=x.shape[-2:], norm="ortho")
        return F.silu(self.norm(filtered.to(x.dtype) + x))


class WavelengthEmbedding(nn.Module):
    """out_len wavelengths evenly spaced over [lam_min, lam_max], normalized to [0, 1]: angles 2π·λ·f_k with
    f_k = 10000^(−k/(d/2)), [sin, cos] -> Linear -> SiLU. Returns (out_len, d_model)."""

    def __init__(self, d_model: int, out_len: int = 301, lam_min: float = 400.0, lam_max: float = 700.0):
        super().__init__()
        self.d_model = d_model
        lam = torch.linspace(lam_min, lam_max, out_len)
        self.register_buffer("lam_norm", (lam - lam_min) / (lam_max - lam_min))  # (L,)
        half = d_model // 2
        self.register_buffer("freqs", torch.pow(10000.0, -(torch.arange(half, dtype=torch.float32) / half)))
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU())

    def forward(self) -> torch.Tensor:
        angles = self.lam_norm[:, None] * self.freqs[None] * 2.0 * math.pi  # (L, d/2)
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (L, D)


class MultiScaleSpatialPool(nn.Module):
    """(B, C, 4, 4) -> 16 local tokens (1x1 conv) + 1 global token (average -> Linear -> SiLU), plus learned
    positions: (17, B, D)."""

    def __init__(self, feat_ch: int = 256, d_model: int = 256):
        super().__init__()
        self.proj = nn.Conv2d(feat_ch, d_model, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.global_proj = nn.Sequential(nn.Flatten(1), nn.Linear(feat_ch, d_model), nn.SiLU())
        self.pos_embed = nn.Parameter(torch.randn(17, 1, d_model) * 0.02)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        local = self.proj(f).flatten(2).permute(2, 0, 1)  # (16, B, D)
        whole = self.global_proj(self.pool(f))[None]  # (1, B, D)
        return torch.cat([local, whole], dim=0) + self.pos_embed


class DiffractionDecoderBlock(nn.Module):
    """Pre-norm: q += CrossAttn(LN(q), memory); q += Dropout(PW(SiLU(DW_k(LN(q))))) with a depthwise convolution
    of width wav_conv_kernel along wavelength and a pointwise one; q += FFN(LN(q))."""

    def __init__(self, d_model: int = 256, nhead: int = 8, ff_mult: int = 4, dropout: float = 0.1,
                 wav_conv_kernel: int = 15):
        super().__init__()
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm_wav = nn.LayerNorm(d_model)
        self.wav_dw_conv = nn.Conv1d(d_model, d_model, wav_conv_kernel, padding=wav_conv_kernel // 2,
                                     groups=d_model, bias=False)
        self.wav_pw_conv = nn.Conv1d(d_model, d_model, 1, bias=False)
        self.wav_act = nn.SiLU()
        self.wav_drop = nn.Dropout(dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * d_model, d_model), nn.Dropout(dropout))

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = q + self.cross_attn(self.norm_cross(q), memory, memory, need_weights=False)[0]  # (L, B, D)
        h = self.norm_wav(q).permute(1, 2, 0)  # (B, D, L)
        h = self.wav_drop(self.wav_pw_conv(self.wav_act(self.wav_dw_conv(h))))
        q = q + h.permute(2, 0, 1)
        return q + self.ff(self.norm_ff(q))


class CNNDiffraction(nn.Module):
    """Research cnn_diffraction: CNN trunk with Fourier mixing -> 17 tokens -> wavelength-embedding queries ->
    cross-attention / wavelength-convolution decoder -> head."""

    PARAM_GROUPS = {"encoder": TRUNK_PREFIXES + ("fourier_mix", "spatial_pool"),
                    "decoder": ("wav_embed", "film_proj", "film_gate", "dec"),
                    "head": ("head", "spec_bias")}

    def __init__(self, out_len: int = 301, d_model: int = 256, nhead: int = 8, dec_layers: int = 4, ff_mult: int = 4,
                 cnn_dropout: float = 0.02, dec_dropout: float = 0.03, head_dropout: float = 0.05,
                 wav_conv_kernel: int = 15, use_circular_padding: bool = True, use_fourier_mixing: bool = True,
                 enforce_diag_sym: bool = False):
        super().__init__()
        self.out_len, self.d_model = out_len, d_model
        self.use_circular_padding, self.use_fourier_mixing = use_circular_padding, use_fourier_mixing
        self.enforce_diag_sym = enforce_diag_sym
        mixing = FourierFeatureMixing(128, 16, 16) if use_fourier_mixing else nn.Identity()
        add_trunk(self, cnn_dropout, use_circular_padding, after_stage2=mixing)  # -> (B, 256, 4, 4)
        self.spatial_pool = MultiScaleSpatialPool(256, d_model)
        self.wav_embed = WavelengthEmbedding(d_model, out_len)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.film_proj = nn.Sequential(nn.Flatten(1), nn.Linear(256, d_model), nn.SiLU(), nn.Dropout(head_dropout))
        self.film_gate = nn.Linear(d_model, d_model)
        self.dec = nn.ModuleList(DiffractionDecoderBlock(d_model, nhead, ff_mult, dec_dropout, wav_conv_kernel)
                                 for _ in range(dec_layers))
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Dropout(head_dropout),
                                  nn.Linear(d_model, 4))
        self.spec_bias = nn.Parameter(torch.zeros(1, 4, out_len))
        self.scale = FixedScale(out_len)  # no tensors: the identity, then model.constraint when set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.enforce_diag_sym:
            x = 0.5 * (x + x.transpose(-1, -2))
        f = run_trunk(self, x, self.use_circular_padding)  # (B, 256, 4, 4)
        memory = self.spatial_pool(f)  # (17, B, D)
        film = self.film_gate(self.film_proj(self.global_pool(f)))  # (B, D)
        q = self.wav_embed()[:, None].expand(self.out_len, b, -1) + film[None]  # (L, B, D)
        for block in self.dec:
            q = block(q, memory)
        y = torch.sigmoid(self.head(q).permute(1, 2, 0) + self.spec_bias)  # (B, 4, L)
        return self.scale(y.reshape(b, 2, 2, self.out_len))
