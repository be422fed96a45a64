"""The inspector's filtered views (szviewer.mf.views, szviewer.sky.ilc): an injected cluster shows where it is."""

from __future__ import annotations

import numpy as np
import pytest

from szviewer.mf.profiles import paint_clusters
from szviewer.mf.settings import MFSettings
from szviewer.sky.bands import tsz_uk_per_y
from szviewer.sky.ilc import ilc_weights, y_map
from szviewer.sky.spectra import cmb_lensed_dl, dl_to_cl, gaussian_field

BANDS = (90.0, 148.0, 219.0)
PIX = 0.25


def _cutout(seed: int, x: float, y: float, y0: float = 2e-4, theta_c: float = 1.0, noise_uk: float = 2.0):
    """32x32 cutout [uK]: the same CMB in every band, a beta-model cluster at pixel (x, y), white noise."""
    rng = np.random.default_rng(seed)
    cmb = gaussian_field(rng, (32, 32), PIX, lambda ell: dl_to_cl(ell, cmb_lensed_dl(ell)))
    cl = paint_clusters((32, 32), PIX, [x], [y], [y0], [theta_c], BANDS, (0.0, 0.0, 0.0))
    return (cmb[None] + cl + noise_uk * rng.standard_normal((3, 32, 32))).astype(np.float32), cl


def test_ilc_has_unit_tsz_response_and_nulls_the_cmb():
    a = tsz_uk_per_y(np.asarray(BANDS))
    cov = np.diag([4.0, 3.0, 9.0]) + 0.5
    w = ilc_weights(BANDS, cov)
    assert w @ a == pytest.approx(1.0, rel=1e-10)
    assert abs(w @ np.ones(3)) < 1e-12 * np.abs(w).sum()
    w1 = ilc_weights(BANDS, cov, null_cmb=False)
    assert w1 @ a == pytest.approx(1.0, rel=1e-10)
    assert w1 @ cov @ w1 <= w @ cov @ w  # one constraint fewer: less variance


def test_y_map_recovers_the_cluster_and_drops_the_cmb():
    maps, cl = _cutout(3, 20.0, 11.0, y0=3e-4, noise_uk=0.5)
    y = y_map(maps, BANDS)
    assert np.unravel_index(np.argmax(y), y.shape) == (11, 20)  # (row, column) = (y, x)
    y_true = cl[0] / tsz_uk_per_y(BANDS[0])  # the cluster's own y at each pixel
    assert y[11, 20] == pytest.approx(y_true[11, 20], rel=0.3)
    cmb_only = np.repeat(maps[:1] * 0 + (maps[1] - cl[1])[None], 3, axis=0)  # the same pattern in every band
    w = ilc_weights(BANDS)
    assert np.abs(np.tensordot(w, cmb_only, axes=1)).max() < 1e-6 * np.abs(cmb_only).max()


def test_matched_filtered_cutout_peaks_at_the_injected_cluster():
    from szviewer.mf.views import filtered_cutout, nearest_scale

    s = MFSettings()
    maps, _ = _cutout(5, 9.0, 22.0, y0=2e-4, theta_c=1.0)
    snr, theta = filtered_cutout(maps, PIX, 1.1, s, noise_uk_arcmin=(2.0, 2.0, 2.0))
    assert theta == s.theta_c_arcmin[nearest_scale(1.1, s.theta_c_arcmin)]
    assert snr.shape == (32, 32) and snr.dtype == np.float32
    iy, ix = np.unravel_index(np.argmax(snr), snr.shape)
    assert abs(iy - 22) <= 1 and abs(ix - 9) <= 1
    assert snr[iy, ix] > 5 * np.median(np.abs(snr))
    empty, _ = filtered_cutout(maps - paint_clusters((32, 32), PIX, [9.0], [22.0], [2e-4], [1.0], BANDS,
                                                     (0.0, 0.0, 0.0)).astype(np.float32), PIX, 1.1, s,
                               noise_uk_arcmin=(2.0, 2.0, 2.0))
    assert snr[iy, ix] > empty.max() + 3  # the peak is the cluster, not the CMB
