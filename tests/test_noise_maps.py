"""The noise realisation of an instrument: white level, 1/f knee, cross-band correlation, anisotropy, hits, ivar,
footprint mask, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.table import Table

from szviewer.errors import InputError
from szviewer.sky import noise_maps as nm
from szviewer.sky.instrument_presets import load_instrument
from szviewer.sky.spectra import ell_grid
from szviewer.sky.tiles import Tile


@pytest.fixture(scope="module")
def act():
    return load_instrument("act-dr6")


@pytest.fixture(scope="module")
def act_noise(act):
    """One 1024^2 realisation of act-dr6 at 0.5' (8.5 deg on a side), unit hits."""
    return nm.realise_noise(act, (1024, 1024), 0.5, np.random.default_rng(11))


def grid_radec(tile: Tile):
    yy, xx = np.mgrid[0:tile.ny, 0:tile.nx]
    return tile.pix_to_world(xx, yy)


def test_white_noise_is_drawn_in_pixel_space_at_depth_over_pixel():
    inst = load_instrument("spt3g-paper")
    noise = nm.realise_noise(inst, (400, 300), 0.25, np.random.default_rng(5))
    assert noise.shape == (3, 400, 300) and noise.dtype == np.float32
    # exactly the documented cheap path: standard normals (float32) times sigma, band by band
    rng = np.random.default_rng(5)
    for i, sigma in enumerate((11.2, 10.4, 26.4)):
        expect = rng.standard_normal((400, 300), dtype=np.float32) * np.float32(sigma)
        assert np.array_equal(noise[i], expect)
        assert noise[i].std() == pytest.approx(sigma, rel=0.01)


def test_white_level_and_knee_measured_within_5_percent(act, act_noise):
    meas = nm.measure_noise(act_noise, 0.5, bands=act.band_ids)
    for b, m in zip(act.bands, meas, strict=True):
        assert m["band"] == b.band
        assert m["white_uk_arcmin"] == pytest.approx(b.white_uk_arcmin, rel=0.05)
        assert m["ell_knee"] == pytest.approx(b.ell_knee, rel=0.05)
        assert m["alpha_knee"] == pytest.approx(b.alpha_knee, abs=0.3)
        assert len(m["ell"]) == len(m["nl_uk2_sr"]) > 20
    white_only = nm.measure_noise(nm.realise_noise(load_instrument("spt3g-paper"), (512, 512), 0.25,
                                                   np.random.default_rng(2)), 0.25)
    assert [m["ell_knee"] for m in white_only] == [0.0, 0.0, 0.0]
    assert [m["white_uk_arcmin"] for m in white_only] == pytest.approx([2.8, 2.6, 6.6], rel=0.02)


def test_cross_band_correlation_of_the_one_over_f_part(act, act_noise):
    r = nm.measure_correlation(act_noise, 0.5, ell_range=(200, 1800))
    assert r.shape == (3, 3) and np.allclose(np.diag(r), 1.0)
    assert np.all(np.abs(r[np.triu_indices(3, 1)] - 0.9) < 0.05)
    independent = dataclasses.replace(act, atmosphere_correlation=0.0)
    r0 = nm.measure_correlation(nm.realise_noise(independent, (1024, 1024), 0.5, np.random.default_rng(11)), 0.5,
                                ell_range=(200, 1800))
    assert np.all(np.abs(r0[np.triu_indices(3, 1)]) < 0.12)


def test_anisotropy_puts_the_one_over_f_power_at_small_lx(act):
    shape = (512, 512)
    iso = act.noise_power(shape)[1, 1]
    ly = np.abs(np.fft.fftfreq(512))[:, None] * np.ones((1, 257))
    lx = np.fft.rfftfreq(512)[None, :] * np.ones((512, 1))
    ell = ell_grid(512, 512, 0.5)
    band = (ell > 200) & (ell < 1500)  # 1/f-dominated at 150 GHz (knee 3000)
    small_lx = band & (lx < 0.25 * ly)  # stripes along RA
    small_ly = band & (ly < 0.25 * lx)

    def power_ratio(inst):
        n = nm.realise_noise(inst, shape, 0.5, np.random.default_rng(3))[1]
        p = np.abs(np.fft.rfft2(n)) ** 2 / (512 * 512) / iso  # in units of the isotropic model, mode by mode
        return p[small_lx].mean() / p[small_ly].mean()

    striped = dataclasses.replace(act, anisotropy=10.0)
    assert power_ratio(striped) > 5.0
    assert power_ratio(act) == pytest.approx(1.0, abs=0.2)
    # the azimuthal mean is unchanged: the knee is still measured where the preset puts it
    meas = nm.measure_noise(nm.realise_noise(striped, (1024, 1024), 0.5, np.random.default_rng(4)), 0.5)
    assert meas[1]["ell_knee"] == pytest.approx(3000.0, rel=0.1)


