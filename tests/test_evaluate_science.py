"""Completeness and true-positive fractions vs halo properties (szviewer.evaluate.science)."""

import math

import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM

from szviewer.evaluate.science import (
    angular_offset_arcmin,
    angular_radius_arcmin,
    binned_fraction,
    binned_fraction_2d,
    binned_mean,
    completeness_by_method,
    completeness_vs_mass,
    completeness_vs_redshift,
    exclusive_finds,
    make_bins,
    score_vs_offset,
    tp_fraction_maps,
)


def test_binned_fraction_by_hand():
    x = [0.5, 1.5, 1.6, 2.5, 2.6, 2.7, 3.0, np.nan, 9.0]
    found = [1, 0, 1, 1, 1, 0, 1, 1, 1]
    r = binned_fraction(x, found, bins=[0, 1, 2, 3])
    np.testing.assert_array_equal(r.n, [1, 2, 4])  # 3.0 is in the last bin; NaN and 9 are outside
    np.testing.assert_array_equal(r.k, [1, 1, 3])
    np.testing.assert_allclose(r.fraction, [1.0, 0.5, 0.75])
    np.testing.assert_allclose(r.centers, [0.5, 1.5, 2.5])
    r = binned_fraction(x, found, bins=[0, 1, 2, 3], min_count=2)
    assert math.isnan(r.fraction[0]) and r.fraction[1] == 0.5
    r = binned_fraction(x, found, bins=[0, 1, 2, 3], mask=np.array(found, bool))
    np.testing.assert_array_equal(r.n, [1, 1, 3])


def test_log_bins_and_common_edges():
    m = np.array([1e14, 1.5e14, 3e14, 5e14, 8e14])
    e = make_bins(m, 3, log=True)
    np.testing.assert_allclose(e, [1e14, 2e14, 4e14, 8e14])
    res = completeness_by_method(m, {"CNN": [1, 1, 1, 0, 0], "MF": [0, 0, 1, 1, 1]}, 3, log=True)
    np.testing.assert_array_equal(res["CNN"].edges, res["MF"].edges)
    np.testing.assert_array_equal(res["CNN"].n, [2, 1, 2])  # the last bin includes its right edge
    np.testing.assert_allclose(res["CNN"].fraction, [1.0, 1.0, 0.0])
    np.testing.assert_allclose(res["MF"].fraction, [0.0, 1.0, 1.0])
    np.testing.assert_allclose(res["MF"].centers[0], np.sqrt(2) * 1e14)
    with pytest.raises(ValueError):
        make_bins([np.nan], 3)


def test_binned_fraction_2d_min_count():
    x = [1, 1, 1, 3, 3]
    y = [1, 1, 1, 1, 3]
    f = [1, 0, 1, 1, 1]
    r = binned_fraction_2d(x, y, f, [0, 2, 4], [0, 2, 4], min_count=3)
    np.testing.assert_array_equal(r.n, [[3, 0], [1, 1]])
    np.testing.assert_array_equal(r.k, [[2, 0], [1, 1]])
    assert r.fraction[0, 0] == pytest.approx(2 / 3)
    assert np.isnan(r.fraction[1]).all() and np.isnan(r.fraction[0, 1])


def test_tp_fraction_maps_keys_and_shared_bins():
    rng = np.random.default_rng(0)
    n = 500
    m = 10 ** rng.uniform(14.3, 15, n)
    z = rng.uniform(0.25, 2, n)
    r = rng.uniform(0.5, 2, n)
    found = {"CNN": rng.random(n) < 0.5, "MF": m > 4e14}
    maps = tp_fraction_maps(m, found, z=z, r_vir=r, bins=5)
    assert set(maps) == {"CNN", "MF"} and set(maps["MF"]) == {"z", "r_vir"}
    np.testing.assert_array_equal(maps["CNN"]["z"].x_edges, maps["MF"]["z"].x_edges)
    assert maps["MF"]["z"].n.sum() == n
    # MF finds exactly the halos above 4e14: the top mass bins are complete
    assert np.nanmin(maps["MF"]["z"].fraction[-1]) == 1.0


def test_binned_mean_by_hand():
    r = binned_mean([0.5, 0.6, 1.5, 2.5, np.nan], [1.0, 3.0, 5.0, np.nan, 7.0], bins=[0, 1, 2, 3])
    np.testing.assert_array_equal(r.n, [2, 1, 0])
    np.testing.assert_allclose(r.mean[:2], [2.0, 5.0])
    assert np.isnan(r.mean[2])
    assert r.std[0] == pytest.approx(np.sqrt(2.0))
    assert r.sem[0] == pytest.approx(1.0)


def test_angles():
    assert angular_offset_arcmin(10.0, 0.0, 10.0, 1.0) == pytest.approx(60.0)
    assert angular_offset_arcmin(10.0, 60.0, 10.1, 60.0) == pytest.approx(3.0, rel=1e-4)  # 6' x cos 60
    assert angular_offset_arcmin(359.95, 0.0, 0.05, 0.0) == pytest.approx(6.0)
    cosmo = FlatLambdaCDM(H0=70, Om0=0.3)
    theta = angular_radius_arcmin(1.0, 0.5, cosmo)
    d_a = cosmo.angular_diameter_distance(0.5).to_value("Mpc")
    assert theta == pytest.approx(np.degrees(1.0 / d_a) * 60)
    default = angular_radius_arcmin(np.array([1.0, 1.0]), np.array([0.5, 1.0]))
    assert np.all(default > 0) and default[0] > default[1]


def test_exclusive_finds():
    cnn = np.array([1, 1, 0, 0, 1], bool)
    mf = np.array([1, 0, 1, 0, 0], bool)
    lab = np.array([1, 1, 1, 1, 0], bool)
    only_cnn, only_mf = exclusive_finds(cnn, mf, lab)
    np.testing.assert_array_equal(only_cnn, [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(only_mf, [0, 0, 1, 0, 0])
    only_cnn, _ = exclusive_finds(cnn, mf)
    np.testing.assert_array_equal(only_cnn, [0, 1, 0, 0, 1])


def test_wrappers_mass_redshift_offset():
    m = np.array([1e14, 1.5e14, 3e14, 5e14, 8e14])
    z = np.array([0.3, 0.5, 0.7, 0.9, 1.1])
    found = {"PROD": np.array([1, 0, 1, 1, 0], bool)}
    by_m = completeness_vs_mass(m, found, 3)["PROD"]
    np.testing.assert_allclose(by_m.edges, [1e14, 2e14, 4e14, 8e14])
    np.testing.assert_allclose(by_m.fraction, [0.5, 1.0, 0.5])
    by_z = completeness_vs_redshift(z, found, [0.2, 0.6, 1.2])["PROD"]
    np.testing.assert_allclose(by_z.fraction, [0.5, 2 / 3])
    off = np.array([0.5, 1.0, 2.5, 3.5])
    res = score_vs_offset(off, {"CNN": [0.9, 0.7, 0.2, np.nan], "MF": [10.0, 8.0, 6.0, 4.0]}, [0, 2, 4])
    np.testing.assert_allclose(res["CNN"].mean, [0.8, 0.2])
    np.testing.assert_allclose(res["MF"].mean, [9.0, 5.0])
    np.testing.assert_array_equal(res["CNN"].n, [2, 1])
