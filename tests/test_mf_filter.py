"""Statistical correctness of the multi-frequency matched filter (szviewer.mf.filter, noise, profiles).

Every test is seeded. Expected values come from formulas independent of the filter code where possible
(real-space matched-filter S/N for white noise; pixel-integrated real-space injection for y0).
"""

from __future__ import annotations

import numpy as np
import pytest

from szviewer.mf import MFSettings, matched_filter, paint_clusters
from szviewer.mf.filter import build_filter_bank, model_filter_bank
from szviewer.mf.noise import draw_noise, model_noise_power
from szviewer.mf.profiles import beta_profile, profile_real
from szviewer.sky.bands import BANDS_GHZ, noise_sigma_uk, tsz_uk_per_y
from szviewer.sky.spectra import cmb_lensed_dl, dl_to_cl, gaussian_field

PIX = 0.25  # arcmin
DEPTH = (2.8, 2.6, 6.6)  # uK-arcmin, paper section 1.1
SIG = np.array([noise_sigma_uk(b, PIX, d) for b, d in zip(BANDS_GHZ, DEPTH, strict=True)])  # uK per pixel
F = np.array([float(tsz_uk_per_y(b)) for b in BANDS_GHZ])  # uK per unit y
#: white noise and lensed CMB only, no pixel window: the test maps are made exactly so
CMB_WHITE = MFSettings(ksz_dl_uk2=0.0, ps_dl3000_uk2=(0.0, 0.0, 0.0), szbg_dl3000_uk2_90=0.0,
                       pixel_window=False)
WHITE = CMB_WHITE.replace(include_cmb=False)


