"""The symmetry group against the physics: each element's structure move and target permutation, applied the way
the trainer applies them (DeviceData on packed rows), must give what the simulators compute for the moved
structure, to float precision. Plus the split keeps every image of a structure on one side."""

import numpy as np
import pytest
import torch

from crrecon_pipeline.data.prepared import PackedStructures, Prepared
from crrecon_pipeline.data.symmetry import SHIFTS, Augmentation, shift_packed, turned_images
from crrecon_pipeline.data.transforms import pack_structures, rotate_bayer, rotate_packed, to_bayer, unpack_structures
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.reference import brute_force_quadrants
from crrecon_pipeline.physics.simulate import simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator
from crrecon_pipeline.train.batches import DeviceData
from crrecon_pipeline.train.split import split_rows, structure_keys

FULL = Augmentation(shifts=True, turn90=True)  # 16 elements with the stored 180-degree twins


def device_data(structures: np.ndarray, bayer: np.ndarray, augmentation: Augmentation) -> DeviceData:
    """A DeviceData over the given structures, their 180-degree twins and the twins' targets."""
    packed = pack_structures(structures)
    prepared = Prepared(structures=PackedStructures(packed), bayer=bayer.astype(np.float32),
                        rotated_structures=PackedStructures(rotate_packed(packed)), rotated_bayer=rotate_bayer(bayer),
                        source_rows=np.arange(len(packed)), shards=[],
                        wavelengths_nm=np.linspace(400, 700, bayer.shape[-1]))
    return DeviceData(prepared, torch.device("cpu"), with_rotated=True, augmentation=augmentation)


def every_sample(data: DeviceData) -> torch.Tensor:
    return torch.as_tensor(data.samples(np.arange(data.rows)))


def test_every_element_permutes_the_exact_quadrant_powers():
    """Quadrant by quadrant (G1 and G2 apart) against the brute-force reference, on structures with no symmetry."""
    params = PhysicsParams()
    lam = np.array([0.45, 0.55, 0.65])
    rng = np.random.default_rng(3)
    base = (rng.random((2, 16, 16)) < 0.4).repeat(8, 1).repeat(8, 2).astype(np.uint8)  # not diagonal-symmetric
    quadrants = np.stack([brute_force_quadrants(s, params, lam, 1) for s in base])  # (2, 2, 2, 3)
    assert np.abs(quadrants[:, 0, 1] - quadrants[:, 1, 0]).max() > 1e-3  # G1 != G2: the test can tell them apart
    data = device_data(base, quadrants, FULL)
    idx = every_sample(data)
    assert len(idx) == 2 * 16  # 2 structures x 16 group elements (2 stored turns x 8 elements on top)
    images = data.inputs(idx, pm1=False)[:, 0].numpy()
    assert len({im.tobytes() for im in images}) == len(idx)  # 16 distinct images per structure
    simulated = np.stack([brute_force_quadrants(s, params, lam, 1) for s in images])
    np.testing.assert_allclose(data.target(idx).numpy(), simulated, rtol=0, atol=1e-6)  # float32 targets
    # and in float64: the permutation itself is exact
    stored = torch.as_tensor(np.concatenate([quadrants, rotate_bayer(quadrants)]))
    permuted = FULL.targets(stored[idx % data.rows], *FULL.decode(idx // data.rows))
    np.testing.assert_allclose(permuted.numpy(), simulated, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fidelity", ["thin", "multislice"])
def test_images_match_the_simulators(fidelity):
    """The built-in simulators (R, G = mean of the greens, B) on generated, diagonal-symmetric structures: the
    simulated spectra of every image are the permuted targets; a shifted image has G1 != G2."""
    params = PhysicsParams(fidelity=fidelity, n_wavelengths=16)
    structures, _ = StructureGenerator(seed=11).rows(0, 2)
    bayer = to_bayer(-simulate_spectra(structures, params))
    data = device_data(structures, bayer, FULL)
    idx = every_sample(data)
    simulated = -simulate_spectra(data.inputs(idx, pm1=False)[:, 0].numpy(), params)  # (n, 3, L): R, G, B
    target = data.target(idx).numpy()
    np.testing.assert_allclose(target[:, 0, 0], simulated[:, 0], rtol=0, atol=2e-6)
    np.testing.assert_allclose(target[:, 1, 1], simulated[:, 2], rtol=0, atol=2e-6)
    np.testing.assert_allclose((target[:, 0, 1] + target[:, 1, 0]) / 2, simulated[:, 1], rtol=0, atol=2e-6)
    shifted_x = idx >= data.rows  # element 1: x shift
    assert np.abs(target[shifted_x.numpy(), 0, 1] - target[shifted_x.numpy(), 1, 0]).max() > 1e-3


def test_packed_shifts_are_the_rolls_of_the_image():
    s = (np.random.default_rng(0).random((3, 128, 128)) < 0.5).astype(np.uint8)
    for x, y in SHIFTS:
        expected = np.roll(s, (64 * x, 64 * y), axis=(1, 2))
        np.testing.assert_array_equal(unpack_structures(shift_packed(pack_structures(s), x, y)), expected)
        torch_version = shift_packed(torch.as_tensor(pack_structures(s)), x, y).numpy()
        np.testing.assert_array_equal(unpack_structures(torch_version), expected)


def test_without_shifts_only_the_stored_rows_train():
    s = (np.random.default_rng(1).random((2, 128, 128)) < 0.5).astype(np.uint8)
    bayer = np.random.default_rng(2).random((2, 2, 2, 5)).astype(np.float32)
    data = device_data(s, bayer, Augmentation(shifts=False, turn90=False))
    idx = every_sample(data)
    assert idx.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(data.inputs(idx[:2], pm1=False)[:, 0].numpy(), s)
    np.testing.assert_array_equal(data.target(idx[2:]).numpy(), rotate_bayer(bayer))


def test_split_keeps_every_image_of_a_structure_together(prepared_dir):
    from crrecon_pipeline.data.prepared import load_prepared

    packed = load_prepared(prepared_dir).structures.packed
    keys = structure_keys(packed)
    assert len(np.unique(keys)) == len(packed)  # distinct structures keep distinct keys
    images = [shift_packed(turned, x, y) for turned in turned_images(packed) for x, y in SHIFTS]
    assert len(images) == 16
    for image in images:
        np.testing.assert_array_equal(structure_keys(image), keys)
    # a dataset holding some structures' images as rows of their own: every image on its structure's side
    n = len(packed)
    mixed = np.concatenate([packed] + [image[k::16] for k, image in enumerate(images)])
    train_rows, val_rows = split_rows(mixed, 0.8)
    side = np.zeros(len(mixed), bool)
    side[val_rows] = True
    origin = np.concatenate([np.arange(n)] + [np.arange(n)[k::16] for k in range(16)])
    assert side[:n].any() and not side[:n].all()
    np.testing.assert_array_equal(side, side[origin])
