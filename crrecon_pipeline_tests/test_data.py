"""Preprocessing: transforms against hand-computed values, counts, bad input, the prepared-folder API."""

import json

import numpy as np
import pytest

from crrecon_pipeline.data.checks import CheckLimits, check_rotation_exact
from crrecon_pipeline.data.npyio import save_atomic
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.rawfiles import ShardReader, open_shard
from crrecon_pipeline.data.transforms import (
    ROTATE_BLOCK_ROWS,
    PrepareSettings,
    bin_spectra,
    count_rotation_mismatches,
    encoding_from_scan,
    pack_and_scan,
    pack_structures,
    rotate_bayer,
    rotate_packed,
    structure_encoding,
    to_bayer,
    unpack_structures,
)
from crrecon_pipeline.errors import DataError

from .helpers import run_cli, write_raw_pair


def test_mean_binning_by_hand():
    x = np.arange(301, dtype=np.float32)[None, None].repeat(3, axis=1)  # (1, 3, 301): sample i has value i
    out = bin_spectra(x, PrepareSettings())
    assert out.shape == (1, 3, 30)
    np.testing.assert_allclose(out[0, 0, :29], 10 * np.arange(29) + 4.5)  # mean of 10k .. 10k+9
    assert out[0, 0, 29] == pytest.approx(295.0)  # mean of 290 .. 300 (11 samples)


def test_subsample_binning_reproduces_research_code():
    x = np.random.default_rng(0).random((2, 3, 301)).astype(np.float32)
    out = bin_spectra(x, PrepareSettings(binning="subsample"))
    np.testing.assert_array_equal(out, x[..., np.linspace(0, 300, 30, dtype=int)])


def test_frequency_ordered_export_is_reversed_first():
    x = np.random.default_rng(1).random((2, 3, 301)).astype(np.float32)
    desc = PrepareSettings(wavelength_first_nm=700, wavelength_last_nm=400)
    np.testing.assert_allclose(bin_spectra(x[..., ::-1], desc), bin_spectra(x, PrepareSettings()), rtol=1e-6)
    assert desc.bin_centers_nm()[0] < desc.bin_centers_nm()[-1]


def test_bayer_layout_and_rotation():
    rgb = np.stack([np.full(30, 1.0), np.full(30, 2.0), np.full(30, 3.0)])[None]
    bayer = to_bayer(rgb)
    assert bayer.shape == (1, 2, 2, 30)
    assert ((bayer[0, 0, 0] == 1).all() and (bayer[0, 0, 1] == 2).all()
            and (bayer[0, 1, 0] == 2).all() and (bayer[0, 1, 1] == 3).all())
    rot = rotate_bayer(bayer)
    assert (rot[0, 0, 0] == 3).all() and (rot[0, 1, 1] == 1).all()
    np.testing.assert_array_equal(rotate_bayer(rot), bayer)


def test_packing_and_packed_rotation():
    s = (np.random.default_rng(2).random((5, 128, 128)) > 0.5).astype(np.uint8)
    packed = pack_structures(s)
    assert packed.shape == (5, 2048)
    np.testing.assert_array_equal(unpack_structures(packed), s)
    np.testing.assert_array_equal(unpack_structures(rotate_packed(packed)), s[:, ::-1, ::-1])
    np.testing.assert_array_equal(rotate_packed(rotate_packed(packed)), packed)



@pytest.mark.parametrize("rows", [0, 1, ROTATE_BLOCK_ROWS - 1, ROTATE_BLOCK_ROWS, ROTATE_BLOCK_ROWS + 1,
                                  5 * ROTATE_BLOCK_ROWS + 3])
