"""The field's accuracy numbers, by hand on small arrays, and their place in a run's metrics and metadata."""

import numpy as np
import pytest
import torch

from crrecon_pipeline.train.metrics import field_metrics

LAM = np.array([450.0, 550.0, 650.0])  # one wavelength in each band: B, G, R
TRUE = [[[0.1, 0.3, 0.6], [0.2, 0.5, 0.3]],  # R peaks at 650, G1 at 550
        [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]]  # G2 at 550, B at 450
PRED = [[[0.1, 0.6, 0.3], [0.2, 0.5, 0.3]],  # R peaks at 550: 100 nm off
        [[0.5, 0.2, 0.3], [0.6, 0.3, 0.1]]]  # G2 peaks at 450: 100 nm off


def test_field_metrics_by_hand():
    target = torch.tensor([TRUE, TRUE])
    pred = torch.tensor([PRED, TRUE])  # the second sample exact
    m = field_metrics(pred, target, LAM)
    # R: (0 + 0.3^2 + 0.3^2) / 3 on sample 1, 0 on sample 2 -> 0.03; G2 likewise; G1, B exact
    assert m["val_mse_R"] == pytest.approx(0.03) and m["val_mse_G2"] == pytest.approx(0.03)
    assert m["val_mse_G1"] == 0 and m["val_mse_B"] == 0
    assert m["val_peak_error_nm"] == pytest.approx(200 / 8)  # two of eight spectra 100 nm off
    # routing: true (B 0.6 + G 0.5 + 0.5 + R 0.6) / 3 = 2.2 / 3; predicted (0.6 + 0.5 + 0.2 + 0.3) / 3 = 1.6 / 3
    assert m["val_routing_efficiency"] == pytest.approx(2.2 / 3)
    assert m["val_routing_error"] == pytest.approx((0.6 / 3) / 2)


def test_no_routing_numbers_when_the_grid_misses_a_band():
    m = field_metrics(torch.tensor([PRED]), torch.tensor([TRUE]), np.array([410.0, 420.0, 430.0]))
    assert "val_routing_error" not in m
    assert m["val_peak_error_nm"] == pytest.approx(2 * 10 / 4)  # the same index errors on a 10 nm grid
