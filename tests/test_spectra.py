import numpy as np
import pytest

from szviewer.sky import spectra


def test_cmb_table_shape_and_values():
    dl = spectra.cmb_lensed_dl(np.array([0, 1, 220, 3000, 20000]))
    assert dl[0] == 0 and dl[1] == 0
    assert 5000 < dl[2] < 6500  # first acoustic peak
    assert 20 < dl[3] < 35
    assert 0 <= dl[4] < 0.1


def test_gaussian_field_has_requested_power():
    rng = np.random.default_rng(0)
    flat_dl = 50.0
    m = spectra.gaussian_field(rng, (512, 512), 0.5, lambda ell: spectra.dl_to_cl(ell, np.full_like(ell, flat_dl)))
    edges = np.array([1000.0, 2000.0, 4000.0, 8000.0])
    measured = spectra.binned_dl(m, 0.5, edges, taper_pix=32)
    assert measured == pytest.approx([flat_dl] * 3, rel=0.08)
