"""multiscale: a spectrum judged at several scales along wavelength, as the research group's later work did.

w_value * MSE(values) + w_corr * (1 - mean per-spectrum Pearson) + w_d1 * MSE(first differences)
+ w_d2 * MSE(second differences). The differences compare slopes and curvature of prediction and target along
the last (wavelength) axis, so a prediction with the right level but wrong peak positions or ripple is penalised.
"""

import torch
from torch import nn

from crrecon_pipeline.losses.mse_pearson import pearson_per_spectrum


class MultiScale(nn.Module):
    def __init__(self, w_value: float = 1.0, w_corr: float = 0.2, w_d1: float = 1.0, w_d2: float = 1.0):
        super().__init__()
        self.w_value, self.w_corr, self.w_d1, self.w_d2 = w_value, w_corr, w_d1, w_d2

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.w_value * torch.mean((pred - target) ** 2)
        if self.w_corr:
            loss = loss + self.w_corr * (1 - pearson_per_spectrum(pred, target).mean())
        diff_p, diff_t = pred, target
        for weight in (self.w_d1, self.w_d2):
            diff_p, diff_t = torch.diff(diff_p, dim=-1), torch.diff(diff_t, dim=-1)
            if weight:
                loss = loss + weight * torch.mean((diff_p - diff_t) ** 2)
        return loss
