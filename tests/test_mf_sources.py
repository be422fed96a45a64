"""Point-source subtraction and flags (szviewer.mf.sources) and their use in run_mf."""

from __future__ import annotations

import numpy as np
import pytest

from szviewer.mf import FLAG_NEAR_SOURCE, MFSettings, PointSources, paint_clusters, run_mf
from szviewer.mf.filter import model_filter_bank
from szviewer.mf.profiles import beam_transfer
from szviewer.mf.sources import near_sources, paint_sources, subtract_sources, uk_per_mjy_pixel
from szviewer.sky.bands import BANDS_GHZ, noise_sigma_uk
from szviewer.sky.spectra import ell_grid

PIX = 0.25
SIG = np.array([noise_sigma_uk(b, PIX) for b in BANDS_GHZ])


def test_one_mjy_in_one_pixel():
    # SCIENCE.md section 6: 933, 481, 391 uK per mJy in a 0.25' pixel at 90/148/219 GHz
    np.testing.assert_allclose([uk_per_mjy_pixel(b, PIX) for b in BANDS_GHZ], [933, 481, 391], rtol=2e-3)


def test_paint_without_beam_is_a_delta():
    src = PointSources([10.4, 20.6], [5.0, 7.2], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = paint_sources((16, 32), PIX, src, BANDS_GHZ, (0, 0, 0))
    assert m[0, 5, 10] == pytest.approx(1.0 * uk_per_mjy_pixel(90, PIX), rel=1e-6)
    assert m[2, 7, 21] == pytest.approx(6.0 * uk_per_mjy_pixel(219, PIX), rel=1e-6)
    assert np.count_nonzero(m[1]) == 2


def test_paint_with_beam_matches_fourier_convolution():
    shape = (64, 64)
    fwhm = (1.7, 1.2, 1.0)
    src = PointSources([30.0], [33.0], [[2.0, 3.0, 4.0]])
    m = paint_sources(shape, PIX, src, BANDS_GHZ, fwhm)
    delta = paint_sources(shape, PIX, src, BANDS_GHZ, (0, 0, 0))
    ell = ell_grid(*shape, PIX)
    for i, fw in enumerate(fwhm):
        ref = np.fft.irfft2(np.fft.rfft2(delta[i]) * beam_transfer(ell, fw), s=shape)
        np.testing.assert_allclose(m[i], ref, atol=2e-3 * ref.max())
        assert m[i].sum() == pytest.approx(delta[i].sum(), rel=1e-5)  # flux conserved
    # sub-pixel positions: the beam's centroid follows the source
    src2 = PointSources([30.3], [33.0], [[2.0, 3.0, 4.0]])
    m2 = paint_sources(shape, PIX, src2, BANDS_GHZ, fwhm)[0]
    xx = np.arange(shape[1])
    assert np.sum(m2 * xx[None]) / m2.sum() == pytest.approx(30.3, abs=1e-3)


def test_subtract_only_sources_above_the_cut():
    shape = (40, 40)
    src = PointSources([10.0, 30.0], [10.0, 30.0], [[1.0, 1.5, 1.9], [1.0, 3.0, 10.0]])
    maps = paint_sources(shape, PIX, src, BANDS_GHZ, (1.2, 1.2, 1.2))
    out = subtract_sources(maps, PIX, src, BANDS_GHZ, (1.2, 1.2, 1.2), flux_cut_mjy=2.0)
    assert np.abs(out[:, 25:35, 25:35]).max() < 1e-3  # the bright one is gone in every band
    np.testing.assert_allclose(out[:, 5:15, 5:15], maps[:, 5:15, 5:15])  # the faint one stays
    # origin: the same sources subtracted from a cut-out
    cut = subtract_sources(maps[:, 20:, 20:], PIX, src, BANDS_GHZ, (1.2, 1.2, 1.2), origin=(20, 20))
    assert np.abs(cut[:, 5:15, 5:15]).max() < 1e-3


def test_near_sources():
    src = PointSources([10.0, 50.0], [10.0, 50.0], [[5.0, 5.0, 5.0], [1.0, 1.0, 1.0]])
    flags = near_sources([12.0, 50.0, 30.0], [10.0, 51.0, 30.0], src, radius_pix=8.0, min_flux_mjy=2.0)
    assert flags.tolist() == [True, False, False]  # the second source is too faint to flag
    assert near_sources([1.0], [1.0], None, 8.0).tolist() == [False]


def test_bright_sources_make_false_detections_unless_subtracted():
    rng = np.random.default_rng(41)
    shape = (400, 400)
    maps = (rng.standard_normal((3, *shape)) * SIG[:, None, None]).astype(np.float32)
    # a dusty source (rising with frequency) and a radio source (falling), both well above 2 mJy
    src = PointSources([100.3, 300.0], [200.0, 120.6], [[1.0, 3.0, 15.0], [20.0, 10.0, 5.0]])
    maps += paint_sources(shape, PIX, src, BANDS_GHZ, (0, 0, 0))
    settings = MFSettings(snr_threshold=5.0)
    # and a real cluster 1.5' from the dusty source
    bank = model_filter_bank((576, 576), PIX, settings, (2.8, 2.6, 6.6))
    maps += paint_clusters(shape, PIX, [106.3], [200.0], [15 * bank.sigma[3]], [1.0], BANDS_GHZ,
                           (0, 0, 0)).astype(np.float32)
    raw = run_mf(maps, None, PIX, settings)
    # spurious detections: the radio source's decrement-like core rings positive at every scale
    near_radio = np.hypot(raw["x"] - 300.0, raw["y"] - 120.6) < 12
    # (ring peaks, placed at their own sub-pixel maxima, not at the centroids of whole ring groups)
    assert near_radio.sum() >= 2 and raw["snr"][near_radio].max() > 20

    clean = run_mf(maps, None, PIX, settings, sources=src)
    assert len(clean) == 1  # only the cluster
    assert clean["x"][0] == pytest.approx(106.3, abs=1.0) and clean["y"][0] == pytest.approx(200.0, abs=1.0)
    assert clean["snr"][0] == pytest.approx(15.0, rel=0.15)
    assert clean["flags"][0] & FLAG_NEAR_SOURCE


@pytest.mark.parametrize("beams", [(0.0, 0.0, 0.0), (1.7, 1.2, 1.0)])
def test_find_sources_recovers_positions_and_fluxes(beams):
    from szviewer.mf.noise import model_noise_power
    from szviewer.mf.sources import find_sources

    rng = np.random.default_rng(42)
    shape = (300, 300)
    settings = MFSettings(beam_fwhm_arcmin=beams)
    gy, gx = np.meshgrid(np.arange(30.0, 280, 60), np.arange(30.0, 280, 60), indexing="ij")  # 15' apart
    n = gx.size
    jitter = 0.0 if beams[0] == 0 else 1.0  # without a beam a source fills one pixel: integer positions
    xs = gx.ravel() + jitter * rng.uniform(-0.5, 0.5, n)
    ys = gy.ravel() + jitter * rng.uniform(-0.5, 0.5, n)
    flux = rng.uniform(2.5, 20.0, (n, 3))
    src = PointSources(xs, ys, flux)
    maps = rng.standard_normal((3, *shape)) * SIG[:, None, None]
    maps += paint_sources(shape, PIX, src, BANDS_GHZ, beams)
    power = model_noise_power(shape, PIX, settings, (2.8, 2.6, 6.6))
    found = find_sources(maps, PIX, settings, power)
    d = np.hypot(found.x[:, None] - xs, found.y[:, None] - ys)
    j = np.argmin(d, axis=1)
    assert len(found) == n and len(set(j)) == n  # all found, nothing spurious
    assert np.all(d[np.arange(n), j] < 0.3)  # pixels
    # fluxes to 10% (0.5 mJy noise at 219 GHz), enough to subtract: what is left is below the 2 mJy cut
    np.testing.assert_allclose(found.flux_mjy, flux[j], rtol=0.1, atol=1.0)
    assert np.median(np.abs(found.flux_mjy / flux[j] - 1)) < 0.05


def test_run_mf_can_find_and_subtract_sources_itself():
    rng = np.random.default_rng(43)
    shape = (400, 400)
    maps = (rng.standard_normal((3, *shape)) * SIG[:, None, None]).astype(np.float32)
    src = PointSources([100.0, 300.0], [200.0, 121.0], [[1.0, 3.0, 15.0], [20.0, 10.0, 5.0]])
    maps += paint_sources(shape, PIX, src, BANDS_GHZ, (0, 0, 0))
    settings = MFSettings(snr_threshold=5.0, find_point_sources=True)
    bank = model_filter_bank((576, 576), PIX, settings, (2.8, 2.6, 6.6))
    maps += paint_clusters(shape, PIX, [250.0], [300.0], [15 * bank.sigma[3]], [1.0], BANDS_GHZ,
                           (0, 0, 0)).astype(np.float32)
    assert len(run_mf(maps, None, PIX, settings.replace(find_point_sources=False))) > 2
    cat = run_mf(maps, None, PIX, settings)
    assert len(cat) == 1 and cat["snr"][0] == pytest.approx(15.0, rel=0.15)
    assert cat.meta["n_sources_found"] == 2 and not cat["flags"][0] & FLAG_NEAR_SOURCE
