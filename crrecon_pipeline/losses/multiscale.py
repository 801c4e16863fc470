"""multiscale: a spectrum judged at several scales along wavelength, as the research group's later work did.

w_value * MSE(values) + w_corr * (1 - mean per-spectrum Pearson) + w_d1 * MSE(first differences)
+ w_d2 * MSE(second differences). The differences compare slopes and curvature of prediction and target along
the last (wavelength) axis, so a prediction with the right level but wrong peak positions or ripple is penalised.
"""

import torch

from crrecon_pipeline.losses.crrecon_mse_pearson import pearson_per_spectrum
from crrecon_pipeline.losses.terms import TermLoss


class MultiScale(TermLoss):
    def __init__(self, w_value: float = 1.0, w_corr: float = 0.2, w_d1: float = 1.0, w_d2: float = 1.0):
        super().__init__()
        self.w_value, self.w_corr, self.w_d1, self.w_d2 = w_value, w_corr, w_d1, w_d2

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"value": self.w_value * torch.mean((pred - target) ** 2)}
        if self.w_corr:
            out["corr"] = self.w_corr * (1 - pearson_per_spectrum(pred, target).mean())
        diff_p, diff_t = pred, target
        for name, weight in (("d1", self.w_d1), ("d2", self.w_d2)):
            diff_p, diff_t = torch.diff(diff_p, dim=-1), torch.diff(diff_t, dim=-1)
            if weight:
                out[name] = weight * torch.mean((diff_p - diff_t) ** 2)
        return out
