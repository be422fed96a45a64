"""The matched filter's noise covariance: the paper's analytic model and the data-based estimate."""

from __future__ import annotations

import numpy as np
import pytest

from szviewer.mf import MFSettings, matched_filter, paint_clusters
from szviewer.mf.noise import data_noise_power, model_noise_cl, model_noise_power
from szviewer.mf.profiles import beam_transfer
from szviewer.sky.bands import BANDS_GHZ, noise_sigma_uk, tsz_uk_per_y
from szviewer.sky.spectra import ARCMIN_RAD, cmb_lensed_dl, cos_taper

PIX = 0.25
DEPTH = (2.8, 2.6, 6.6)
SIG = np.array([noise_sigma_uk(b, PIX, d) for b, d in zip(BANDS_GHZ, DEPTH, strict=True)])
NOTHING = MFSettings(include_cmb=False, ksz_dl_uk2=0.0, ps_dl3000_uk2=(0.0, 0.0, 0.0), szbg_dl3000_uk2_90=0.0,
                     pixel_window=False)


def dl(ell, cl):
    return ell * (ell + 1) * cl / (2 * np.pi)


def test_white_noise_level():
    cl = model_noise_cl(np.array([100.0, 3000.0, 20000.0]), NOTHING, DEPTH)
    for i in range(3):
        np.testing.assert_allclose(cl[i, i], (DEPTH[i] * ARCMIN_RAD) ** 2, rtol=1e-12)
    assert np.all(cl[0, 1] == 0) and np.all(cl[0, 2] == 0)
    # per pixel: sigma^2 = (depth / pixel)^2
    p = model_noise_power((32, 32), PIX, NOTHING, DEPTH)
    np.testing.assert_allclose(p[1, 1], SIG[1] ** 2, rtol=1e-12)


def test_foreground_terms_match_the_paper():
    ell = np.array([3000.0])
    ps = NOTHING.replace(ps_dl3000_uk2=(2.7, 8.8, 71.0), ps_correlation=0.5)
    c = model_noise_cl(ell, ps, (0.0, 0.0, 0.0))
    np.testing.assert_allclose([dl(ell, c[i, i])[0] for i in range(3)], [2.7, 8.8, 71.0], rtol=1e-10)
    assert dl(ell, c[0, 2])[0] == pytest.approx(0.5 * np.sqrt(2.7 * 71.0))
    # flat in C_ell: same C at another ell
    np.testing.assert_allclose(model_noise_cl(np.array([500.0]), ps, (0.0, 0.0, 0.0))[:, :, 0], c[:, :, 0])

    sz = NOTHING.replace(szbg_dl3000_uk2_90=3.6)
    c = model_noise_cl(np.array([1000.0, 3000.0]), sz, (0.0, 0.0, 0.0))
    f = np.array([float(tsz_uk_per_y(b)) for b in BANDS_GHZ])
    np.testing.assert_allclose(dl(np.array([1000.0, 3000.0]), c[0, 0]), 3.6)  # flat in D_ell
    assert dl(3000.0, c[1, 1][1]) == pytest.approx(3.6 * (f[1] / f[0]) ** 2)  # about 1.35 uK^2 at 148 GHz
    assert dl(3000.0, c[0, 2][1]) < 0  # 219 GHz is above the tSZ null: anti-correlated with 90 GHz

    cmb = NOTHING.replace(include_cmb=True, ksz_dl_uk2=2.0)
    c = model_noise_cl(ell, cmb, (0.0, 0.0, 0.0))
    expected = cmb_lensed_dl(ell)[0] + 2.0
    for i in range(3):
        for j in range(3):  # identical and fully correlated in every band
            assert dl(ell, c[i, j])[0] == pytest.approx(expected)


def test_beams_apply_to_sky_not_to_instrument_noise():
    beams = (1.7, 1.2, 1.0)
    s = MFSettings(beam_fwhm_arcmin=beams, pixel_window=False)
    ell = np.array([5000.0])
    b = np.array([beam_transfer(ell, fw)[0] for fw in beams])
    beamed = model_noise_power((64, 64), PIX, s, DEPTH)
    ell_grid_ = np.fft.fftfreq(64, d=PIX * ARCMIN_RAD) * 2 * np.pi
    # mode (ky = 0, kx = k) with |ell| close to 5000
    kx = int(np.argmin(np.abs(ell_grid_[:33] - 5000.0)))
    ell_k = np.array([abs(ell_grid_[kx])])
    b = np.array([beam_transfer(ell_k, fw)[0] for fw in beams])
    sky = model_noise_cl(ell_k, s, (0.0, 0.0, 0.0))[:, :, 0] / (PIX * ARCMIN_RAD) ** 2
    expected = sky * np.outer(b, b) + np.diag(SIG**2)
    np.testing.assert_allclose(beamed[:, :, 0, kx], expected, rtol=1e-10)


def test_model_is_positive_definite_with_full_correlations():
    s = MFSettings(ps_correlation=1.0)
    p = model_noise_power((128, 128), PIX, s, DEPTH)
    ev = np.linalg.eigvalsh(np.moveaxis(p, (0, 1), (-2, -1)))
    assert ev.min() > 0


