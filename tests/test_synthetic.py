import h5py
import numpy as np
import pytest

from szviewer.sky import pressure, synthetic
from szviewer.sky.tilestore import TileReader


def test_same_seed_same_sky_bit_for_bit(tmp_path):
    from szviewer.jobs.simulate import simulate_workspace

    s = synthetic.SimulationSettings(area_deg2=1.0, seed=11)
    simulate_workspace(tmp_path / "a", s)
    simulate_workspace(tmp_path / "b", s)
    simulate_workspace(tmp_path / "c", synthetic.SimulationSettings(area_deg2=1.0, seed=12))
    with TileReader(tmp_path / "a/tiles/tile_0000.h5") as a, TileReader(tmp_path / "b/tiles/tile_0000.h5") as b, \
            TileReader(tmp_path / "c/tiles/tile_0000.h5") as c:
        for comp in synthetic.COMPONENTS:
            assert np.array_equal(a.component(comp), b.component(comp)), comp
            assert not np.array_equal(a.component(comp), c.component(comp)), comp


def test_catalogs_and_components(small_ws):
    from astropy.table import Table

    path = small_ws["path"]
    halos = Table.read(path / "halos.fits")
    srcs = Table.read(path / "sources.fits")
    for col in ("z", "ra", "dec", "m_vir", "r_vir", "m500", "r500", "y0", "y_int_arcmin2", "in_footprint"):
        assert col in halos.colnames
    assert np.all(np.diff(halos["m_vir"]) <= 0)
    assert {"radio", "ir"} <= set(srcs["population"])
    # some sources sit in massive halos (paper Fig. 2)
    assert np.sum(srcs["host_halo"] >= 0) > 0
    with TileReader(path / "tiles/tile_0000.h5") as r:
        tile = r.tile
        tsz = r.component("tsz")
        radio = r.component("radio")
    # the most massive halo in the tile makes a tSZ decrement at 90 and 148 GHz, ~nothing at 219
    h = halos[0]
    x, y = tile.world_to_pix(h["ra"], h["dec"])
    ix, iy = int(np.rint(x)), int(np.rint(y))
    assert tsz[0, iy, ix] < -10 and tsz[1, iy, ix] < 0.5 * tsz[0, iy, ix] < 0
    assert abs(tsz[2, iy, ix]) < 0.05 * abs(tsz[0, iy, ix])
    ratio = tsz[1, iy, ix] / tsz[0, iy, ix]
    assert ratio == pytest.approx(2.668 / 4.356, rel=1e-3)
    # y0 of the catalogue is the painted central value to within the half-pixel offset of the centre
    assert -tsz[0, iy, ix] / 4.356e6 == pytest.approx(h["y0"], rel=0.5)
    # a bright radio source: pixel value = flux[mJy] * 933 uK at 90 GHz (plus the faint background)
    bright = srcs[(srcs["population"] == "radio") & (srcs["flux_90"] > 5)]
    sx, sy = tile.world_to_pix(np.asarray(bright["ra"]), np.asarray(bright["dec"]))
    inside = (sx > 0) & (sx < tile.nx - 1) & (sy > 0) & (sy < tile.ny - 1)
    assert inside.any()
    k = int(np.nonzero(inside)[0][0])
    val = radio[0, int(np.rint(sy[k])), int(np.rint(sx[k]))]
    assert val == pytest.approx(bright["flux_90"][k] * 933.0, rel=0.02, abs=50)


def test_sky_card_is_stored_and_sane(small_ws):
    import json

    card = json.loads((small_ws["path"] / "skycard.json").read_text())
    assert card == json.loads(json.dumps(small_ws["card"]))
    cmb = card["components"]["cmb"]["bands"][0]
    assert 18 < cmb["d3000_uk2"] < 36
    ksz = card["components"]["ksz"]["bands"][1]["d3000_uk2"]
    assert 1.0 < ksz < 3.5


def test_tile_files_are_lzf_compressed(small_ws):
    with h5py.File(small_ws["path"] / "tiles/tile_0000.h5") as f:
        ds = f["components/radio/t0"]
        assert ds.compression == "lzf"


def test_arnaud_projection_against_quad():
    from scipy.integrate import quad

    prof = pressure.ArnaudProfile()
    x, integ = pressure.projected_table(prof)
    for xx in (0.05, 0.5, 2.0):
        ref = 2 * quad(lambda el, xx=xx: prof.p(np.hypot(xx, el)), 0, np.sqrt(25 - xx**2), limit=200)[0]
        assert np.interp(xx, x, integ) == pytest.approx(ref, rel=2e-3)


def test_positive_density_calibration():
    from szviewer.sky.halos import expected_positive_density_per_deg2

    s = synthetic.SimulationSettings()
    dens = expected_positive_density_per_deg2(m_vir_min=2e14 / s.m_vir_calibration)
    assert dens == pytest.approx(14989 / 5157.0, rel=0.03)


def test_beam_smooths_point_sources():
    from szviewer.sky.tiles import Footprint, make_tiles
    from szviewer.sky.tilestore import TileWriter

    s = synthetic.SimulationSettings(area_deg2=1.0, beam_fwhm_arcmin={90: 1.6, 148: 1.2, 219: 0.0})
    tile = make_tiles(Footprint.square(1.0))[0]
    w = TileWriter(tile, s.bands)
    delta = np.zeros(tile.shape, dtype=np.float32)
    delta[100, 120] = 1000.0
    w.add("radio", delta, band_scale=[1.0, 1.0, 1.0])
    synthetic._apply_beams(w, s.beams(), s.pixel_arcmin)
    full = w.terms["radio"][0][0]
    # flux is conserved; a Gaussian beam spreads it over 2 pi sigma^2 / pixel^2 pixels
    for b, fwhm in enumerate((1.6, 1.2)):
        npix_eff = 2 * np.pi * (fwhm / 0.25 / np.sqrt(8 * np.log(2))) ** 2
        assert full[b].sum() == pytest.approx(1000.0, rel=1e-4)
        assert full[b, 100, 120] == pytest.approx(1000.0 / npix_eff, rel=0.05)
        assert np.unravel_index(np.argmax(full[b]), tile.shape) == (100, 120)
    assert full[2, 100, 120] == pytest.approx(1000.0)  # no beam in the third band
