"""The properties docs/simulator.md lists for a correct simulator, plus determinism of the generator."""

import numpy as np
import pytest

from crrecon_pipeline.physics.fourier import max_order
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.reference import brute_force_power, brute_force_quadrants
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.physics.simulate import make_plan, simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator, StructureParams


@pytest.fixture(scope="module")
def plan():
    return make_plan()


@pytest.fixture(scope="module")
def structures():
    s, _ = StructureGenerator(seed=11).rows(0, 6)
    return s


def test_raw_format(plan, structures):
    out = simulate_spectra(structures, plan=plan)
    assert out.shape == (6, 3, 301) and out.dtype == np.float32
    assert (out <= 0).all(), "raw spectra are stored negative"
    assert out.min() > -1


@pytest.mark.parametrize("value", [0, 1])
def test_uniform_pattern_gives_a_quarter_per_quadrant(plan, value):
    s = np.full((1, 1, 128, 128), value, np.uint8)
    power = -simulate_spectra(s, plan=plan)
    np.testing.assert_allclose(power, 0.25, atol=2e-7)


def test_power_conservation(plan, structures):
    power = -simulate_spectra(structures, plan=plan).astype(np.float64)
    total = power[:, 0] + 2 * power[:, 1] + power[:, 2]
    assert (total <= 1 + 1e-5).all()
    assert (total > 0.2).all() and total.mean() > 0.6, "most of the light propagates"
    # near 630 nm the thin-element phase wraps by 2 pi: the mask nearly vanishes, almost nothing is diffracted
    assert total[:, 230].min() > 0.98


def test_rotation_swaps_red_and_blue(plan):
    s, _ = StructureGenerator(seed=3).rows(0, 3)
    s = np.roll(s, 37, axis=1)  # shifted along y only: deliberately NOT diagonal-symmetric
    a = -simulate_spectra(s, plan=plan)
    b = -simulate_spectra(s[:, ::-1, ::-1].copy(), plan=plan)
    np.testing.assert_allclose(b[:, 0], a[:, 2], atol=2e-6)
    np.testing.assert_allclose(b[:, 2], a[:, 0], atol=2e-6)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=2e-6)
    assert np.abs(a[:, 0] - a[:, 2]).max() > 1e-2, "the test pattern must actually route colours differently"


def test_diagonal_symmetry_gives_equal_greens():
    """E01 = E10 for s = s^T (and not otherwise), on the reference that computes the two quadrants apart."""
    params = PhysicsParams()
    s, _ = StructureGenerator(seed=5).rows(0, 1)
    lam = np.array([0.45, 0.55, 0.65])
    e = brute_force_quadrants(s[0], params, lam, 1)
    np.testing.assert_allclose(e[0, 1], e[1, 0], atol=1e-12)
    skew = brute_force_quadrants(np.roll(s[0], 29, axis=0), params, lam, 1)
    assert np.abs(skew[0, 1] - skew[1, 0]).max() > 1e-3


def test_asymmetric_pattern_has_unequal_greens_reference():
    """Sanity of the reference itself: a pattern that is not diagonal-symmetric does split E01 and E10."""
    params = PhysicsParams()
    s = np.zeros((128, 128), np.uint8)
    s[0:64, 64:128] = 1  # a block over the (0, 1) quadrant only
    fast = -simulate_spectra(s[None], params)[0]
    ref = brute_force_power(s, params, params.wavelengths_um()[[50]], 1)
    np.testing.assert_allclose(fast[:, 50], ref[:, 0], atol=5e-4)


def test_agrees_with_brute_force_and_converges(plan):
    params = PhysicsParams()
    s, _ = StructureGenerator(seed=2).rows(0, 1)
    idx = np.array([0, 40, 99, 150, 220, 300])
    fast = -simulate_spectra(s, plan=plan)[0][:, idx]
    errors = [np.abs(brute_force_power(s[0], params, params.wavelengths_um()[idx], u) - fast).max() for u in (1, 2, 4)]
    assert errors[0] < 5e-4
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3, errors  # ~4x per doubling
    assert errors[2] <= 1e-4


def test_order_cutoffs():
    p = PhysicsParams()
    assert max_order(p, 0.400) == 4  # m = 5 sits exactly on cutoff at 400 nm: dropped
    assert max_order(p, 0.500) == 3  # 500 nm: m = 4 at cutoff
    assert max_order(p, 0.700) == 2


def test_generator_is_deterministic_and_symmetric():
    g = StructureGenerator(seed=9)
    a, ua = g.rows(0, 300)
    b, ub = g.rows(250, 300)  # a different chunking of the same rows
    assert np.array_equal(a[250:], b) and np.array_equal(ua[250:], ub)
    assert (a == a.transpose(0, 2, 1)).all(), "diagonal-symmetric"
    assert set(np.unique(a)) == {0, 1}
    fill = a.mean(axis=(1, 2))
    assert 0.2 < fill.min() and fill.max() < 0.45 and abs(fill.mean() - 0.32) < 0.02
    c, _ = StructureGenerator(seed=10).rows(0, 10)
    assert not np.array_equal(a[:10], c)


def test_dataset_bytes_are_reproducible(tmp_path):
    settings = SimulationSettings(seed=4, structures=StructureParams(unfinished_fraction=0.3))
    write_dataset(tmp_path / "a", rows=120, shards=2, settings=settings)
    write_dataset(tmp_path / "b", rows=120, shards=3, settings=settings)
    a = np.concatenate([np.load(tmp_path / "a" / f"spectra_latest_{k}.npy") for k in range(2)])
    b = np.concatenate([np.load(tmp_path / "b" / f"spectra_latest_{k}.npy") for k in range(3)])
    assert a.tobytes() == b.tobytes(), "the same seed gives the same bytes however it is sharded"
    again = tmp_path / "c"
    write_dataset(again, rows=120, shards=2, settings=settings)
    for name in ("binary_dataset_128_0.npy", "spectra_latest_1.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (again / name).read_bytes()
    unfinished = (a == 0).all(axis=(1, 2)).mean()
    assert 0.15 < unfinished < 0.45
