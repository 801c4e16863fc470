"""multiscale_spectral (the research code's, its default configs' loss): SmoothL1 on the values, Pearson on the
shape, SmoothL1 on the first and second differences along wavelength, and L1 on the upper part of the rFFT
magnitude spectrum of each pixel spectrum (from index ⌊n_freq · fft_start_ratio⌋); SmoothL1 terms weight the B
pixel by blue_weight, the FFT term does not."""

from __future__ import annotations

import torch

from crrecon_pipeline.losses.research.common import ClampedTermLoss, blue_weighted_mean, pearson_loss, smooth_l1


class MultiscaleSpectral(ClampedTermLoss):
    FORMULA = ("L = clamp({w_abs} · SL1_B(ŷ, y) + {w_corr} · mean_valid(1 − r) + {w_grad1} · SL1_B(Δλ) + {w_grad2} · "
               "SL1_B(Δλ²) + {w_fft} · L1(|rFFT|[high]), 0, 100);  SmoothL1 beta {beta}, B pixel weight "
               "{blue_weight}, FFT from {fft_start_ratio} of the frequencies")

    def __init__(self, w_abs: float = 1.0, w_corr: float = 0.3, w_grad1: float = 0.5, w_grad2: float = 0.2,
                 w_fft: float = 0.1, blue_weight: float = 2.0, beta: float = 0.02, fft_start_ratio: float = 0.5,
                 corr_eps: float = 1e-8, corr_norm_floor: float = 1e-6):
        super().__init__()
        self.w_abs, self.w_corr, self.w_grad1 = float(w_abs), float(w_corr), float(w_grad1)
        self.w_grad2, self.w_fft, self.blue_weight = float(w_grad2), float(w_fft), float(blue_weight)
        self.beta, self.fft_start_ratio = float(beta), float(fft_start_ratio)
        self.corr_eps, self.corr_norm_floor = float(corr_eps), float(corr_norm_floor)

    def _sl1(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return blue_weighted_mean(smooth_l1(pred - target, self.beta), self.blue_weight)

    def _fft_high(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = torch.fft.rfft(pred, dim=-1).abs(), torch.fft.rfft(target, dim=-1).abs()  # (B, 2, 2, L//2+1)
        start = int(p.shape[-1] * self.fft_start_ratio)
        if start >= p.shape[-1]:
            return pred.new_zeros(())
        return (p[..., start:] - t[..., start:]).abs().mean()

    def weighted_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dp, dt = torch.diff(pred, dim=-1), torch.diff(target, dim=-1)
        parts = {"abs": (self.w_abs, lambda: self._sl1(pred, target)),
                 "corr": (self.w_corr, lambda: pearson_loss(pred, target, self.corr_eps, self.corr_norm_floor)),
                 "grad1": (self.w_grad1, lambda: self._sl1(dp, dt)),
                 "grad2": (self.w_grad2, lambda: self._sl1(torch.diff(dp, dim=-1), torch.diff(dt, dim=-1))),
                 "fft": (self.w_fft, lambda: self._fft_high(pred, target))}
        return {name: w * value() for name, (w, value) in parts.items() if w}
