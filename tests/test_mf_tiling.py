"""Tiles, masks and holes (szviewer.mf.tiling) and their effect on a full run (szviewer.mf.runner)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from szviewer.mf import MFSettings, matched_filter, paint_clusters, run_mf
from szviewer.mf.filter import model_filter_bank
from szviewer.mf.tiling import apodise, extract_tile, plan_tiles
from szviewer.sky.bands import BANDS_GHZ, noise_sigma_uk
from szviewer.sky.spectra import cmb_lensed_dl, dl_to_cl, gaussian_field

PIX = 0.25
DEPTH = (2.8, 2.6, 6.6)
SIG = np.array([noise_sigma_uk(b, PIX, d) for b, d in zip(BANDS_GHZ, DEPTH, strict=True)])


def sky(rng, shape):
    cmb = gaussian_field(rng, shape, PIX, lambda ell: dl_to_cl(ell, cmb_lensed_dl(ell)))
    return (rng.standard_normal((3, *shape)) * SIG[:, None, None] + cmb[None]).astype(np.float32)


def test_tiles_partition_the_map_and_share_one_shape():
    tiles = plan_tiles((1000, 700), 240, 50)
    owner = np.zeros((1000, 700), dtype=int)
    for t in tiles:
        owner[t.iy0:t.iy1, t.ix0:t.ix1] += 1
        assert t.y0 <= t.iy0 - 50 and t.y0 + t.ny >= t.iy1 + 50  # margin on every side
        assert t.x0 <= t.ix0 - 50 and t.x0 + t.nx >= t.ix1 + 50
        assert t.shape == tiles[0].shape
    assert np.all(owner == 1)
    # ownership of fractional positions is by the pixel that holds them: exactly one tile each
    rng = np.random.default_rng(0)
    y, x = rng.uniform(-0.49, 999.49, 500), rng.uniform(-0.49, 699.49, 500)
    counts = sum(t.owns(y, x).astype(int) for t in tiles)
    assert np.all(counts == 1)


def test_extract_marks_nan_masked_and_outside_pixels_bad():
    maps = np.ones((3, 50, 60), dtype=np.float32)
    maps[1, 10, 20] = np.nan
    mask = np.zeros((50, 60), dtype=bool)
    mask[30, 30] = True
    tile = plan_tiles((50, 60), 100, 8)[0]
    data, bad = extract_tile(maps, tile, mask)
    oy, ox = -tile.y0, -tile.x0
    assert bad[oy + 10, ox + 20] and bad[oy + 30, ox + 30]
    assert np.all(data[:, oy + 10, ox + 20] == 0)  # all bands of a NaN pixel zeroed
    assert bad[0, 0] and not bad[oy + 5, ox + 5]  # outside the map / inside
    assert np.isfinite(data).all()
    assert int((~bad).sum()) == 50 * 60 - 2


def test_apodisation_grows_the_mask():
    bad = np.zeros((100, 100), dtype=bool)
    bad[50, 50] = True
    w, detect = apodise(bad, 8)
    assert w[50, 50] == 0 and w[50, 55] < 1 and w[50, 60] == 1
    assert not detect[50, 57] and detect[50, 60]
    assert not detect[:8].any() and detect[8:92, 8:92].sum() > 0  # tile edges


def test_nan_hole_is_masked_and_produces_no_detections():
    rng = np.random.default_rng(31)
    shape = (512, 512)
    maps = sky(rng, shape) + 300.0  # a large offset: a zero-filled hole would look like a deep decrement
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    hole = np.hypot(yy - 256, xx - 256) < 40
    maps[:, hole] = np.nan
    maps[2, 100:110, 400:420] = np.nan  # a hole in one band only
    settings = MFSettings(snr_threshold=5.0)
    # a bright cluster just outside the grown hole is still found
    bank = model_filter_bank((720, 720), PIX, settings, DEPTH)
    # and one inside the apodised rim of the hole, whose S/N would be biased: it must not be reported
    maps += paint_clusters(shape, PIX, [256.0, 256.0 - 40 - 16], [256.0 + 40 + 32 + 20, 256.0],
                           [10 * bank.sigma[3], 20 * bank.sigma[3]], [1.0, 1.0], BANDS_GHZ,
                           (0, 0, 0)).astype(np.float32)
    cat = run_mf(maps, None, PIX, settings)
    assert len(cat) == 1
    assert cat["x"][0] == pytest.approx(256, abs=1.5) and cat["y"][0] == pytest.approx(348, abs=1.5)
    # nothing inside the holes grown by the apodisation (8' = 32 pixels)
    d = np.hypot(cat["y"] - 256, cat["x"] - 256)
    assert np.all(d > 40 + 32)
    # the test has teeth: the same map with the holes zero-filled and not masked gives false detections
    naive = np.nan_to_num(maps - np.nanmean(maps, axis=(1, 2), keepdims=True))
    snr = matched_filter(naive, PIX, settings, DEPTH)[2]
    assert snr.max() > 10


def test_cluster_on_tile_edges_is_found_once():
    rng = np.random.default_rng(32)
    shape = (720, 720)  # 3 x 3 tiles of 1 deg
    tiled = MFSettings(tile_deg=1.0)
    single = MFSettings(tile_deg=10.0)
    # clusters exactly on tile boundaries (240, 480), on a corner, half a pixel off, and of several sizes
    xs = np.array([240.0, 480.0, 239.5, 480.0, 360.0, 120.0, 600.0, 240.4])
    ys = np.array([120.0, 360.0, 600.0, 480.0, 239.6, 480.5, 240.0, 479.6])
    tc = np.array([0.5, 1.0, 2.0, 3.0, 1.5, 0.75, 2.5, 1.0])
    bank = model_filter_bank((912, 912), PIX, single, DEPTH)
    idx = [single.theta_c_arcmin.index(t) for t in tc]
    y0 = 12.0 * bank.sigma[idx]
    maps = sky(rng, shape) + paint_clusters(shape, PIX, xs, ys, y0, tc, BANDS_GHZ,
                                            (0, 0, 0)).astype(np.float32)
    cat_t = run_mf(maps, None, PIX, tiled)
    cat_s = run_mf(maps, None, PIX, single)
    assert cat_t.meta["n_tiles"] == 9 and cat_s.meta["n_tiles"] == 1
    for cat in (cat_t, cat_s):
        bright = cat[cat["snr"] > 6]
        d, i = cKDTree(np.c_[bright["x"], bright["y"]]).query(np.c_[xs, ys])
        assert np.all(d * PIX < 1.0)  # every cluster found (within the paper's 1' matching radius) ...
        assert len(set(i)) == len(xs) and len(bright) == len(xs)  # ... once, and nothing else that bright
    # tiles change nothing: same candidates, same S/N (tile margins exceed the filters' reach)
    d, i = cKDTree(np.c_[cat_s["x"], cat_s["y"]]).query(np.c_[cat_t["x"], cat_t["y"]])
    strong = cat_t["snr"] > 4.5
    assert np.all(d[strong] * PIX < 0.05)  # arcmin
    np.testing.assert_allclose(cat_t["snr"][strong], cat_s["snr"][i[strong]], rtol=0.01)
    assert set(np.unique(cat_t["tile"])) <= set(range(9)) and len(np.unique(cat_t["tile"])) > 4


def test_maps_may_be_h5py_datasets(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(33)
    maps = sky(rng, (300, 300))
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["maps"] = maps
    settings = MFSettings(theta_c_arcmin=(1.0,), tile_deg=0.5, snr_threshold=2.0)
    ref = run_mf(maps, None, PIX, settings)
    with h5py.File(tmp_path / "m.h5", "r") as f:
        cat = run_mf(f["maps"], None, PIX, settings)
    assert len(cat) == len(ref) > 0
    np.testing.assert_allclose(cat["snr"], ref["snr"], rtol=1e-6)
