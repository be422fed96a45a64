"""One observed sky: every consumer (cutouts, matched filter, dense CNN scoring, the app's band map) reads the same
pixels of each tile's one noise realisation, and the cutout set is a table plus windows of the maps, not copies."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from szviewer.cli import main
from szviewer.workspace import Workspace


def _rows_of_tile(table, k=0, n=6):
    rows = np.nonzero(np.asarray(table["tile"]) == k)[0]
    return rows[np.linspace(0, rows.size - 1, n).astype(int)]


def test_matched_filter_and_cutouts_read_identical_pixels(small_ws, tmp_path, monkeypatch):
    """What the MF job hands to the filter, at a cutout's window, is that cutout's image, bit for bit."""
    import szviewer.jobs.mf as mf_job
    from szviewer.mf.catalog import empty_catalog

    path = tmp_path / "ws"
    shutil.copytree(small_ws["path"], path)
    ws = Workspace(path)
    seen = []

    def capture(maps, wcs, pixel_arcmin, settings, **kw):
        seen.append(np.array(maps))
        return empty_catalog()

    monkeypatch.setattr("szviewer.mf.runner.run_mf", capture)
    mf_job.run_mf_on_workspace(ws)
    assert len(seen) == 1  # one tile
    with ws.cutout_store() as st:
        t = st.table
        rows = _rows_of_tile(t)
        img = st.images(rows)
        for k, r in enumerate(rows):
            y0, x0 = int(t["y0"][r]), int(t["x0"][r])
            np.testing.assert_array_equal(img[k], seen[0][:, y0:y0 + 32, x0:x0 + 32])
    # the same pixels hold the noise: the observed map minus the noiseless sky has the instrument's white level
    sky = ws.sky()
    noise = sky.tile_maps(0) - sky.tile_maps(0, tuple(sky.components))
    for b, sigma in enumerate((11.2, 10.4, 26.4)):  # 2.8, 2.6, 6.6 uK-arcmin in 0.25' pixels
        assert np.std(noise[b]) == pytest.approx(sigma, rel=0.01)


def test_overlapping_cutouts_agree_on_shared_pixels(small_ws):
    """Neighbouring cutouts share 2' (8 pixels): at every level, with noise, those pixels are the same numbers."""
    ws = Workspace(small_ws["path"])
    with ws.cutout_store() as st:
        t = st.table
        row, col, tile = (np.asarray(t[c]) for c in ("row", "col", "tile"))
        a = int(np.nonzero((row == 3) & (col == 4) & (tile == 0))[0][0])
        b = int(np.nonzero((row == 3) & (col == 5) & (tile == 0))[0][0])
        dy = int(t["y0"][b]) - int(t["y0"][a])
        dx = int(t["x0"][b]) - int(t["x0"][a])
        assert abs(dy) <= 1 and -26 <= dx <= -22  # the next cutout east is ~24 pixels to the left
        for level in ("all", "ksz", "cmb_tsz"):
            ia, ib = st.images([a, b], level)
            # pixel (i, j) of b is pixel (i + dy, j + dx) of a
            ys, xs = np.mgrid[0:32, 0:32]
            ya, xa = ys + dy, xs + dx
            ok = (ya >= 0) & (ya < 32) & (xa >= 0) & (xa < 32)
            assert ok.sum() >= 32 * 6
            np.testing.assert_array_equal(ib[:, ys[ok], xs[ok]], ia[:, ya[ok], xa[ok]])


def test_dense_scoring_reads_the_cutouts_pixels(small_ws):
    """Dense CNN scoring's map of a tile at a component level holds the cutouts' pixels of that level."""
    from szviewer.jobs.dense import level_maps

    ws = Workspace(small_ws["path"])
    sky = ws.sky()
    with ws.cutout_store() as st:
        t = st.table
        rows = _rows_of_tile(t, n=4)
        for level in ("all", "ir"):
            m = level_maps(sky, 0, tuple(st.levels[level]))
            img = st.images(rows, level)
            for k, r in enumerate(rows):
                y0, x0 = int(t["y0"][r]), int(t["x0"][r])
                np.testing.assert_array_equal(img[k], m[:, y0:y0 + 32, x0:x0 + 32])
        # one window read alone equals the same window read in a batch (the few-window path sums the same way)
        np.testing.assert_array_equal(st.images(rows[:1], "ir"), st.images(rows, "ir")[:1])


def test_band_map_background_is_the_observed_map(small_ws, tmp_path):
    """The app's band map averages the observed map (sky and noise), not the noiseless components."""
    from szviewer.gui.skymap import band_backgrounds

    path = tmp_path / "ws"
    shutil.copytree(small_ws["path"], path)
    obs = np.load(path / "maps" / "tile_0000.npy")
    obs[0] = 42.0
    np.save(path / "maps" / "tile_0000.npy", obs)
    bg = band_backgrounds([path / "tiles" / "tile_0000.h5"], pixel_arcmin=2.0)
    ok = np.isfinite(bg[90].image)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(bg[90].image[ok], 42.0, rtol=1e-6)
    assert np.nanstd(bg[148].image) > 1.0  # the other bands are the sky