def test_noise_power_matches_the_realisation(act):
    shape = (512, 512)
    p = act.noise_power(shape)
    acc = np.zeros((3,) + p.shape[2:])
    cross = np.zeros(p.shape[2:])
    for seed in range(4):
        n = nm.realise_noise(act, shape, 0.5, np.random.default_rng(seed))
        f = [np.fft.rfft2(n[b]) for b in range(3)]
        acc += np.stack([np.abs(x) ** 2 for x in f]) / (shape[0] * shape[1])
        cross += (f[0] * np.conj(f[2])).real / (shape[0] * shape[1])
    ell = ell_grid(*shape, 0.5)
    ring = (ell > 3000) & (ell < 6000)
    for b in range(3):
        assert acc[b][ring].mean() / 4 == pytest.approx(p[b, b][ring].mean(), rel=0.05)
    low = (ell > 300) & (ell < 800)
    assert cross[low].sum() / acc[0][low].sum() == pytest.approx(p[0, 2][low].sum() / p[0, 0][low].sum(), rel=0.15)


def test_seeded_realisations_are_bit_for_bit_equal(act):
    hits = np.full((128, 160), 2.0, dtype=np.float32)
    a = nm.realise_noise(act, (128, 160), 0.5, np.random.default_rng(42), hits=hits)
    b = nm.realise_noise(act, (128, 160), 0.5, np.random.default_rng(42), hits=hits)
    c = nm.realise_noise(act, (128, 160), 0.5, np.random.default_rng(43), hits=hits)
    assert a.dtype == np.float32 and np.array_equal(a, b) and not np.allclose(a, c)
    flat = nm.realise_noise(act, (128, 160), 0.5, np.random.default_rng(42))
    assert np.allclose(a * np.sqrt(2.0), flat, rtol=1e-5, atol=1e-4)  # n = g / sqrt(hits)
    with pytest.raises(ValueError, match="hits"):
        nm.realise_noise(act, (128, 160), 0.5, np.random.default_rng(0), hits=np.zeros((128, 160)))


def test_hits_bounded_and_continuous_across_overlapping_tiles(act):
    assert act.depth_pattern == "smooth" and act.depth_contrast == 4.0
    a = Tile(0, 30, 36, -3, 3, 33.0, 0.0, 400, 400, 1.0)
    b = Tile(1, 34, 40, -1, 5, 37.0, 2.0, 400, 400, 1.0)  # another TAN centre, overlapping a
    ra_a, dec_a = grid_radec(a)
    ra_b, dec_b = grid_radec(b)
    ha = nm.relative_hits(act, ra_a, dec_a, seed=9)
    hb = nm.relative_hits(act, ra_b, dec_b, seed=9)
    assert ha.dtype == np.float32 and ha.shape == (400, 400)
    lo, hi = 1 / np.sqrt(4.0), np.sqrt(4.0)
    assert lo - 1e-6 <= ha.min() and ha.max() <= hi + 1e-6 and ha.max() / ha.min() > 1.5
    # the value is a function of the sky position: evaluated exactly, point by point, at positions taken from
    # either tile's grid, it is what each tile's (interpolated) grid holds; so the tiles agree where they overlap
    xb, yb = b.world_to_pix(ra_a, dec_a)
    shared = (xb >= 0) & (xb <= b.nx - 1) & (yb >= 0) & (yb <= b.ny - 1)
    assert shared.sum() > 10000
    pick = np.nonzero(shared.ravel())[0][::997]
    exact_a = nm.relative_hits(act, ra_a.ravel()[pick], dec_a.ravel()[pick], seed=9)
    assert np.max(np.abs(exact_a - ha.ravel()[pick])) < 1e-5
    iy, ix = np.rint(yb.ravel()[pick]).astype(int), np.rint(xb.ravel()[pick]).astype(int)
    exact_b = nm.relative_hits(act, ra_b[iy, ix], dec_b[iy, ix], seed=9)
    assert np.max(np.abs(exact_b - hb[iy, ix])) < 1e-5
    # the same positions through a different grid (a cropped, strided, flipped view) give the same values
    view = (slice(350, 30, -1), slice(20, 390))
    again = nm.relative_hits(act, ra_b[view], dec_b[view], seed=9)
    assert np.max(np.abs(again - hb[view])) < 1e-5
    assert not np.allclose(nm.relative_hits(act, ra_a, dec_a, seed=10), ha)
    uniform = nm.relative_hits(load_instrument("so-lat"), ra_a, dec_a, seed=9)
    assert np.all(uniform == 1.0)


