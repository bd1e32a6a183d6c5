"""The composite is exactly a median of the clear observations."""

import numpy as np

from landslide_dask.cube.composite import SCL_NOT_CLEAR, clear_mask, composite_block, median_composite, sorting_network


def test_median_composite_equals_numpy_median_of_clear_pixels():
    rng = np.random.default_rng(0)
    refl = rng.integers(1, 5000, size=(7, 4, 30, 40), dtype=np.uint16)
    refl[rng.random(refl.shape) < 0.1] = 0  # scattered no-data
    scl = rng.choice(np.array([4, 5, 6, 3, 8, 9, 10, 0, 2]), size=(7, 30, 40))
    out = median_composite(refl, clear_mask(scl))
    for b, y, x in [(0, 0, 0), (1, 5, 7), (3, 29, 39), (2, 13, 21)]:
        ok = ~np.isin(scl[:, y, x], SCL_NOT_CLEAR) & (refl[:, b, y, x] > 0)
        vals = refl[ok, b, y, x]
        expected = np.rint(np.median(vals)) if vals.size else 0
        assert out[b, y, x] == expected
    # A pixel clouded on every date has no composite value.
    scl[:, 3, 3] = 9
    assert (median_composite(refl, clear_mask(scl))[:, 3, 3] == 0).all()


def _nanmedian_reference(refl: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """The definition: np.nanmedian of the clear, non-zero observations, rounded half to even."""
    data = refl.astype(np.float64)
    data[(refl == 0) | ~clear[:, None]] = np.nan
    has = np.isfinite(data).any(axis=0)
    data[:, ~has] = 0.0
    return np.where(has, np.rint(np.nanmedian(data, axis=0)), 0).astype(np.uint16)


def test_median_composite_equals_nanmedian_at_every_pixel_whatever_the_date_count():
    rng = np.random.default_rng(1)
    for t in (1, 2, 3, 4, 7, 8, 16):
        refl = rng.integers(1, 12000, size=(t, 3, 40, 50), dtype=np.uint16)
        refl[rng.random(refl.shape) < 0.2] = 0
        refl[:, :, :5, :5] = 7  # ties: every date the same value
        refl[::2, :, 5:9, :] = 65535  # the top of the range: the sum of two middle values exceeds uint16
        clear = rng.random((t, 40, 50)) < 0.7
        clear[:, 30:, 45:] = False  # never clear: no composite
        got = median_composite(refl, clear)
        assert got.dtype == np.uint16 and (got == _nanmedian_reference(refl, clear)).all(), t


def test_composite_block_splits_pre_and_post_dates():
    refl = np.stack([np.full((1, 2, 2), v, np.uint16) for v in (10, 20, 30, 100, 200)])
    scl = np.full((5, 2, 2), 4)
    is_pre = np.array([True, True, True, False, False])
    assert (composite_block(refl, scl, is_pre, True) == 20).all()
    assert (composite_block(refl, scl, is_pre, False) == 150).all()
    assert (composite_block(refl, scl, np.ones(5, bool), False) == 0).all()


def test_sorting_network_sorts_every_zero_one_input_up_to_16_dates():
    # The 0-1 principle: a comparator network that sorts every sequence of 0s and 1s sorts everything.
    for n in range(1, 17):
        bits = ((np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1).astype(np.uint8)
        rows = list(bits)
        for i, j in sorting_network(n):
            assert i < j < n
            rows[i], rows[j] = np.minimum(rows[i], rows[j]), np.maximum(rows[i], rows[j])
        assert (np.diff(np.array(rows, dtype=int), axis=0) >= 0).all(), n


def test_clear_mask_masks_exactly_the_not_clear_classes():
    scl = np.arange(256, dtype=np.uint16).reshape(16, 16)
    assert (clear_mask(scl) == ~np.isin(scl, SCL_NOT_CLEAR)).all()
    assert (clear_mask(scl.astype(np.uint8)) == ~np.isin(scl, SCL_NOT_CLEAR)).all()