@pytest.mark.parametrize("fill", [0.03, 0.5, 0.97])
def test_packed_rotation_property_over_random_rows(rows, fill):
    """Any packed rows (any fill, row counts around the block size, a non-contiguous input) turn exactly as
    np.rot90(s, 2) and s[::-1, ::-1] turn the unpacked structures."""
    rng = np.random.default_rng(rows * 1000 + int(fill * 100))
    s = (rng.random((rows, 128, 128)) < fill).astype(np.uint8)
    packed = pack_structures(s)
    turned = rotate_packed(packed)
    assert turned.shape == packed.shape and turned.dtype == np.uint8
    np.testing.assert_array_equal(unpack_structures(turned), np.rot90(s, 2, axes=(1, 2)))
    np.testing.assert_array_equal(unpack_structures(turned), s[:, ::-1, ::-1])
    np.testing.assert_array_equal(rotate_packed(turned), packed)
    np.testing.assert_array_equal(rotate_packed(packed[::-1]), turned[::-1])  # a negative-stride view
    assert count_rotation_mismatches(packed, turned) == 0


def test_packed_rotation_moves_every_single_bit_to_its_mirror():
    """Each of the 16384 one-bit structures: bit k of the flat string lands on bit 16383 - k."""
    k = np.arange(128 * 128)
    s = np.zeros((len(k), 128 * 128), np.uint8)
    s[k, k] = 1
    turned = unpack_structures(rotate_packed(pack_structures(s))).reshape(len(k), -1)
    assert (turned.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(turned.argmax(axis=1), 128 * 128 - 1 - k)


def test_rotation_check_finds_one_flipped_bit(tmp_path):
    """The check re-reads the written files: one flipped bit in one rotated row (or one changed Bayer value)
    makes exactly one mismatched row and fails the check."""
    rng = np.random.default_rng(9)
    packed = pack_structures((rng.random((300, 128, 128)) > 0.5).astype(np.uint8))
    bayer = rng.random((300, 2, 2, 30)).astype(np.float32)
    for name, a in (("structures", packed), ("structures_rotated", rotate_packed(packed)),
                    ("bayer", bayer), ("bayer_rotated", rotate_bayer(bayer))):
        save_atomic(tmp_path / f"{name}.npy", a)
    assert check_rotation_exact(tmp_path, CheckLimits()).passed
    bad = rotate_packed(packed)
    bad[217, 1999] ^= 0x10
    assert count_rotation_mismatches(packed, bad) == 1
    save_atomic(tmp_path / "structures_rotated.npy", bad)
    outcome = check_rotation_exact(tmp_path, CheckLimits())
    assert not outcome.passed and outcome.metadata["mismatched_rows"] == 1
    save_atomic(tmp_path / "structures_rotated.npy", rotate_packed(packed))
    bad_bayer = rotate_bayer(bayer)
    bad_bayer[3, 0, 1, 7] = np.nextafter(bad_bayer[3, 0, 1, 7], 2)
    save_atomic(tmp_path / "bayer_rotated.npy", bad_bayer)
    outcome = check_rotation_exact(tmp_path, CheckLimits())
    assert not outcome.passed and outcome.metadata["mismatched_rows"] == 1


@pytest.mark.parametrize("chunk_rows", [1, 7, 100, 4096])
def test_reader_piece_job_packs_scans_and_hashes_every_byte(tmp_path, chunk_rows):
    """The structures' thread hashes and packs in pieces: the digests are those of the whole files, the packed
    rows those of pack_structures, whatever the chunk size (pieces of 32 rows here: 77 rows span several)."""
    import blake3

    rng = np.random.default_rng(11)
    st = (rng.random((77, 1, 128, 128)) > 0.5).astype(np.uint8)
    sp = -rng.random((77, 3, 301)).astype(np.float32)
    write_raw_pair(tmp_path, 0, st, sp)
    reader = ShardReader(open_shard(tmp_path, 0), chunk_rows)
    packed, firsts = [], []
    for first, chunk_st, chunk_sp, pieces in reader.chunks_with(pack_and_scan):
        firsts.append(first)
        np.testing.assert_array_equal(chunk_st, st[first:first + len(chunk_st)])
        np.testing.assert_array_equal(chunk_sp, sp[first:first + len(chunk_sp)])
        assert encoding_from_scan(chunk_st, [top for _, top in pieces]) == structure_encoding(chunk_st)
        packed.append(np.concatenate([p for p, _ in pieces]))
    assert firsts == list(range(0, 77, chunk_rows))
    np.testing.assert_array_equal(np.concatenate(packed), pack_structures(st))
    for key, name in (("structures", "binary_dataset_128_0.npy"), ("spectra", "spectra_latest_0.npy")):
        assert reader.digests[key] == blake3.blake3((tmp_path / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("values, dtype", [((0, 1), np.uint8), ((0, 255), np.uint8), ((0,), np.uint8),
                                           ((0, 1, 255), np.uint8), ((0, 1, 7), np.uint8), ((-1, 0, 1), np.int16),
                                           ((0, 1), np.int64)])
def test_encoding_from_the_pieces_scan_is_structure_encoding(values, dtype):
    chunk = np.random.default_rng(3).choice(np.array(values, dtype=dtype), (10, 1, 128, 128))
    pieces = [pack_and_scan(chunk[i:i + 3]) for i in range(0, 10, 3)]
    assert encoding_from_scan(chunk, [top for _, top in pieces]) == structure_encoding(chunk)

def _handmade(folder, encoding=1):
    rng = np.random.default_rng(5)
    st = (rng.random((8, 1, 128, 128)) > 0.6).astype(np.uint8) * encoding
    sp = -rng.random((8, 3, 301)).astype(np.float32) * 0.5
    sp[1] = 0  # unfinished
    sp[4] = 0
    sp[2, 1, 17] = np.nan  # non-finite
    sp[6, 0, 3] = np.inf
    write_raw_pair(folder, 0, st, sp)
    return st, sp


@pytest.mark.parametrize("encoding", [1, 255])
def test_preprocess_counts_and_values(tmp_path, encoding):
    st, sp = _handmade(tmp_path / "raw", encoding)
    summary = preprocess(tmp_path / "raw", tmp_path / "out")
    versions = summary.pop("versions")
    assert summary == {"raw_rows": 8, "kept_rows": 4, "dropped_unfinished": 2, "dropped_nonfinite": 2, "shards": 1,
                       "superseded": {}}
    assert list(versions) == ["0"] and versions["0"].startswith("rotated-")
    p = load_prepared(tmp_path / "out")
    np.testing.assert_array_equal(p.source_rows, [0, 3, 5, 7])
    np.testing.assert_array_equal(np.asarray(p.structures), st[[0, 3, 5, 7], 0] // encoding)
    expected = to_bayer(bin_spectra(-sp[[0, 3, 5, 7]], PrepareSettings()))
    np.testing.assert_allclose(p.bayer, expected, rtol=1e-6)
    assert (p.bayer >= 0).all()
    np.testing.assert_array_equal(p.rotated_bayer, rotate_bayer(p.bayer))
    np.testing.assert_array_equal(p.rotated_structures[2], p.structures[2][::-1, ::-1])


def test_load_prepared_on_simulated_data(raw_dir, prepared_dir):
    p = load_prepared(prepared_dir)
    raw_rows = sum(r["raw_rows"] for r in p.shards)
    assert raw_rows == 600 and 0.35 < len(p) / raw_rows < 0.7
    assert p.structures.shape == (len(p), 128, 128) and p.bayer.shape == (len(p), 2, 2, 30)
    assert p.bayer.dtype == np.float32
    np.testing.assert_array_equal(p.bayer[:, 0, 1], p.bayer[:, 1, 0])
    # source_rows index the raw shards concatenated in shard order
    raw_sp = np.concatenate([np.load(raw_dir / f"spectra_latest_{k}.npy") for k in range(2)])
    raw_st = np.concatenate([np.load(raw_dir / f"binary_dataset_128_{k}.npy") for k in range(2)])
    i = len(p) - 3
    r = p.source_rows[i]
    assert r >= 300, "a row of the second shard"
    np.testing.assert_allclose(p.bayer[i, 1, 1, 0], -raw_sp[r, 2, :10].mean(), rtol=1e-6)
    np.testing.assert_array_equal(p.structures[i], raw_st[r, 0])


def snapshot(out) -> dict:
    """Every committed file's bytes, and what load_prepared returns (which versions)."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and ".staging" not in p.parts}
    return {"files": files, "training_set": load_prepared(out).training_set()}


def assert_intact(out, before: dict) -> None:
    """Nothing committed changed or vanished (new unreferenced versions may appear) and the loaded set is the same."""
    after = snapshot(out)
    assert {k: after["files"].get(k) for k in before["files"]} == before["files"]
    assert after["training_set"] == before["training_set"]
    assert not any((out / ".staging").iterdir()) if (out / ".staging").exists() else True


def _bad_cases():
    good_st = np.zeros((4, 1, 128, 128), np.uint8)
    good_sp = -np.ones((4, 3, 301), np.float32) * 0.1

    def mismatch(d):
        write_raw_pair(d, 0, good_st, good_sp[:3])
        return "spectra_latest_0.npy"

    def wrong_shape(d):
        write_raw_pair(d, 0, np.zeros((4, 64, 64), np.uint8), good_sp)
        return "binary_dataset_128_0.npy"

    def non_binary(d):
        st = good_st.copy()
        st[2, 0, 5, 5] = 7
        write_raw_pair(d, 0, st, good_sp)
        return "binary_dataset_128_0.npy"

    def truncated(d):
        write_raw_pair(d, 0, good_st, good_sp)
        p = d / "spectra_latest_0.npy"
        p.write_bytes(p.read_bytes()[:2000])
        return "spectra_latest_0.npy"

    def not_npy(d):
        write_raw_pair(d, 0, good_st, good_sp)
        (d / "binary_dataset_128_0.npy").write_text("this is not an array\n")
        return "binary_dataset_128_0.npy"

    def lone_structures(d):
        write_raw_pair(d, 0, good_st, good_sp)
        np.save(d / "binary_dataset_128_1.npy", good_st)
        return "binary_dataset_128_1.npy"

    def empty(d):
        d.mkdir(parents=True)
        return str(d.name)

    return [mismatch, wrong_shape, non_binary, truncated, not_npy, lone_structures, empty]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_input_one_line_and_earlier_output_intact(tmp_path, raw_dir, case):
    out = tmp_path / "out"
    first = run_cli("preprocess", "--raw", raw_dir, "--out", out)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1])["raw_rows"] == 600
    before = snapshot(out)

    bad = tmp_path / "bad"
    name = case(bad)
    res = run_cli("preprocess", "--raw", bad, "--out", out)
    assert res.returncode != 0
    lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1, res.stderr
    assert name in lines[0] and "Traceback" not in res.stderr
    assert_intact(out, before)


def test_nonbinary_found_mid_stream_leaves_output_intact(tmp_path, raw_dir):
    """A bad value deep in the second shard is only seen while streaming: nothing may be replaced."""
    out = tmp_path / "out"
    preprocess(raw_dir, out)
    before = snapshot(out)
    bad = tmp_path / "bad"
    st = np.load(raw_dir / "binary_dataset_128_1.npy")
    st[-1, 0, 0, 0] = 3
    write_raw_pair(bad, 0, np.load(raw_dir / "binary_dataset_128_0.npy"), np.load(raw_dir / "spectra_latest_0.npy"))
    write_raw_pair(bad, 1, st, np.load(raw_dir / "spectra_latest_1.npy"))
    with pytest.raises(DataError, match="binary_dataset_128_1.npy: non-binary structures"):
        preprocess(bad, out)
    assert_intact(out, before)
