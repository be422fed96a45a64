"""Catalog building (szviewer.mf.catalog), settings, and the run_mf entry point end to end."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from szviewer.mf import Cancelled, MFSettings, jname, paint_clusters, pixel_to_radec, run_mf
from szviewer.mf.catalog import COLUMNS
from szviewer.mf.filter import model_filter_bank
from szviewer.sky.bands import BANDS_GHZ, noise_sigma_uk
from szviewer.sky.spectra import cmb_lensed_dl, dl_to_cl, gaussian_field

PIX = 0.25
SIG = np.array([noise_sigma_uk(b, PIX) for b in BANDS_GHZ])


def tan_wcs(shape, ra0=30.0, dec0=10.0):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-PIX / 60, PIX / 60]
    return w


def car_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    w.wcs.crval = [0.0, 0.0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-PIX / 60, PIX / 60]
    return w


def test_jname():
    assert jname(3.1437, 1.7292) == "SZ J001234.4+014345"
    assert jname(0.0, -0.5) == "SZ J000000.0-003000"
    assert jname(359.99999, 89.99999) == "SZ J235959.9+895959"  # truncated, never rounded up to 24h
    assert jname(180.0, -45.25, prefix="MF") == "MF J120000.0-451500"


def test_pixel_to_radec_tan_and_car():
    w = tan_wcs((100, 100))
    ra, dec = pixel_to_radec(w, np.array([49.5]), np.array([49.5]))  # the reference pixel
    assert ra[0] == pytest.approx(30.0) and dec[0] == pytest.approx(10.0)
    ra, dec = pixel_to_radec(w, np.array([49.5 - 4 * 60]), np.array([49.5]))  # 1 deg toward +x is -RA
    assert ra[0] == pytest.approx(30.0 + 1.0 / np.cos(np.radians(10.0)), abs=2e-3)
    ra, dec = pixel_to_radec(car_wcs(), np.array([-240.0, 0.0]), np.array([240.0, 0.0]))
    np.testing.assert_allclose(ra, [1.0, 0.0], atol=1e-9)  # RA wraps into [0, 360)
    np.testing.assert_allclose(dec, [1.0, 0.0], atol=1e-9)


def test_settings_defaults_roundtrip_and_validation():
    s = MFSettings()
    assert s.theta_c_arcmin == tuple(0.25 * k for k in range(1, 13))
    assert s.beta == 1.0 and s.snr_threshold == 3.0 and s.point_source_flux_cut_mjy == 2.0
    assert s.beam_fwhm_arcmin == (0.0, 0.0, 0.0) and s.noise_mode == "model"
    assert MFSettings.from_dict(s.to_dict()) == s
    assert hash(s) == hash(MFSettings.from_dict(s.to_dict()))
    for bad in (dict(noise_mode="nope"), dict(beam_fwhm_arcmin=(1.0,)), dict(theta_c_arcmin=()),
                dict(snr_threshold=0.0), dict(ps_correlation=2.0), dict(tile_margin_arcmin=1.0)):
        with pytest.raises(ValueError):
            MFSettings(**bad)


def test_run_mf_end_to_end_positions_catalog_and_callbacks():
    rng = np.random.default_rng(51)
    shape = (512, 512)
    settings = MFSettings(tile_deg=1.2)
    cmb = gaussian_field(rng, shape, PIX, lambda ell: dl_to_cl(ell, cmb_lensed_dl(ell)))
    maps = (rng.standard_normal((3, *shape)) * SIG[:, None, None] + cmb[None]).astype(np.float32)
    gy, gx = np.meshgrid(np.arange(70.0, 450, 80), np.arange(70.0, 450, 80), indexing="ij")
    xs = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    ys = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
    tc = rng.choice([0.5, 1.0], xs.size)
    bank = model_filter_bank((720, 720), PIX, settings, (2.8, 2.6, 6.6))
    y0 = 10.0 * bank.sigma[[settings.theta_c_arcmin.index(t) for t in tc]]
    maps += paint_clusters(shape, PIX, xs, ys, y0, tc, BANDS_GHZ, (0, 0, 0)).astype(np.float32)
    wcs = tan_wcs(shape)
    calls = []
    cat = run_mf(maps, wcs, PIX, settings, progress=lambda d, t: calls.append((d, t)))

    assert cat.colnames == list(COLUMNS)
    assert calls[0] == (0, 4) and calls[-1] == (4, 4) and len(calls) == 5
    assert cat.meta["mf_settings"] == settings.to_dict() and cat.meta["pixel_arcmin"] == PIX
    assert np.all(np.diff(cat["snr"]) <= 0)
    d, i = cKDTree(np.c_[cat["x"], cat["y"]]).query(np.c_[xs, ys])
    # every injected cluster found once, within 0.3'; S/N close to the injected 10; no bias in position
    assert np.all(d * PIX < 0.3)
    assert len(set(i)) == len(xs)
    assert np.mean(cat["snr"][i]) == pytest.approx(10.0, rel=0.05)
    assert np.abs(np.mean(cat["x"][i] - xs)) * PIX < 0.05 and np.abs(np.mean(cat["y"][i] - ys)) * PIX < 0.05
    assert np.mean(cat["y0"][i] / y0) == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(cat["y0"] / cat["y0_err"], cat["snr"], rtol=1e-5)
    # the best core radius is the injected one or a neighbour
    assert np.mean(np.abs(cat["theta_c_arcmin"][i] - tc) <= 0.25) > 0.8
    # sky positions and names from the WCS
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    sep = np.hypot((cat["ra"][i] - ra) * np.cos(np.radians(dec)), cat["dec"][i] - dec) * 60
    assert np.all(sep < 0.3)
    assert cat["name"][0] == jname(cat["ra"][0], cat["dec"][0]) and cat["name"][0].startswith("SZ J0")


def test_run_mf_cancel_and_empty():
    maps = np.zeros((3, 200, 200), dtype=np.float32)
    settings = MFSettings(tile_deg=0.25, theta_c_arcmin=(1.0,))
    with pytest.raises(Cancelled):
        run_mf(maps, None, PIX, settings, cancel=lambda: True)
    seen = []

    def cancel_after_two():
        seen.append(1)
        return len(seen) > 2

    with pytest.raises(Cancelled):
        run_mf(maps, None, PIX, settings, cancel=cancel_after_two)
    cat = run_mf(maps, None, PIX, settings)  # no signal, no noise: nothing, but a well-formed table
    assert len(cat) == 0 and cat.colnames == list(COLUMNS)
    with pytest.raises(ValueError):
        run_mf(maps[:2], None, PIX, settings)


def test_cancelled_is_the_project_error():
    from szviewer.errors import Cancelled as ProjectCancelled

    assert issubclass(Cancelled, ProjectCancelled)
