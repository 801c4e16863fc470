"""se_disco, the research group's operator model (SE_DiSCO): a dual-domain encoder (a zero-padded CNN on the
structure and one on log(1 + |FFT2|) of it, fused at 32 × 32), factorized Fourier-neural-operator blocks, a global
average to one latent z, and a FiLM-conditioned SIREN that maps each normalized wavelength in [−1, 1] to the four
pixels; sigmoid outputs in [0, 1]. Optional test-time symmetry: average with the 180°-turned structure's output,
pixels swapped (eval only).

Written from the architecture of hyoseokp/data_CR code/CR_recon/models/se_disco.py (debe903): same constructor
parameters and defaults, tensor names and shapes (the buffer lam_grid is in the state dict), and computation.
Note: the average pool keeps no position, |FFT| is shift-invariant and the FNO mixing is circular, so moving a
feature by half a period (from above R to above B) does not change the output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crrecon_pipeline.models.research.parts import FixedScale, research_norm


class ResBlock32(nn.Module):
    """x -> GELU(x + GN(conv(Dropout2d(GELU(GN(conv(x))))))), 3x3 zero-padded convolutions."""

    def __init__(self, ch: int, dropout: float = 0.02):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.gn1 = research_norm(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.gn2 = research_norm(ch)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.gelu(self.gn1(self.conv1(x))))
        return F.gelu(self.gn2(self.conv2(h)) + x)


class EncoderBranch(nn.Module):
    """(B, 1, 128, 128) -> conv 3x3 (width/2) -> conv 3x3 /2 (width) -> Dropout2d -> conv 3x3 /2 -> ResBlock32:
    (B, width, 32, 32); each conv followed by GN and GELU."""

    def __init__(self, in_ch: int = 1, width: int = 64, dropout: float = 0.02):
        super().__init__()
        half = width // 2
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, half, 3, stride=1, padding=1, bias=False), research_norm(half), nn.GELU(),
            nn.Conv2d(half, width, 3, stride=2, padding=1, bias=False), research_norm(width), nn.GELU(),
            nn.Dropout2d(dropout),
            nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), research_norm(width), nn.GELU())
        self.res = ResBlock32(width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.net(x))


class DualDomainEncoder(nn.Module):
    """Real-space branch on x, k-space branch on log1p(|FFT2(x)|) (orthonormal, float32), concatenated and fused
    by a 1x1 conv + GN + GELU: (B, width, 32, 32)."""

    def __init__(self, width: int = 64, dropout: float = 0.02):
        super().__init__()
        self.real_enc = EncoderBranch(1, width, dropout)
        self.kspace_enc = EncoderBranch(1, width, dropout)
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 1, bias=False), research_norm(width), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            magnitude = torch.log1p(torch.fft.fft2(x.float(), norm="ortho").abs())  # (B, 1, 128, 128)
        both = [self.real_enc(x), self.kspace_enc(magnitude.to(x.dtype))]
        return self.fuse(torch.cat(both, dim=1))


class SpectralConv2d(nn.Module):
    """Fourier layer with a rank-factorized complex weight: on the lowest modes1 × modes2 frequencies (rows from
    the top and, with their own weights, from the bottom of the rfft2 spectrum), channels in -> rank -> out; every
    other frequency is zeroed."""

    def __init__(self, in_ch: int, out_ch: int, modes1: int = 16, modes2: int = 16, rank: int = 16):
        super().__init__()
        self.in_ch, self.out_ch, self.modes1, self.modes2, self.rank = in_ch, out_ch, modes1, modes2, rank
        std = math.sqrt(1.0 / (in_ch * rank))
        self.w1_in = nn.Parameter(torch.randn(in_ch, rank, modes1, modes2, 2) * std)  # (..., re/im)
        self.w1_out = nn.Parameter(torch.randn(rank, out_ch, modes1, modes2, 2) * std)
        self.w2_in = nn.Parameter(torch.randn(in_ch, rank, modes1, modes2, 2) * std)
        self.w2_out = nn.Parameter(torch.randn(rank, out_ch, modes1, modes2, 2) * std)

    @staticmethod
    def _mix(a: torch.Tensor, w: nn.Parameter, m1: int, m2: int) -> torch.Tensor:
        """(B, i, m1, m2) complex · (i, o, m1, m2) complex, summed over i -> (B, o, m1, m2)."""
        return torch.einsum("bixy,ioxy->boxy", a, torch.view_as_complex(w.contiguous())[:, :, :m1, :m2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):
            spec = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W/2+1)
            out = torch.zeros(b, self.out_ch, h, w // 2 + 1, dtype=torch.cfloat, device=x.device)
            m1, m2 = min(self.modes1, h), min(self.modes2, w // 2 + 1)
            out[:, :, :m1, :m2] = self._mix(self._mix(spec[:, :, :m1, :m2], self.w1_in, m1, m2), self.w1_out, m1, m2)
            out[:, :, -m1:, :m2] = self._mix(self._mix(spec[:, :, -m1:, :m2], self.w2_in, m1, m2), self.w2_out, m1,
                                             m2)
            y = torch.fft.irfft2(out, s=(h, w), norm="ortho")
        return y.to(x.dtype)


class FNOBlock2d(nn.Module):
    """x + GELU(GN(SpectralConv(x) + Conv1x1(x)))."""

    def __init__(self, width: int, modes1: int = 16, modes2: int = 16):
        super().__init__()
        self.spectral_conv = SpectralConv2d(width, width, modes1, modes2)
        self.bypass = nn.Conv2d(width, width, 1, bias=False)
        self.norm = research_norm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.norm(self.spectral_conv(x) + self.bypass(x)))


class FiLMSIREN(nn.Module):
    """h0 = sin(ω0 · Linear(λ)); h_k = sin(ω0 · (Linear_k(h) · (1 + γ_k) + β_k)) with (γ_k, β_k) = Linear(z)
    (zero-initialized); output Linear (no sine). SIREN initialization: first layer U(−1, 1), the others
    U(±√(6/hidden)/ω0). (B, z_dim), (N, 1) -> (B, N, out_dim)."""

    def __init__(self, z_dim: int = 256, hidden_dim: int = 256, out_dim: int = 4, n_layers: int = 6,
                 omega0: float = 30.0):
        super().__init__()
        self.n_layers, self.omega0 = n_layers, omega0
        bound = math.sqrt(6.0 / hidden_dim) / omega0
        self.first_layer = nn.Linear(1, hidden_dim)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n_layers))
        self.film_layers = nn.ModuleList(nn.Linear(z_dim, 2 * hidden_dim) for _ in range(n_layers))
        self.out_layer = nn.Linear(hidden_dim, out_dim)
        with torch.no_grad():
            self.first_layer.weight.uniform_(-1.0, 1.0)
            for layer in [*self.hidden_layers, self.out_layer]:
                layer.weight.uniform_(-bound, bound)
            for film in self.film_layers:
                film.weight.zero_()
                film.bias.zero_()

    def forward(self, z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        h = torch.sin(self.omega0 * self.first_layer(lam)).expand(z.shape[0], -1, -1)  # (B, N, H)
        for linear, film in zip(self.hidden_layers, self.film_layers):
            gamma, beta = film(z)[:, None].chunk(2, dim=-1)  # (B, 1, H) each
            h = torch.sin(self.omega0 * (linear(h) * (1.0 + gamma) + beta))
        return self.out_layer(h)


class SEDiSCO(nn.Module):
    """Research se_disco: dual-domain encoder -> FNO blocks at 32 x 32 -> global z -> FiLM-SIREN over wavelength."""

    PARAM_GROUPS = {"encoder": ("encoder", "fno_blocks", "to_z"),
                    "decoder": ("decoder.first_layer", "decoder.hidden_layers", "decoder.film_layers"),
                    "head": ("decoder.out_layer", "spec_bias")}

    def __init__(self, out_len: int = 301, width: int = 64, enc_dropout: float = 0.02, fno_blocks: int = 4,
                 fno_modes: int = 16, z_dim: int = 256, siren_hidden: int = 256, siren_layers: int = 6,
                 omega0: float = 30.0, head_dropout: float = 0.05, use_tta_symmetry: bool = False):
        super().__init__()
        self.out_len, self.z_dim, self.use_tta_symmetry = out_len, z_dim, use_tta_symmetry
        self.encoder = DualDomainEncoder(width, enc_dropout)
        self.fno_blocks = nn.ModuleList(FNOBlock2d(width, fno_modes, fno_modes) for _ in range(fno_blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.to_z = nn.Sequential(nn.Flatten(1), nn.Linear(width, z_dim), nn.GELU(), nn.Dropout(head_dropout))
        self.decoder = FiLMSIREN(z_dim, siren_hidden, 4, siren_layers, omega0)
        lam_nm = torch.linspace(400.0, 700.0, out_len)
        self.register_buffer("lam_grid", (2.0 * (lam_nm - 400.0) / (700.0 - 400.0) - 1.0)[:, None])  # (L, 1)
        self.spec_bias = nn.Parameter(torch.zeros(1, 4, out_len))
        self.scale = FixedScale(out_len)  # no tensors: the identity, then model.constraint when set

    def _forward_single(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.encoder(x)  # (B, W, 32, 32)
        for block in self.fno_blocks:
            feat = block(feat)
        z = self.to_z(self.pool(feat))  # (B, z_dim)
        y = torch.sigmoid(self.decoder(z, self.lam_grid).permute(0, 2, 1) + self.spec_bias)  # (B, 4, L)
        return y.reshape(x.shape[0], 2, 2, self.out_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._forward_single(x)
        if self.use_tta_symmetry and not self.training:
            turned = self._forward_single(torch.rot90(x, 2, [-2, -1]))
            y = 0.5 * (y + turned.flip(1, 2))  # the turn swaps R <-> B and G1 <-> G2
        return self.scale(y)
