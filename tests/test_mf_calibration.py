"""The matched filter calibrated on maps it did not make (issue 12): injection maps from the project's own noise
code (white, inhomogeneous, atmospheric 1/f, beams), judged against the ideal filter with the TRUE noise power.

Every sky is seeded; clusters sit 90' apart so the isolated-cluster ideal applies (beta = 1 clusters closer than
that bias each other's y0 through the filter's large-scale modes, with any filter).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from szviewer.mf import MFSettings, run_mf
from szviewer.mf.filter import build_filter_bank
from szviewer.mf.injection import ideal_sigma, make_test_sky, match_truth
from szviewer.mf.noise import point_source_dl3000
from szviewer.mf.settings import resample_beam_table
from szviewer.sky.beams import Beam
from szviewer.sky.instrument_presets import load_instrument
from szviewer.sky.instruments import BandSpec, Instrument
from szviewer.sky.noise_maps import relative_hits

PIX = 0.5  # arcmin: 4x fewer pixels than the paper's, same physics
CACHE: dict = {}


def spt_like(pixel=PIX) -> Instrument:
    """The paper's SPT-3G depths with the SPT-3G beams (the issue's reproduction), at ``pixel``."""
    inst = load_instrument("spt3g-paper")
    beams = (1.6, 1.2, 1.1)
    return dataclasses.replace(inst, name=f"spt-beamed-{pixel}", pixel_arcmin=pixel,
                               bands=tuple(dataclasses.replace(b, beam=Beam.gaussian(f))
                                           for b, f in zip(inst.bands, beams, strict=True)))


def settings_for(inst: Instrument, **kw) -> MFSettings:
    """Settings matched to an instrument: bands, beams, its 1/f in the model, no foreground terms (none in the maps)."""
    return MFSettings(bands_ghz=inst.freqs_ghz, beam_fwhm_arcmin=tuple(b.beam.fwhm_equivalent_arcmin()
                                                                       for b in inst.bands),
                      snr_threshold=4.0, ksz_dl_uk2=0.0, ps_dl3000_uk2=(0.0,) * len(inst.bands),
                      szbg_dl3000_uk2_90=0.0, noise_ell_knee=tuple(b.ell_knee for b in inst.bands),
                      noise_alpha_knee=tuple(b.alpha_knee for b in inst.bands),
                      noise_atm_correlation=inst.atmosphere_correlation, noise_anisotropy=inst.anisotropy, **kw)


def measure(sky, settings, inst):
    cat = run_mf(sky.maps, None, sky.pixel_arcmin, settings, noise_uk_arcmin=[b.white_uk_arcmin for b in inst.bands],
                 ivar=sky.ivar)
    row, dist = match_truth(np.asarray(cat["x"]), np.asarray(cat["y"]), np.asarray(cat["snr"]), sky.truth,
                            sky.pixel_arcmin)
    ok = row >= 0
    ratio = np.asarray(cat["snr"])[row[ok]] / sky.truth["snr_ideal"][ok]
    return cat, ok, ratio, dist[ok]


@pytest.fixture(scope="module")
def white_skies():
    inst = spt_like()
    return inst, [make_test_sky(inst, (600, 600), seed, n_clusters=9, spacing_arcmin=90, sigma_cache=CACHE)
                  for seed in (1, 2)]


def test_ideal_sigma_is_the_analytic_filter_with_the_true_power():
    """The judge itself: for the filter's own template convention the ideal matches the bank built on the true
    power within 0.5% (the ideal integrates the cluster over its pixels; the bank samples it)."""
    from szviewer.mf.injection import true_power

    inst = spt_like(0.25)
    st = settings_for(inst, theta_c_arcmin=(1.0, 2.0), pixel_window=False)
    shape = (512, 512)
    bank = build_filter_bank(shape, 0.25, st, true_power(inst, shape, 0.25))
    for s, tc in enumerate(st.theta_c_arcmin):
        assert ideal_sigma(inst, 0.25, tc, grid=512) == pytest.approx(bank.sigma[s], rel=5e-3)


def test_iterated_data_noise_has_no_self_bias(white_skies):
    """Issue 12 part 1: one pass of data noise reads bright clusters low (they sit in their own noise); the
    iterated estimate reads S/N at the ideal's, bright ones included (bias <= 2% on the median)."""
    inst, skies = white_skies
    st = settings_for(inst, noise_mode="data")
    one, it, bright_one, bright_it, offs = [], [], [], [], []
    for sky in skies:
        _, ok1, r1, _ = measure(sky, st.replace(data_noise_clean_snr=0.0), inst)
        cat, ok, r, d = measure(sky, st, inst)
        ideal = sky.truth["snr_ideal"]
        one.append(r1)
        it.append(r)
        bright_one.append(r1[ideal[ok1] > 15])
        bright_it.append(r[ideal[ok] > 15])
        offs.append(d)
        assert ok.all()  # every S/N >= 6 cluster found within 1'
        assert max(cat.meta["noise_iterations"]) >= 1
    one, it = np.concatenate(one), np.concatenate(it)
    assert np.median(it) == pytest.approx(1.0, abs=0.03)
    assert np.median(np.concatenate(bright_it)) == pytest.approx(1.0, abs=0.03)
    assert np.median(np.concatenate(bright_one)) < np.median(np.concatenate(bright_it)) - 0.05  # the test has teeth
    offs = np.concatenate(offs)
    assert np.median(offs) <= 0.25 and offs.max() < 1.0  # positions from the winning scale's sub-pixel peak


