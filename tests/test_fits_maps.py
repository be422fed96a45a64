"""Flat-sky FITS maps (CAR, TAN): checks, point-source position and orientation in the cutouts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from szviewer.errors import InputError
from szviewer.sky.fits_maps import open_fits_maps
from szviewer.sky.geometry import pixel_offsets, separation_arcmin, tangent_to_vec, vec_to_radec

PIX_DEG = 0.25 / 60.0


def make_wcs(proj="TAN", crval=(30.0, 30.0), shape=(200, 240), cdelt1=-PIX_DEG, cdelt2=PIX_DEG,
             frame=("RA", "DEC")):
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = [f"{frame[0]:-<5}{proj}", f"{frame[1]:-<5}{proj}"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = [cdelt1, cdelt2]
    return w


def write_map(path, data, w, bunit="uK_CMB", extra_axes=0):
    h = w.to_header()
    if bunit is not None:
        h["BUNIT"] = bunit
    arr = np.asarray(data, dtype=np.float32)
    arr = arr.reshape((1,) * extra_axes + arr.shape)
    fits.PrimaryHDU(arr, header=h).writeto(path, overwrite=True)
    return path


def point_source_map(w, shape, ra_s, dec_s, amp=100.0):
    data = np.zeros(shape, dtype=np.float32)
    x, y = w.all_world2pix(ra_s, dec_s, 0)
    data[int(np.round(y)), int(np.round(x))] = amp
    return data


def three(tmp_path, data, w, prefix="m", **kw):
    return {b: write_map(tmp_path / f"{prefix}_{b}.fits", data * (i + 1), w, **kw)
            for i, b in enumerate((90, 148, 219))}


def hot_pixel_sky_position(img, ra_c, dec_c):
    i, j = np.unravel_index(np.argmax(img), img.shape)
    xi, eta = pixel_offsets(img.shape[0], 0.25)
    ra, dec = vec_to_radec(tangent_to_vec(ra_c, dec_c, xi[i, j], eta[i, j])[0])
    return i, j, float(ra), float(dec)


@pytest.mark.parametrize("proj,crval", [("TAN", (30.0, 30.0)), ("CAR", (150.0, 0.0)), ("TAN", (0.5, -45.0))])
def test_point_source_lands_at_right_pixel(tmp_path, proj, crval):
    shape = (200, 240)
    w = make_wcs(proj, crval, shape)
    ra_c, dec_c = crval[0] + 0.05, crval[1] + 0.03
    cosd = np.cos(np.deg2rad(dec_c))
    ra_s, dec_s = ra_c + (1.0 / 60) / cosd, dec_c + 0.5 / 60  # 1' east, 0.5' north
    sky = open_fits_maps(three(tmp_path, point_source_map(w, shape, ra_s, dec_s), w))
    assert sky.shape == shape and sky.bands == (90, 148, 219) and sky.components == ("skymap",)
    assert sky.projection == proj
    out = sky.cut([ra_c, ra_c], [dec_c, dec_c])
    assert list(out) == ["skymap"]
    cube = out["skymap"]
    assert cube.shape == (2, 3, 32, 32) and cube.dtype == np.float32
    np.testing.assert_allclose(cube[0].max(axis=(1, 2)), [100.0, 200.0, 300.0])
    i, j, ra, dec = hot_pixel_sky_position(cube[0, 1], ra_c, dec_c)
    assert j < 15.5 - 2 and i > 15.5  # east is left (low column), north is up (high row)
    assert abs(j - 11.5) <= 1 and abs(i - 17.5) <= 1
    assert separation_arcmin(ra, dec, ra_s, dec_s) < 0.25  # within a pixel of the true position


def test_flipped_axes_give_same_cutouts(tmp_path):
    shape = (120, 160)
    w = make_wcs("TAN", (60.0, 20.0), shape)
    rng = np.random.default_rng(3)
    data = rng.normal(size=shape).astype(np.float32)
    ny, nx = shape
    wx = make_wcs("TAN", (60.0, 20.0), shape, cdelt1=+PIX_DEG)
    wy = make_wcs("TAN", (60.0, 20.0), shape, cdelt2=-PIX_DEG)
    a = open_fits_maps(three(tmp_path, data, w, prefix="a"))
    b = open_fits_maps(three(tmp_path, data[:, ::-1], wx, prefix="b"))
    c = open_fits_maps(three(tmp_path, data[::-1, :], wy, prefix="c"))
    ra = 60.0 + np.array([0.013, -0.05, 0.07])
    dec = 20.0 + np.array([0.021, -0.03, 0.05])
    ca, cb, cc = (s.cut(ra, dec)["skymap"] for s in (a, b, c))
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ca, cc)
    assert nx == 160


def test_units_and_degenerate_axes(tmp_path):
    shape = (80, 80)
    w = make_wcs("CAR", (10.0, 0.0), shape)
    ones = np.ones(shape, np.float32)
    k = {b: write_map(tmp_path / f"k{b}.fits", ones * 1e-6, w, bunit="K_CMB", extra_axes=2)
         for b in (90, 148, 219)}
    sky = open_fits_maps(k)
    np.testing.assert_allclose(sky.cut(10.0, 0.0)["skymap"], 1.0, rtol=1e-6)
    nounit = {b: write_map(tmp_path / f"n{b}.fits", ones, w, bunit=None) for b in (90, 148, 219)}
    with pytest.warns(UserWarning, match="assuming uK"):
        sky = open_fits_maps(nounit)
    np.testing.assert_allclose(sky.cut(10.0, 0.0)["skymap"], 1.0)
    bad = {**nounit, 148: write_map(tmp_path / "bad148.fits", ones, w, bunit="furlong")}
    with pytest.raises(InputError, match=r"bad148\.fits.*furlong"), pytest.warns(UserWarning):
        open_fits_maps(bad)
    json.dumps(sky.describe())


def test_mismatched_wcs_and_band_sets(tmp_path):
    shape = (60, 60)
    w = make_wcs("TAN", (30.0, 30.0), shape)
    w2 = make_wcs("TAN", (30.001, 30.0), shape)
    data = np.zeros(shape, np.float32)
    maps = three(tmp_path, data, w)
    maps[219] = write_map(tmp_path / "other219.fits", data, w2)
    with pytest.raises(InputError, match=r"other219\.fits.*m_90\.fits.*CRVAL"):
        open_fits_maps(maps)
    maps[219] = write_map(tmp_path / "big219.fits", np.zeros((61, 60), np.float32), w)
    with pytest.raises(InputError, match=r"big219\.fits.*m_90\.fits.*shape"):
        open_fits_maps(maps)
    two = open_fits_maps({219: maps[148], 90: maps[90]})  # any number of bands >= 1, kept in ascending order
    assert two.bands == (90, 219) and two.cut(30.0, 30.0)["skymap"].shape == (1, 2, 32, 32)
    with pytest.raises(InputError, match="no FITS map given"):
        open_fits_maps({})
    with pytest.raises(InputError, match="positive integer"):
        open_fits_maps({"f090": maps[90]})


def test_projection_frame_and_pixel_scale_checks(tmp_path):
    shape = (60, 60)
    data = np.zeros(shape, np.float32)
    sin = three(tmp_path, data, make_wcs("SIN", (30.0, 30.0), shape), prefix="sin")
    with pytest.raises(InputError, match=r"sin_90\.fits.*SIN"):
        open_fits_maps(sin)
    gal = three(tmp_path, data, make_wcs("CAR", (30.0, 30.0), shape, frame=("GLON", "GLAT")), prefix="gal")
    with pytest.raises(InputError, match=r"gal_90\.fits.*RA/Dec"):
        open_fits_maps(gal)
    coarse = open_fits_maps(three(tmp_path, data, make_wcs("TAN", (30.0, 30.0), shape, -0.5 / 60, 0.5 / 60),
                                  prefix="coarse"))
    with pytest.raises(InputError, match=r"coarse_90\.fits.*0\.25' per pixel"):
        coarse.cut(30.0, 30.0)
    assert coarse.cut(30.0, 30.0, 16, 0.5)["skymap"].shape == (1, 3, 16, 16)  # at the map's own pixel size
    ok = open_fits_maps(three(tmp_path, data, make_wcs("TAN", (30.0, 30.0), shape, -0.2502 / 60, 0.2502 / 60),
                              prefix="ok"))
    assert ok.cut(30.0, 30.0)["skymap"].shape == (1, 3, 32, 32)  # within 1%
    with pytest.raises(ValueError, match="leave the map"):
        ok.cut([30.0, 30.0], [30.0, 30.1])  # second block is off the 15' map
    with pytest.raises(ValueError, match="only 'skymap'"):
        ok.cut(30.0, 30.0, components=["tsz"])


def test_truncated_file(tmp_path):
    shape = (100, 100)
    maps = three(tmp_path, np.zeros(shape, np.float32), make_wcs("TAN", (30.0, 30.0), shape))
    with open(maps[148], "r+b") as f:
        f.truncate(os.path.getsize(maps[148]) - 5000)
    with pytest.raises(InputError, match=r"m_148\.fits.*truncated"):
        open_fits_maps(maps)


def test_nan_mask_and_footprint(tmp_path):
    shape = (120, 240)
    w = make_wcs("CAR", (0.0, 0.0), shape)  # straddles RA 0
    data = np.zeros(shape, np.float32)
    data[:20] = np.nan  # southern rows invalid
    maps = three(tmp_path, data, w)
    sky = open_fits_maps(maps)
    assert sky.nan_mask.shape == shape and sky.nan_mask[:20].all() and not sky.nan_mask[20:].any()
    ra_min, ra_max, dec_min, dec_max = sky.footprint()
    np.testing.assert_allclose([ra_min, ra_max], [360 - 120 * PIX_DEG, 360 + 120 * PIX_DEG], atol=1e-6)
    np.testing.assert_allclose([dec_min, dec_max], [-40 * PIX_DEG, 60 * PIX_DEG], atol=1e-6)
    cube = sky.cut(0.0, -34 * PIX_DEG)["skymap"]  # block overlaps the NaN rows: returned as NaN
    assert np.isnan(cube).any() and not np.isnan(cube[..., 16:, :]).any()


def test_ra_wrap_and_pickle(tmp_path):
    import pickle

    shape = (100, 100)
    w = make_wcs("CAR", (0.0, 0.0), shape)
    ra_s, dec_s = 359.99, 0.01
    sky = open_fits_maps(three(tmp_path, point_source_map(w, shape, ra_s, dec_s), w))
    a = sky.cut(359.995, 0.0)["skymap"]
    b = sky.cut(-0.005, 0.0)["skymap"]
    np.testing.assert_array_equal(a, b)
    i, j, ra, dec = hot_pixel_sky_position(a[0, 0], 359.995, 0.0)
    assert separation_arcmin(ra, dec, ra_s, dec_s) < 0.25
    clone = pickle.loads(pickle.dumps(sky))
    assert len(pickle.dumps(sky)) < 2000
    np.testing.assert_array_equal(clone.cut(359.995, 0.0)["skymap"], a)