def test_hits_median_is_about_one_over_large_areas(act):
    rng = np.random.default_rng(0)
    ra = rng.uniform(0, 90, 50000)
    dec = np.degrees(np.arcsin(rng.uniform(0, 1, 50000)))
    medians = [np.median(nm.relative_hits(act, ra, dec, seed)) for seed in range(4)]
    assert np.all(np.abs(np.array(medians) - 1.0) < 0.12)


def test_ivar_and_depth_summary(act):
    hits = np.array([[1.0, 4.0], [0.25, 1.0]], dtype=np.float32)
    ivar = nm.ivar_map(act, hits, 0.5)
    assert ivar.shape == (3, 2, 2) and ivar.dtype == np.float32
    assert ivar[0, 0, 1] == pytest.approx(4.0 / (15.0 / 0.5) ** 2)
    summary = nm.depth_summary(ivar, 0.5, bands=act.band_ids)
    assert summary[1]["band"] == 150
    assert summary[1]["median"] == pytest.approx(14.0) and summary[1]["min"] == pytest.approx(7.0)
    assert summary[1]["max"] == pytest.approx(28.0)


def hole_instrument(act):
    return dataclasses.replace(act, edge_apod_arcmin=30.0, hole_flux_mjy=15.0, hole_band=150,
                               hole_radius_arcmin=5.0, hole_apod_arcmin=5.0)


def test_footprint_mask_edges_and_holes(act):
    inst = hole_instrument(act)
    box = (10.0, 20.0, -5.0, 5.0)
    sources = Table({"ra": [15.0, 12.0], "dec": [0.0, 2.0], "flux_150": [20.0, 10.0], "flux_90": [1.0, 1.0]})
    pts = {
        "inside": (17.0, -2.0, 1.0),
        "outside": (25.0, 0.0, 0.0),
        "below": (15.0, -5.5, 0.0),
        "RA edge ramp": (10.0 + 15.0 / 60.0, -2.0, 0.5 * (1 - np.cos(np.pi * 15.0 * np.cos(np.radians(2.0)) / 30.0))),
        "Dec edge ramp": (17.0, -5.0 + 7.5 / 60.0, 0.5 * (1 - np.cos(np.pi * 7.5 / 30.0))),
        "in hole": (15.0, 3.0 / 60.0, 0.0),
        "hole ramp": (15.0, 7.5 / 60.0, 0.5),
        "past hole": (15.0, 12.0 / 60.0, 1.0),
        "faint source": (12.0, 2.0, 1.0),
    }
    ra = np.array([p[0] for p in pts.values()])
    dec = np.array([p[1] for p in pts.values()])
    m = nm.footprint_mask(inst, box, ra, dec, sources)
    assert m.dtype == np.float32
    for (name, (_, _, want)), got in zip(pts.items(), m, strict=True):
        assert got == pytest.approx(want, abs=2e-3), name
    # no apodisation and no sources: 1 inside, 0 outside
    plain = nm.footprint_mask(dataclasses.replace(inst, edge_apod_arcmin=0.0), box, ra, dec)
    assert list(plain) == [1, 0, 0, 1, 1, 1, 1, 1, 1]
    # RA running past 360; the pole is not an edge
    wrap = nm.footprint_mask(inst, (350.0, 370.0, -5.0, 5.0), np.array([5.0, 15.0, 355.0]), np.zeros(3))
    assert list(wrap) == [1, 0, 1]
    cap = nm.footprint_mask(inst, (0.0, 360.0, 80.0, 90.0), np.array([45.0, 45.0]), np.array([89.9, 80.1]))
    assert cap[0] == 1.0 and cap[1] == pytest.approx(0.5 * (1 - np.cos(np.pi * 6.0 / 30.0)), abs=2e-3)
    # near the apex of the octant both meridian edges are close: asin(cos dec sin 45 deg) = 7.05 deg at dec 80
    octant = nm.footprint_mask(inst, (0.0, 90.0, 0.0, 90.0), np.array([45.0, 45.0]), np.array([80.0, 89.95]))
    assert octant[0] == 1.0 and octant[1] < 0.1
    with pytest.raises(InputError, match="flux_150"):
        nm.footprint_mask(inst, box, ra, dec, Table({"ra": [15.0], "dec": [0.0], "flux_90": [30.0]}))


def test_footprint_mask_on_a_tile_grid(act):
    inst = hole_instrument(act)
    tile = Tile(0, 10, 14, -2, 2, 12.0, 0.0, 300, 300, 1.0)
    ra, dec = grid_radec(tile)
    sources = Table({"ra": [12.0], "dec": [0.0], "flux_150": [100.0]})
    m = nm.footprint_mask(inst, tile.owned.box, ra, dec, sources)
    assert m.shape == (300, 300) and m[150, 150] == 0.0 and m[0, 0] == 0.0
    assert m[150, 100] == 1.0  # 50' from the source and 70' from the box edge
    assert 0.0 < m[150, 260] < 1.0  # 9.5' inside the RA edge