def test_model_noise_that_fits_reads_the_ideal_and_a_wrong_model_is_reported(white_skies):
    inst, skies = white_skies
    right = settings_for(inst)
    cat, ok, r, _ = measure(skies[0], right, inst)
    assert ok.all() and np.median(r) == pytest.approx(1.0, abs=0.04)
    assert cat.meta["snr_rms_ok"] and cat.meta["warning"] is None
    # the paper's model with point-source and SZ-background terms the maps do not hold: S/N read low, and said
    paper = right.replace(ksz_dl_uk2=2.0, ps_dl3000_uk2=(), szbg_dl3000_uk2_90=3.6)
    cat, ok, r, _ = measure(skies[0], paper, inst)
    assert np.median(r) < 0.8
    assert not cat.meta["snr_rms_ok"] and "--noise data" in cat.meta["warning"]


def test_pure_noise_snr_maps_have_unit_variance_in_deep_and_shallow_parts():
    """Inhomogeneous depth (contrast 4) and correlated atmospheric 1/f with beams (act-dr6): the S/N maps of pure
    noise have unit variance in the deepest and the shallowest third alike, in data and in model mode."""
    from szviewer.mf.tilefilter import filter_prepared, snr_from_maps
    from szviewer.mf.tilefilter import relative_hits as mf_hits
    from szviewer.mf.tiling import prepare_tile

    inst = load_instrument("act-dr6")
    n = 720
    yy, xx = np.mgrid[0:n, 0:n]
    hits = relative_hits(inst, 30.0 + (xx - n / 2) * inst.pixel_arcmin / 60, (yy - n / 2) * inst.pixel_arcmin / 60,
                         seed=3)
    sky = make_test_sky(inst, (n, n), 5, n_clusters=1, snr_range=(1e-3, 1.1e-3), hits=hits, sigma_cache=CACHE)
    bad = np.zeros((n, n), bool)
    prep, w, det = prepare_tile(sky.maps, bad, 16)
    h = mf_hits(sky.ivar, bad, settings_for(inst), inst.pixel_arcmin, [b.white_uk_arcmin for b in inst.bands])
    deep = det & (h > np.quantile(h[det], 2 / 3))
    shallow = det & (h < np.quantile(h[det], 1 / 3))
    for mode in ("data", "model"):
        st = settings_for(inst, noise_mode=mode, theta_c_arcmin=(0.5, 1.5, 3.0))
        res = filter_prepared(prep, w, det, inst.pixel_arcmin, st, [b.white_uk_arcmin for b in inst.bands], h)
        snr = snr_from_maps(res.bank, prep * np.sqrt(h)[None], h, res.norm)
        # data mode meets the 1.00 +- 0.03 (measured over 4 skies: 1.007-1.027); the model's analytic
        # a + b h normalisation reads the deep part up to 3% high (1.017-1.031 over 4 skies)
        tol = 0.03 if mode == "data" else 0.04
        for s in range(3):
            for part in (deep, shallow):
                assert np.std(snr[s][part]) == pytest.approx(1.0, abs=tol), (mode, s)
        # the test has teeth: ignoring the depth, the shallow part's S/N maps are far wider than the deep part's
        flat = filter_prepared(prep, w, det, inst.pixel_arcmin, st, [b.white_uk_arcmin for b in inst.bands], None)
        raw = snr_from_maps(flat.bank, prep)
        assert np.std(raw[0][shallow]) / np.std(raw[0][deep]) > 1.2


