"""Cluster templates (szviewer.mf.profiles): beta model, its FFT on the grid, beam and pixel window."""

from __future__ import annotations

import numpy as np
import pytest

from szviewer.mf.profiles import (
    beam_transfer,
    beta_profile,
    paint_clusters,
    pixel_window,
    profile_fourier,
    profile_real,
    template_fourier,
)
from szviewer.sky.bands import BANDS_GHZ, tsz_uk_per_y

PIX = 0.25


def test_beta_one_profile():
    theta = np.array([0.0, 1.0, 2.0, 4.9, 5.1])
    np.testing.assert_allclose(beta_profile(theta, 1.0), [1.0, 0.5, 0.2, 1 / (1 + 4.9**2), 0.0])
    # general beta: (1 + x^2)^((1 - 3 beta) / 2)
    assert beta_profile(1.0, 1.0, beta=2.0 / 3.0) == pytest.approx(2 ** -0.5)
    assert beta_profile(9.0, 1.0, truncate=10.0) > 0


def test_profile_grid_is_centred_periodic_and_its_fft_real():
    shape = (64, 48)
    p = profile_real(shape, PIX, 1.0)
    assert p[0, 0] == 1.0
    assert p[0, 4] == pytest.approx(0.5)  # 4 pixels = 1' = theta_c
    assert p[0, -4] == p[0, 4] and p[-4, 0] == p[4, 0]  # wrapped around the origin
    fk = profile_fourier(shape, PIX, 1.0)
    assert fk.shape == (64, 25)
    np.testing.assert_allclose(fk, np.fft.rfft2(p).real, atol=1e-10)
    assert np.abs(np.fft.rfft2(p).imag).max() < 1e-9
    assert fk[0, 0] == pytest.approx(p.sum())


def test_beam_and_pixel_window():
    ell = np.array([0.0, 1000.0, 5000.0])
    assert beam_transfer(ell, 0.0).tolist() == [1.0, 1.0, 1.0]
    sig = 1.2 / np.sqrt(8 * np.log(2)) * np.pi / (180 * 60)
    np.testing.assert_allclose(beam_transfer(ell, 1.2), np.exp(-0.5 * ell * (ell + 1) * sig**2))
    w = pixel_window((8, 8))
    assert w[0, 0] == 1.0
    assert w[0, 4] == pytest.approx(2 / np.pi)  # sinc(1/2) at Nyquist
    assert w[4, 4] == pytest.approx((2 / np.pi) ** 2)


def test_template_and_painted_cluster_amplitude():
    shape = (64, 64)
    tau = template_fourier(shape, PIX, 1.0, BANDS_GHZ, (0, 0, 0), with_pixel_window=False)
    for i, b in enumerate(BANDS_GHZ):
        np.testing.assert_allclose(tau[i], tsz_uk_per_y(b) * profile_fourier(shape, PIX, 1.0))
    m = paint_clusters(shape, PIX, [20.0], [30.0], [1e-4], [1.0], BANDS_GHZ, (0, 0, 0),
                       with_pixel_window=False)
    # at an integer position the painted cluster is the sampled profile: y0 f_nu at the centre
    np.testing.assert_allclose(m[:, 30, 20], 1e-4 * np.array([tsz_uk_per_y(b) for b in BANDS_GHZ]), rtol=1e-9)
    assert m[0, 30, 24] == pytest.approx(0.5e-4 * tsz_uk_per_y(90), rel=1e-9)
    # a fractional position shifts the cluster
    m2 = paint_clusters(shape, PIX, [20.5], [30.0], [1e-4], [1.0], BANDS_GHZ, (0, 0, 0))
    assert m2[0, 30, 20] == pytest.approx(m2[0, 30, 21], rel=1e-6)