def test_cutout_set_is_a_table_not_a_copy(small_ws):
    path = small_ws["path"]
    store = Workspace(path).file("cutouts", "cutouts.h5")
    with h5py.File(store, "r") as f:
        assert "images" not in f and f.attrs["pixels"] == "tiles" and int(f.attrs["version"]) == 2
        assert {"tile", "y0", "x0"} <= set(f["table"].keys())
    maps = sum(p.stat().st_size for p in (path / "maps").iterdir())
    assert store.stat().st_size < 0.02 * maps  # a table of a few columns per cutout


def test_old_workspaces_say_how_to_rebuild(small_ws, tmp_path, capsys):
    """A round-one workspace (schema 1: no observed maps, a cutout store of pixel copies) is refused with the
    commands that rebuild it, never a traceback."""
    path = tmp_path / "old"
    shutil.copytree(small_ws["path"], path)
    manifest = json.loads((path / "workspace.json").read_text())
    manifest["schema_version"] = 1
    manifest["products"]["sky"]["files"] = [f for f in manifest["products"]["sky"]["files"] if f.endswith(".h5")]
    (path / "workspace.json").write_text(json.dumps(manifest))
    shutil.rmtree(path / "maps")
    assert main(["info", str(path)]) == 0
    capsys.readouterr()
    for cmd in (["mf", str(path)], ["predict", str(path)], ["cutouts", str(path), "--overwrite"]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        assert "szviewer 0.1" in err and f"szviewer simulate --out {path} --area 4 --seed 7 --overwrite" in err
        assert "Traceback" not in err
    # a version-1 cutout store (pixel copies, noise per cutout)
    store = Workspace(path).file("cutouts", "cutouts.h5")
    with h5py.File(store, "r+") as f:
        f.attrs["version"] = 1
    from szviewer.cutouts.store import CutoutStore
    from szviewer.errors import InputError

    with pytest.raises(InputError, match="rebuild"):
        CutoutStore(store)


def test_the_same_seed_gives_the_same_observed_sky(tmp_path):
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate_workspace(tmp_path / name, SimulationSettings(area_deg2=1.0, seed=seed))
    a, b, c = (np.load(tmp_path / n / "maps" / "tile_0000.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_healpix_noise_is_a_map_of_the_healpix_pixels():
    """HEALPix skies: the noise of a cutout pixel is the noise of the HEALPix pixel it samples, so two overlapping
    cutouts see the same value there, whatever order they are read in; its sigma is depth / pixel side."""
    import healpy as hp

    from szviewer.cutouts.pixels import HealpixSamples
    from szviewer.sky.geometry import pixel_offsets, tangent_to_vec
    from szviewer.sky.pixel_noise import healpix_sigma_uk, pixel_normals

    nside = 4096
    ra = np.array([30.0, 30.0 + 4 / 60 / np.cos(np.radians(20.0))])  # 4' apart in RA: half of each is shared
    dec = np.array([20.0, 20.0])
    images = np.zeros((2, 1, 3, 32, 32), np.float32)
    src = HealpixSamples(images, None, ("skymap",), ra, dec, 32, 0.25, nside, noise_seed=3,
                         depth_uk_arcmin=[2.8, 2.6, 6.6])
    both = src.noise(np.array([0, 1]))
    alone = src.noise(np.array([1]))
    np.testing.assert_array_equal(both[1], alone[0])
    xi, eta = pixel_offsets(32, 0.25)
    v = tangent_to_vec(ra, dec, xi, eta)
    pix = hp.vec2pix(nside, v[..., 0], v[..., 1], v[..., 2], nest=True)
    shared = np.intersect1d(pix[0], pix[1])
    assert shared.size > 30  # 0.86' pixels in a 4' x 8' overlap
    for p in shared:
        a = both[0][:, pix[0] == p]
        b = both[1][:, pix[1] == p]
        assert np.all(a == a[:, :1]) and np.array_equal(a[:, 0], b[:, 0])
    # unit normals per pixel, independent of how they are asked for, and the right sigma per band
    many = np.arange(200_000, dtype=np.int64) * 7 + 11
    z = pixel_normals(3, 0, many)
    assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.01)
    np.testing.assert_array_equal(pixel_normals(3, 0, many[::-1]), z[::-1])
    assert not np.array_equal(pixel_normals(4, 0, many), z)
    side = np.degrees(hp.nside2resol(nside)) * 60
    assert healpix_sigma_uk(2.8, nside) == pytest.approx(2.8 / side, rel=1e-9)