def test_inhomogeneous_1_over_f_clusters_read_the_local_ideal():
    inst = load_instrument("act-dr6")
    n = 600
    yy, xx = np.mgrid[0:n, 0:n]
    hits = relative_hits(inst, 30.0 + (xx - n / 2) * 0.5 / 60, (yy - n / 2) * 0.5 / 60, seed=3)
    ratios = []
    for seed in (11, 12):
        sky = make_test_sky(inst, (n, n), seed, n_clusters=9, spacing_arcmin=90, hits=hits, sigma_cache=CACHE)
        cat, ok, r, d = measure(sky, settings_for(inst, noise_mode="data"), inst)
        assert ok.all() and d.max() < 1.0
        ratios.append(r)
    assert np.median(np.concatenate(ratios)) == pytest.approx(1.0, abs=0.04)


def test_anisotropic_1_over_f_in_data_mode_reads_the_ideal():
    """The spt3g preset: atmospheric 1/f (ell_knee 1200-2300, slope -3) in stripes along RA (anisotropy 4), beams.
    The plain Gaussian smoothing of the 2-D noise power blurs the steep 1/f and reads S/N at ~0.92 of the ideal;
    whitened by its ring models in the CMB basis before the smoothing (noise.data_noise_power), the median is
    the ideal's (measured 1.001 on these skies; 0.994 over 3 larger skies at the preset's 0.25' pixels)."""
    inst = dataclasses.replace(load_instrument("spt3g"), pixel_arcmin=PIX, name="spt3g-0.5")
    assert inst.anisotropy == 4.0 and inst.has_one_over_f
    st = settings_for(inst, noise_mode="data")
    white, plain = [], []
    for seed in (21, 22):
        sky = make_test_sky(inst, (600, 600), seed, n_clusters=9, spacing_arcmin=90, sigma_cache=CACHE)
        _, ok, r, d = measure(sky, st, inst)
        assert ok.all() and d.max() < 1.0
        white.append(r)
        plain.append(measure(sky, st.replace(data_noise_whiten=False), inst)[2])
    assert np.median(np.concatenate(white)) == pytest.approx(1.0, abs=0.03)
    assert np.median(np.concatenate(plain)) < 0.95  # the test has teeth


def test_any_number_of_bands_and_beam_tables():
    """Two bands (ACT DR5 had 98/150 GHz) and a beam given as a B_ell table (equal to its Gaussian)."""
    base = spt_like()
    inst = dataclasses.replace(base, name="two-band", bands=(
        BandSpec(98, 97.8, 4.0, Beam.gaussian(2.0)), BandSpec(150, 149.6, 4.0, Beam.gaussian(1.4))))
    sky = make_test_sky(inst, (400, 400), 3, n_clusters=4, spacing_arcmin=90, snr_range=(10, 20),
                        sigma_cache=CACHE)
    st = settings_for(inst, noise_mode="data")
    cat, ok, r, _ = measure(sky, st, inst)
    assert ok.all() and np.median(r) == pytest.approx(1.0, abs=0.08)
    table = st.replace(beam_tables=tuple(resample_beam_table(b.beam, 40000.0) for b in inst.bands))
    bank_g = build_filter_bank((256, 256), PIX, st, np.ones((2, 2, 256, 129)) * np.eye(2)[:, :, None, None])
    bank_t = build_filter_bank((256, 256), PIX, table, np.ones((2, 2, 256, 129)) * np.eye(2)[:, :, None, None])
    np.testing.assert_allclose(bank_t.sigma, bank_g.sigma, rtol=2e-3)
    assert MFSettings.from_dict(table.to_dict()) == table


def test_point_source_law_is_the_papers_at_its_bands():
    np.testing.assert_allclose(point_source_dl3000([90, 148, 219]), [2.7, 8.8, 71.0], rtol=1e-9)
    act = point_source_dl3000([97.8, 149.6, 216.5])
    assert 2.0 < act[0] < 3.5 and 7.0 < act[1] < 11.0 and 55.0 < act[2] < 80.0