def white_power(shape):
    """Diagonal white covariance written out by hand (independent of noise.py), uK^2 per pixel."""
    p = np.zeros((3, 3, shape[0], shape[1] // 2 + 1))
    for i in range(3):
        p[i, i] = SIG[i] ** 2
    return p


def white_maps(rng, shape):
    return rng.standard_normal((3, *shape)) * SIG[:, None, None]


def cmb_white_maps(rng, shape):
    cmb = gaussian_field(rng, shape, PIX, lambda ell: dl_to_cl(ell, cmb_lensed_dl(ell)))
    return white_maps(rng, shape) + cmb[None]


def grid_positions(shape, step):
    """Cluster centres on a grid, integer pixels, far enough apart that truncated profiles do not overlap,
    and a checkerboard of signs: the filter drops the DC mode, so many clusters of one sign in one small
    map would bias each other low by their summed mean (a few % each); with alternating signs it vanishes."""
    ys, xs = np.meshgrid(np.arange(step // 2, shape[0], step), np.arange(step // 2, shape[1], step),
                         indexing="ij")
    sign = np.where((np.arange(ys.size) + (ys.ravel() // step)) % 2 == 0, 1.0, -1.0)
    return xs.ravel(), ys.ravel(), sign


def analytic_white_snr(y0, theta_c, shape):
    """S/N of an optimally filtered cluster in white noise, from real space:
    y0 sqrt(sum_i sum_x (f_i t)^2 / s_i^2), with the DC mode removed as the filter does
    (sum t^2 - (sum t)^2 / N_pix)."""
    t = profile_real(shape, PIX, theta_c)
    energy = np.sum(t**2) - np.sum(t) ** 2 / t.size
    return y0 * np.sqrt(energy * np.sum(F**2 / SIG**2))


def test_sigma_matches_real_space_formula_in_white_noise():
    shape = (256, 256)
    settings = WHITE.replace(theta_c_arcmin=(0.5, 1.0, 2.0))
    bank = build_filter_bank(shape, PIX, settings, white_power(shape))
    for s, tc in enumerate(settings.theta_c_arcmin):
        expected_sigma = 1.0 / analytic_white_snr(1.0, tc, shape)
        assert bank.sigma[s] == pytest.approx(expected_sigma, rel=1e-6)
    # and the model noise with the CMB switched off is the same white covariance
    model = model_filter_bank(shape, PIX, settings, DEPTH)
    np.testing.assert_allclose(model.sigma, bank.sigma, rtol=1e-6)


@pytest.mark.parametrize("theta_c", [0.5, 1.5])
def test_injected_clusters_white_noise_snr_y0_unbiased(theta_c):
    rng = np.random.default_rng(11)
    shape = (512, 512)
    settings = WHITE.replace(theta_c_arcmin=(theta_c,))
    xs, ys, sign = grid_positions(shape, 64)  # 64 clusters 16' apart (profiles truncated at 5 theta_c)
    expected_snr = 8.0
    y0 = expected_snr / analytic_white_snr(1.0, theta_c, shape)
    signal = paint_clusters(shape, PIX, xs, ys, y0 * sign, np.full(len(xs), theta_c), BANDS_GHZ,
                            (0.0, 0.0, 0.0), with_pixel_window=False)
    snr_true, y0_true = [], []
    for _ in range(4):
        y0_map, sigma, snr = matched_filter(signal + white_maps(rng, shape), PIX, settings,
                                            noise_power=white_power(shape))
        snr_true.append(sign * snr[0, ys, xs])
        y0_true.append(sign * y0_map[0, ys, xs])
    snr_true = np.concatenate(snr_true)
    y0_true = np.concatenate(y0_true)
    n = len(snr_true)  # 256 measurements
    assert np.mean(snr_true) == pytest.approx(expected_snr, rel=0.05)
    assert abs(np.mean(snr_true) - expected_snr) < 4.0 / np.sqrt(n)  # tighter: 4 standard errors
    # y0 unbiased within its error, and its scatter is the analytic sigma
    assert abs(np.mean(y0_true) - y0) < 4.0 * sigma[0] / np.sqrt(n)
    assert np.std(y0_true) / sigma[0] == pytest.approx(1.0, abs=0.15)


def test_injected_clusters_cmb_and_white_noise():
    rng = np.random.default_rng(12)
    shape = (512, 512)
    theta_c = 1.0
    settings = CMB_WHITE.replace(theta_c_arcmin=(0.5, theta_c, 2.0))
    xs, ys, sign = grid_positions(shape, 64)
    bank = model_filter_bank(shape, PIX, settings, DEPTH)
    y0 = 8.0 * bank.sigma[1]
    signal = paint_clusters(shape, PIX, xs, ys, y0 * sign, np.full(len(xs), theta_c), BANDS_GHZ,
                            (0.0, 0.0, 0.0), with_pixel_window=False)
    snr_true, y0_true, noise_snr = [], [], []
    for _ in range(4):
        noise = cmb_white_maps(rng, shape)
        y0_map, sigma, snr = bank.apply(signal + noise)
        snr_true.append(sign * snr[1, ys, xs])
        y0_true.append(sign * y0_map[1, ys, xs])
        noise_snr.append(bank.apply(noise)[2])
    snr_true = np.concatenate(snr_true)
    y0_true = np.concatenate(y0_true)
    n = len(snr_true)
    assert np.mean(snr_true) == pytest.approx(8.0, rel=0.05)
    assert abs(np.mean(y0_true) - y0) < 4.0 * sigma[1] / np.sqrt(n)
    # the CMB is there and matters: without the CMB in the noise model the S/N would be overestimated
    white_bank = model_filter_bank(shape, PIX, WHITE.replace(theta_c_arcmin=(0.5, theta_c, 2.0)), DEPTH)
    assert white_bank.sigma[2] < 0.8 * bank.sigma[2]
    # pure-noise S/N maps have unit variance at every scale
    noise_snr = np.stack(noise_snr)
    for s in range(3):
        assert np.std(noise_snr[:, s]) == pytest.approx(1.0, rel=0.05)


def test_pure_noise_snr_unit_variance_white_and_full_model():
    rng = np.random.default_rng(13)
    shape = (512, 512)
    # white noise, all 12 scales
    stds = np.std(np.stack([matched_filter(white_maps(rng, shape), PIX, WHITE, DEPTH)[2] for _ in range(3)]),
                  axis=(0, 2, 3))
    np.testing.assert_allclose(stds, 1.0, atol=0.05)
    # the paper's full model (CMB, kSZ, correlated point sources and SZ background, white noise, pixel
    # window), realised with its own cross-band correlations
    settings = MFSettings(theta_c_arcmin=(0.25, 1.0, 3.0))
    power = model_noise_power(shape, PIX, settings, DEPTH)
    bank = build_filter_bank(shape, PIX, settings, power)
    # (the 3' filter is dominated by a few CMB modes: one 2 deg map measures its variance to only ~7%)
    var = np.mean([np.mean(bank.apply(draw_noise(rng, power, shape))[2] ** 2, axis=(1, 2)) for _ in range(8)],
                  axis=0)
    np.testing.assert_allclose(np.sqrt(var), 1.0, atol=0.05)
    # the filter really uses the cross-band covariance: ignoring it gives a different S/N normalisation
    diag = power * np.eye(3)[:, :, None, None]
    assert not np.allclose(build_filter_bank(shape, PIX, settings, diag).sigma, bank.sigma, rtol=0.05)


def test_real_space_injection_recovers_y0():
    """A cluster integrated over its pixels in real space (independent of the Fourier template) is recovered
    with the pixel window on, to 2%, at the true scale."""
    shape = (256, 256)
    ss = 8
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    for theta_c in (0.5, 1.0, 2.0):
        prof = np.zeros(shape)
        for oy in sub:
            for ox in sub:
                prof += beta_profile(np.hypot(yy + oy - 128, xx + ox - 128) * PIX, theta_c)
        prof /= ss * ss
        y0 = 5e-5
        maps = y0 * F[:, None, None] * prof[None]
        y0_map, _, _ = matched_filter(maps, PIX, WHITE.replace(theta_c_arcmin=(theta_c,), pixel_window=True),
                                      DEPTH)
        assert y0_map[0, 128, 128] == pytest.approx(y0, rel=0.02)
        assert np.unravel_index(np.argmax(y0_map[0]), shape) == (128, 128)


def test_beam_is_accounted_for():
    """With a beam in the settings a beamed cluster is recovered unbiased; ignoring the beam biases y0 low."""
    shape = (256, 256)
    beams = (1.7, 1.2, 1.0)
    settings = WHITE.replace(theta_c_arcmin=(1.0,), beam_fwhm_arcmin=beams)
    y0 = 5e-5
    maps = paint_clusters(shape, PIX, [100.0], [120.0], [y0], [1.0], BANDS_GHZ, beams,
                          with_pixel_window=False)
    assert matched_filter(maps, PIX, settings, DEPTH)[0][0, 120, 100] == pytest.approx(y0, rel=1e-3)
    no_beam = settings.replace(beam_fwhm_arcmin=(0.0, 0.0, 0.0))
    assert matched_filter(maps, PIX, no_beam, DEPTH)[0][0, 120, 100] < 0.9 * y0
