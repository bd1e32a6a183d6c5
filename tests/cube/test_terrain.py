"""Slope and hillshade against analytic surfaces, and independence from chunking."""

import dask.array as da
import numpy as np
import pytest

from landslide_dask.cube.terrain import hillshade, slope_degrees


def _grid(n=64, res=10.0):
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    east, north = cols * res, -rows * res  # rows run southward
    return east, north


@pytest.mark.parametrize("res", [10.0, 30.0])
def test_slope_of_a_plane_matches_its_gradient(res):
    east, north = _grid(res=res)
    z = 0.4 * east - 0.25 * north + 100
    slope = slope_degrees(da.from_array(z, chunks=20), res, res).compute()[1:-1, 1:-1]  # inner: edge repeats
    expected = np.degrees(np.arctan(np.hypot(0.4, 0.25)))
    np.testing.assert_allclose(slope, expected, atol=1e-4)


def test_slope_of_a_cone_is_constant_and_chunking_does_not_matter():
    east, north = _grid(n=101)
    r = np.hypot(east - 500, north + 500)
    z = 1000 - np.tan(np.radians(30)) * r
    a = slope_degrees(da.from_array(z, chunks=101), 10, 10).compute()
    b = slope_degrees(da.from_array(z, chunks=(17, 23)), 10, 10).compute()
    np.testing.assert_array_equal(a, b)
    ring = (r > 60) & (r < 400)  # away from the apex and the repeated border
    np.testing.assert_allclose(a[ring], 30.0, atol=0.5)


def test_hillshade_faces_the_sun_from_the_north_west():
    east, north = _grid()
    flat = np.zeros_like(east)
    toward_nw = -0.5 * east + 0.5 * north  # rises to the NW: faces the sun
    away = -toward_nw
    hs = {
        k: hillshade(da.from_array(z, chunks=32), 10, 10).compute()[10:-10, 10:-10]
        for k, z in {"flat": flat, "nw": toward_nw, "se": away}.items()
    }
    # A flat surface under a 45-degree sun: cos(45) of full light.
    assert abs(float(hs["flat"].mean()) - (1 + 254 * np.sin(np.radians(45)))) < 1
    # Rising towards the NW means the slope faces SE, away from the sun: darker than flat.
    assert hs["nw"].mean() < hs["flat"].mean() < hs["se"].mean()


def test_missing_dem_gives_nan_slope_and_zero_hillshade():
    z = np.full((30, 30), 50.0)
    z[10:15, 10:15] = np.nan
    s = slope_degrees(da.from_array(z, chunks=15), 10, 10).compute()
    h = hillshade(da.from_array(z, chunks=15), 10, 10).compute()
    assert np.isnan(s[12, 12]) and h[12, 12] == 0
    assert s[25, 25] == 0 and h[25, 25] > 0


def test_a_dem_read_one_pixel_wider_gives_exact_slopes_to_the_border():
    from landslide_dask.cube.terrain import padded_chunks

    east, north = _grid(n=66)
    z = 0.4 * east - 0.25 * north
    chunks = (padded_chunks(64, 20), padded_chunks(64, 20))
    assert chunks[0] == (21, 20, 20, 5)
    s = slope_degrees(da.from_array(z, chunks=chunks), 10, 10, boundary="none")[1:-1, 1:-1]
    assert s.chunks == ((20, 20, 20, 4), (20, 20, 20, 4))
    np.testing.assert_allclose(s.compute(), np.degrees(np.arctan(np.hypot(0.4, 0.25))), atol=1e-4)
