import numpy as np
import pytest

from szviewer.sky import bands


def test_tsz_spectrum_matches_science_md():
    # SCIENCE.md section 3: uK per unit y
    assert bands.tsz_uk_per_y(90) == pytest.approx(-4.356e6, rel=1e-3)
    assert bands.tsz_uk_per_y(148) == pytest.approx(-2.668e6, rel=1e-3)
    assert bands.tsz_uk_per_y(219) == pytest.approx(6.1e4, rel=0.02)
    # the null is near 217 GHz
    nu = np.linspace(200, 240, 4001)
    assert nu[np.argmin(np.abs(bands.tsz_f(nu)))] == pytest.approx(217.5, abs=0.5)


def test_planck_derivative_and_jy_conversion():
    # SCIENCE.md section 6: dB/dT in Jy/sr/uK; section 1: CFAC = T_CMB dB/dT
    for nu, ref in ((90, 202.73), (148, 393.42), (219, 483.79)):
        assert bands.db_dt_jy_sr_per_uk(nu) == pytest.approx(ref, rel=1e-4)
    for nu, cfac in ((90, 5.526540e8), (148, 1.072480e9), (219, 1.318837e9)):
        assert 1.0 / bands.jy_sr_to_uk(nu) * 1e6 * bands.T_CMB_K == pytest.approx(cfac, rel=5e-5)
    # 1 mJy in one 0.25' pixel: 933, 481, 391 uK
    omega = (0.25 / 60 * np.pi / 180) ** 2
    for nu, ref in ((90, 933), (148, 481), (219, 391)):
        assert 1e-3 / omega / bands.db_dt_jy_sr_per_uk(nu) == pytest.approx(ref, rel=2e-3)


def test_noise_per_pixel():
    assert [bands.noise_sigma_uk(b, 0.25) for b in bands.BANDS_GHZ] == pytest.approx([11.2, 10.4, 26.4])