def test_data_estimate_of_white_noise():
    rng = np.random.default_rng(21)
    shape = (256, 256)
    maps = rng.standard_normal((3, *shape)) * SIG[:, None, None]
    w = cos_taper(shape, 32)
    p = data_noise_power(maps, PIX, weight=w, smooth_ell=1000.0)  # 3 Fourier pixels: ~110 modes
    for i in range(3):
        # the apodisation is normalised out: per-pixel variance recovered
        assert np.mean(p[i, i]) == pytest.approx(SIG[i] ** 2, rel=0.02)
        assert np.std(p[i, i]) / np.mean(p[i, i]) < 0.15  # smoothed (unsmoothed: 1, exponential)
    assert abs(np.mean(p[0, 1])) < 0.02 * SIG[0] * SIG[1]  # independent bands


def test_model_and_data_noise_agree_on_white_noise():
    rng = np.random.default_rng(22)
    shape = (512, 512)
    xs = np.array([100.0, 300.0, 420.0, 180.0, 40.0, 450.0])
    ys = np.array([120.0, 90.0, 330.0, 400.0, 260.0, 200.0])
    settings = NOTHING.replace(theta_c_arcmin=(0.5, 1.0, 2.0))
    sig_model = matched_filter(np.zeros((3, *shape)), PIX, settings, DEPTH)[1]
    y0 = 8.0 * sig_model[1]
    clusters = paint_clusters(shape, PIX, xs, ys, np.full(len(xs), y0), np.full(len(xs), 1.0), BANDS_GHZ,
                              (0, 0, 0), with_pixel_window=False)
    data = settings.replace(noise_mode="data")
    yi, xi = ys.astype(int), xs.astype(int)
    ratios, sig_ratios, raw_ratios = [], [], []
    for _ in range(3):
        maps = clusters + rng.standard_normal((3, *shape)) * SIG[:, None, None]
        _, sig_m, snr_m = matched_filter(maps, PIX, settings, DEPTH)
        _, sig_d, snr_d = matched_filter(maps, PIX, data)
        ratios.append(snr_d[1, yi, xi] / snr_m[1, yi, xi])
        sig_ratios.append(sig_d / sig_m)
        # without removing the bright clusters first, their own power lowers their S/N
        snr_raw = matched_filter(maps, PIX, data.replace(data_noise_clean_snr=0.0))[2]
        raw_ratios.append(snr_raw[1, yi, xi] / snr_m[1, yi, xi])
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.03)
    sig_ratio = np.mean(sig_ratios, axis=0)
    assert sig_ratio[1] == pytest.approx(1.0, abs=0.03)  # the clusters' scale
    # other scales: residuals of the (1') clusters after cleaning leave a few % more power at large scales
    np.testing.assert_allclose(sig_ratio, 1.0, atol=0.05)
    assert np.mean(raw_ratios) < 0.95
    # pure noise: the data-based S/N maps have unit variance too
    var = np.mean([np.mean(matched_filter(rng.standard_normal((3, *shape)) * SIG[:, None, None], PIX,
                                          data)[2] ** 2, axis=(1, 2)) for _ in range(3)], axis=0)
    np.testing.assert_allclose(np.sqrt(var), 1.0, atol=0.05)


def test_solve_noise_matches_linalg():
    from szviewer.mf.noise import solve_noise

    rng = np.random.default_rng(23)
    a = rng.standard_normal((5, 7, 3, 3))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(3)
    cov[0, 0] = np.diag([1e8, 1e2, 1e4]) + 1e8 * np.ones((3, 3)) * 0.999  # CMB-like: huge and correlated
    rhs = rng.standard_normal((5, 7, 3))
    expected = np.linalg.solve(cov, rhs[..., None])[..., 0]
    power = np.moveaxis(cov, (-2, -1), (0, 1))
    got = solve_noise(power, np.moveaxis(rhs, -1, 0))
    np.testing.assert_allclose(np.moveaxis(got, 0, -1), expected, rtol=1e-8, atol=1e-14)
    # one and two bands go through the general path
    got2 = solve_noise(power[:2, :2], np.moveaxis(rhs, -1, 0)[:2])
    np.testing.assert_allclose(np.moveaxis(got2, 0, -1),
                               np.linalg.solve(cov[..., :2, :2], rhs[..., :2, None])[..., 0], rtol=1e-8)


@pytest.mark.parametrize("shape", [(64, 64), (63, 65), (50, 81)])
def test_half_plane_smoothing_equals_full_plane(shape):
    from scipy import ndimage

    from szviewer.mf.noise import _smooth_half_plane

    m = np.random.default_rng(24).standard_normal(shape)
    full = np.abs(np.fft.fft2(m)) ** 2
    ref = ndimage.gaussian_filter(full, (2.5, 3.0), mode="wrap", truncate=3.0)[:, :shape[1] // 2 + 1]
    got = _smooth_half_plane(np.abs(np.fft.rfft2(m)) ** 2, shape[1], 2.5, 3.0)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
