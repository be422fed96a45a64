"""`szviewer export-maps`: a synthetic workspace written as survey products and read back by `import --fits`.

Two real skies (the paper's instrument on 4 tiles of 0.25 deg^2; act-dr6 on one tile, with beams, 1/f,
inhomogeneous depth, an apodised edge and source holes) are exported, re-imported with every product through the
exact command the README prints, and checked on known truth: pixel size, bands, frequencies, depth against the
instrument and the hits, cutouts bit for bit against the synthetic store, beams, halos, mask holes; then every
refusal exits 2 with one line and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from szviewer.cli import main
from szviewer.cutouts.build import CutoutSettings
from szviewer.errors import Cancelled, InputError
from szviewer.jobs.cutouts import make_cutouts
from szviewer.jobs.export_maps import HALO_COLUMNS, beam_ell_max, export_maps
from szviewer.jobs.simulate import simulate_workspace
from szviewer.sky import geometry
from szviewer.sky.beams import read_beam_file
from szviewer.sky.noise_maps import footprint_mask, measure_noise
from szviewer.sky.synthetic import SimulationSettings, tile_hits
from szviewer.sky.tiles import Footprint
from szviewer.workspace import Workspace


def _sim(path, **kw):
    simulate_workspace(path, SimulationSettings(**kw))
    ws = Workspace(path)
    make_cutouts(ws, CutoutSettings())
    return ws


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The paper's instrument (no beam, white, uniform, no mask) on 1 deg^2 cut into 4 tiles."""
    return _sim(tmp_path_factory.mktemp("paper") / "ws", area_deg2=1.0, seed=5, tile_deg=0.5)


@pytest.fixture(scope="module")
def act(tmp_path_factory):
    """act-dr6 on 1 deg^2, one tile: beams, 1/f, smooth depth, a 30' apodised edge, holes around > 15 mJy."""
    return _sim(tmp_path_factory.mktemp("act") / "ws", area_deg2=1.0, seed=5, instrument="act-dr6")


def _settings(ws):
    return SimulationSettings.from_dict(ws.products["sky"]["settings"])


def _import_lines(readme: str) -> list[str]:
    return [line for line in readme.splitlines() if line.startswith("szviewer import ")]


def _run(cmd: str) -> Workspace:
    argv = shlex.split(cmd)
    assert argv[:2] == ["szviewer", "import"]
    assert main(argv[1:]) == 0
    return Workspace(argv[argv.index("--out") + 1])


def _pixel_radec(tile):
    yy, xx = np.mgrid[0:tile.ny, 0:tile.nx]
    ra, dec = tile.pix_to_world(xx.ravel(), yy.ravel())
    return np.asarray(ra).reshape(tile.shape), np.asarray(dec).reshape(tile.shape)


def _check_cutouts_bit_for_bit(ws, ws2, k: int, sky2=None, both_ways: bool = True) -> int:
    """Cutouts of tile k: the synthetic store's == the import's at the same centres, and (``both_ways``) the
    import's own store == the synthetic tiles' windows at its centres. Returns the number compared."""
    sky, sky2 = ws.sky(), sky2 or ws2.sky()
    with ws.cutout_store() as st:
        rows = np.flatnonzero(np.asarray(st.table["tile"]) == k)
        assert rows.size > 0
        want = st.images(rows)
        ra, dec = np.asarray(st.table["ra"])[rows], np.asarray(st.table["dec"])[rows]
        got = sky2.cut(ra, dec, st.npix, ws.pixel_arcmin)["skymap"]
        assert got.dtype == want.dtype == np.float32 and got.tobytes() == want.tobytes()
    if not both_ways:
        return rows.size
    make_cutouts(ws2, CutoutSettings())
    with ws2.cutout_store() as st2:
        t2 = st2.table
        ra2, dec2 = np.asarray(t2["ra"]), np.asarray(t2["dec"])
        owned = sky.owner(ra2, dec2) == k
        assert owned.mean() > 0.9
        idx = np.flatnonzero(owned)
        own, y0, x0 = sky.window_origins(ra2[idx], dec2[idx], st2.npix)
        assert np.all(own == k)
        assert st2.images(idx).tobytes() == sky.windows(own, y0, x0, st2.npix).tobytes()
    return rows.size + idx.size


def test_act_round_trip_on_known_truth(act, tmp_path, capsys):
    ws, settings = act, _settings(act)
    inst = settings.instrument
    tile = ws.sky().tiles[0]
    out = tmp_path / "act_products"
    assert main(["export-maps", str(ws.root), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    readme = (out / "README.txt").read_text()
    (cmd,) = _import_lines(readme)
    assert cmd in said
    names = {p.name for p in out.iterdir()}
    per_band = {f"{k}_{b}.{e}" for b in (90, 150, 220) for k, e in (("map", "fits"), ("ivar", "fits"), ("beam", "txt"))}
    assert names == per_band | {"mask.fits", "halos.ecsv", "sources.ecsv", "README.txt"}
    assert all(n in readme for n in ("map_<band>.fits", "ivar_<band>.fits", "beam_<band>.txt", "mask.fits",
                                     "halos.ecsv", "sources.ecsv"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # headers: unit, WCS, instrument, band, frequency, beam, seed
    for i, b in enumerate(inst.bands):
        h = fits.getheader(out / f"map_{b.band}.fits")
        assert h["BUNIT"] == "uK_CMB" and h["INSTRUME"] == "act-dr6" and h["BAND"] == b.band
        assert h["FREQ"] == b.freq_ghz and h["BEAMFWHM"] == b.beam.fwhm_arcmin and h["BEAMFILE"] == f"beam_{b.band}.txt"
        assert h["SEED"] == 5 and h["CTYPE1"] == "RA---TAN" and h["CDELT1"] < 0 < h["CDELT2"]
        np.testing.assert_allclose([h["CRVAL1"], h["CRVAL2"]], [tile.ra0, tile.dec0], rtol=0, atol=1e-12)
        assert fits.getheader(out / f"ivar_{b.band}.fits")["BUNIT"] == "1/uK^2"
        np.testing.assert_array_equal(fits.getdata(out / f"map_{b.band}.fits"), ws.sky().observed(0)[i])

    ws2 = _run(cmd)
    sky2 = ws2.sky()
    assert ws2.kind == "fits" and ws2.pixel_arcmin == 0.5 and ws2.bands == (90, 150, 220)
    assert sky2.freqs_ghz == {90: 97.8, 150: 149.6, 220: 216.5}

    # depth from ivar: white / sqrt(hits) over the usable pixels, hits from the sky's own pattern
    hits = tile_hits(settings, tile)
    usable = np.asarray(sky2.usable)
    for b in inst.bands:
        d = ws2.products["sky"]["summary"]["bands"][str(b.band)]["depth_uk_arcmin"]
        want = np.percentile(b.white_uk_arcmin / np.sqrt(hits[usable].astype(float)), [5, 50, 95])
        np.testing.assert_allclose([d["p5"], d["median"], d["p95"]], want, rtol=1e-4)
        assert d["median"] / b.white_uk_arcmin == pytest.approx(np.median(hits[usable] ** -0.5), rel=1e-4)
        assert d["p95"] / d["p5"] > 1.02  # the depth really varies over this tile

    # the ivar describes the map's own white noise: noise sqrt(ivar) has a white level of 1 uK per pixel
    noise = ws.sky().tile_maps(0) - ws.sky().tile_maps(0, ws.sky().components)
    for i, b in enumerate(inst.bands):
        unit = noise[i] * np.sqrt(fits.getdata(out / f"ivar_{b.band}.fits").astype(float))
        assert measure_noise(unit, 0.5)[0]["white_uk_arcmin"] / 0.5 == pytest.approx(1.0, abs=0.03)

    # beams: the file read back is the instrument's B_ell at every tabulated ell, and its Gaussian beyond
    ell = np.arange(beam_ell_max(0.5) + 1, dtype=float)
    for b, beam in zip(inst.bands, settings.beams(), strict=True):
        back = read_beam_file(out / f"beam_{b.band}.txt")
        np.testing.assert_allclose(back(ell), beam(ell), rtol=2e-8, atol=1e-300)
        far = np.array([40000.0, 50000.0])
        np.testing.assert_allclose(back(far), beam(far), rtol=1e-6)
        assert sky2.beams[b.band].fwhm_equivalent_arcmin() == pytest.approx(b.beam.fwhm_arcmin, rel=2e-3)

    # cutouts, bit for bit, both ways
    assert _check_cutouts_bit_for_bit(ws, ws2, 0, sky2) > 100

    # halos: the ones in the import's footprint, every value and unit
    ecsv = Table.read(out / "halos.ecsv")
    assert ecsv.colnames == list(HALO_COLUMNS) and all(ecsv[c].unit is not None for c in ecsv.colnames)
    assert str(ecsv["ra"].unit) == "deg" and str(ecsv["m_vir"].unit) == "solMass" and str(ecsv["r500"].unit) == "Mpc"
    truth = ws.halos()
    fp = Footprint(*ws2.geometry["footprint"])
    inside = truth[fp.contains(np.asarray(truth["ra"]), np.asarray(truth["dec"]))]
    back = ws2.halos()
    assert len(back) == len(inside) == ws2.products["halos"]["summary"]["rows"] > 100
    assert np.array_equal(np.sort(back["halo_id"]), np.sort(inside["halo_id"]))
    back.sort("halo_id")
    inside.sort("halo_id")
    for c in ("ra", "dec", "z", "m_vir", "r_vir", "m500", "r500", "y_int_arcmin2"):
        np.testing.assert_array_equal(np.asarray(back[c]), np.asarray(inside[c]))
        assert back[c].unit == inside[c].unit
    owned = truth[tile.owned.contains(np.asarray(truth["ra"]), np.asarray(truth["dec"]))]
    assert abs(len(back) - len(owned)) <= 2  # the footprint is the owned box, to within a pixel edge
    srcs = Table.read(out / "sources.ecsv")
    assert str(srcs["flux_150"].unit) == "mJy" and set(srcs["population"]) <= {"radio", "ir"}

    # the mask: the apodised survey edge inside the owned box, holes exactly on the bright sources
    mask = fits.getdata(out / "mask.fits")
    np.testing.assert_array_equal(np.asarray(sky2.mask), mask)
    ra, dec = _pixel_radec(tile)
    box = tuple(ws.geometry["footprint"])
    edge = footprint_mask(dataclasses.replace(inst, hole_flux_mjy=0.0), box, ra, dec) * tile.owned.contains(ra, dec)
    assert np.all(mask[edge == 0] == 0) and np.all(mask <= edge)
    allsrc = Table.read(ws.path("sources.fits"))
    bright = allsrc[np.asarray(allsrc["flux_150"]) > inst.hole_flux_mjy]
    dist = np.min([geometry.separation_arcmin(ra, dec, s["ra"], s["dec"]) for s in bright], axis=0)
    on_map = tile.owned.contains(np.asarray(bright["ra"]), np.asarray(bright["dec"]))
    assert on_map.sum() >= 1  # a bright source inside the box: its hole is on the map
    inner = edge > 0
    assert np.all(mask[inner & (dist <= inst.hole_radius_arcmin)] == 0)
    assert np.all(dist[inner & (mask == 0)] <= inst.hole_radius_arcmin + 1e-9)
    far = inner & (dist >= inst.hole_radius_arcmin + inst.hole_apod_arcmin)
    np.testing.assert_allclose(mask[far], edge[far], rtol=0, atol=1e-6)
    ramp = inner & ~far & (dist > inst.hole_radius_arcmin)
    assert ramp.any() and np.all((mask[ramp] > 0) & (mask[ramp] < edge[ramp]))


def test_paper_tiles_round_trip_and_one_tile(paper, tmp_path, capsys):
    ws, settings = paper, _settings(paper)
    sky = ws.sky()
    assert len(sky.tiles) == 4
    out = tmp_path / "paper_products"
    s = export_maps(ws, out)
    assert s["tiles"] == [0, 1, 2, 3] and s["folders"] == {k: f"tile_{k:04d}" for k in range(4)}
    assert {p.name for p in out.iterdir()} == {f"tile_{k:04d}" for k in range(4)} | {
        "halos.ecsv", "sources.ecsv", "README.txt"}
    cmds = _import_lines((out / "README.txt").read_text())
    assert cmds == s["commands"] and len(cmds) == 4
    for k, tile in enumerate(sky.tiles):
        folder = out / f"tile_{k:04d}"
        # no beam: B_ell = 1, said in the header
        text = (folder / "beam_148.txt").read_text()
        assert "no beam" in text and "B_ell = 1" in text
        flat = read_beam_file(folder / "beam_148.txt")
        np.testing.assert_array_equal(flat(np.arange(0, beam_ell_max(0.25) + 1, 0.5)), 1.0)
        np.testing.assert_allclose(flat(np.array([50000.0, 60000.0])), 1.0, rtol=1e-11)  # the reader's tail
        assert fits.getheader(folder / "map_90.fits")["BEAMFWHM"] == 0.0
        # no apodisation, no holes: 1 inside the owned box, 0 outside
        ra, dec = _pixel_radec(tile)
        np.testing.assert_array_equal(fits.getdata(folder / "mask.fits"), tile.owned.contains(ra, dec))
        ws2 = _run(cmds[k])
        sky2 = ws2.sky()
        assert ws2.root == tmp_path / "paper_products_ws" / f"tile_{k:04d}"
        assert ws2.pixel_arcmin == 0.25 and ws2.bands == (90, 148, 219)
        assert sky2.freqs_ghz == dict(zip((90, 148, 219), settings.freqs_ghz, strict=True))
        diff = np.subtract(ws2.geometry["footprint"], tile.owned.box)
        diff[:2] = (diff[:2] + 180.0) % 360.0 - 180.0  # RA 360.0 is RA 0.0
        assert np.all(np.abs(diff) < 0.26 / 60)  # the owned box, to within a pixel edge
        noise = sky.tile_maps(k) - sky.tile_maps(k, sky.components)
        for i, b in enumerate(settings.instrument.bands):  # white noise: noise sqrt(ivar) is unit normal
            ivar = fits.getdata(folder / f"ivar_{b.band}.fits")
            assert np.std(noise[i] * np.sqrt(ivar.astype(float))) == pytest.approx(1.0, abs=0.02)
        for b in settings.instrument.bands:  # uniform depth: every pixel at the instrument's white depth
            d = ws2.products["sky"]["summary"]["bands"][str(b.band)]["depth_uk_arcmin"]
            assert d["p5"] == d["median"] == d["p95"] == pytest.approx(b.white_uk_arcmin, rel=1e-5)
        assert _check_cutouts_bit_for_bit(ws, ws2, k, sky2, both_ways=k == 0) > 10

    # one tile: the files directly in DIR
    one = tmp_path / "one"
    assert main(["export-maps", str(ws.root), "--out", str(one), "--tile", "2"]) == 0
    assert "map_90.fits" in str(capsys.readouterr().out)
    assert (one / "map_90.fits").is_file() and not (one / "tile_0002").exists()
    assert fits.getheader(one / "mask.fits")["TILE"] == 2
    np.testing.assert_array_equal(fits.getdata(one / "map_219.fits"), sky.observed(2)[2])
    halos = Table.read(one / "halos.ecsv")
    assert 0 < len(halos) < len(Table.read(out / "halos.ecsv"))  # the truth on this tile's map only


def test_refusals_write_nothing(paper, tmp_path, capsys):
    root = str(paper.root)

    def refused(argv, *words):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        return err

    refused(["export-maps", root, "--out", str(tmp_path / "x"), "--tile", "9"], "no tile 9", "0-3")
    refused(["export-maps", str(tmp_path), "--out", str(tmp_path / "x")], "not an szviewer workspace")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    refused(["export-maps", root, "--out", str(tmp_path / "taken")], "already exists")
    refused(["export-maps", root, "--out", str(tmp_path / "taken"), "--overwrite"], "not a folder written by")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"

    # a workspace that is not synthetic (an import), and a synthetic one without observed maps
    export_maps(paper, tmp_path / "prod", tiles=[1])
    capsys.readouterr()
    fits_ws = _run(_import_lines((tmp_path / "prod" / "README.txt").read_text())[0])
    refused(["export-maps", str(fits_ws.root), "--out", str(tmp_path / "x")], "a fits workspace", str(fits_ws.root))
    old = tmp_path / "old"
    shutil.copytree(paper.root, old, ignore=shutil.ignore_patterns("maps", "cutouts"))
    manifest = json.loads((old / "workspace.json").read_text())
    manifest["products"]["sky"]["files"] = [f for f in manifest["products"]["sky"]["files"] if f.endswith(".h5")]
    (old / "workspace.json").write_text(json.dumps(manifest))
    refused(["export-maps", str(old), "--out", str(tmp_path / "x")], "no noise maps", "rebuild")
    broken = tmp_path / "broken"
    shutil.copytree(paper.root, broken, ignore=shutil.ignore_patterns("maps", "cutouts"))
    refused(["export-maps", str(broken), "--out", str(tmp_path / "x")], "tile_0000.npy: missing", "rebuild")

    # --overwrite replaces an earlier export, only once the new one is complete
    (tmp_path / "prod" / "stale.txt").write_text("old")
    assert main(["export-maps", root, "--out", str(tmp_path / "prod"), "--tile", "3", "--overwrite"]) == 0
    capsys.readouterr()
    assert not (tmp_path / "prod" / "stale.txt").exists()
    assert fits.getheader(tmp_path / "prod" / "mask.fits")["TILE"] == 3
    # never replace a folder that holds the workspace being exported
    shutil.copytree(paper.root, tmp_path / "prod" / "ws")
    refused(["export-maps", str(tmp_path / "prod" / "ws"), "--out", str(tmp_path / "prod"), "--overwrite"],
            "holds the workspace")
    assert (tmp_path / "prod" / "ws" / "workspace.json").is_file()


def test_cancel_and_interrupt_leave_nothing(paper, tmp_path):
    calls = []

    def cancel_on_third():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Cancelled):
        export_maps(paper, tmp_path / "c", cancelled=cancel_on_third)

    def interrupt(done, total, message):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_maps(paper, tmp_path / "c", progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no tile -1"):
        export_maps(paper, tmp_path / "c", tiles=[-1])
    assert list(tmp_path.iterdir()) == []


def _tree_bytes(folder) -> dict:
    """{relative path: bytes} of every file under ``folder`` (and the folders, as None)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_a_failed_overwrite_leaves_the_old_export_byte_identical(paper, tmp_path, monkeypatch):
    """--overwrite writes the new export beside the old one: a write failing midway (after the first file) or a
    cancel leaves the earlier export byte for byte and no temporary folder (szviewer.atomic.atomic_dir)."""
    import szviewer.jobs.export_maps as em

    out = tmp_path / "prod"
    export_maps(paper, out, tiles=[0, 1])
    before = _tree_bytes(out)
    assert "tile_0000/map_148.fits" in before and "README.txt" in before
    real_write = em._write_image
    calls = []

    def fail_after_first(path, data, header):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real_write(path, data, header)

    monkeypatch.setattr(em, "_write_image", fail_after_first)
    with pytest.raises(OSError, match="No space left"):
        export_maps(paper, out, tiles=[2], overwrite=True)
    assert len(calls) == 2 and calls[0].is_relative_to(tmp_path) and not calls[0].is_relative_to(out)
    assert _tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod"]  # no .prod.partial-* left
    monkeypatch.setattr(em, "_write_image", real_write)

    checks = []

    def cancel_midway():  # the third check: after the first band's files are written
        checks.append(1)
        return len(checks) >= 3

    with pytest.raises(Cancelled):
        export_maps(paper, out, tiles=[2], overwrite=True, cancelled=cancel_midway)
    assert _tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod"]

    # and a complete one replaces it
    export_maps(paper, out, tiles=[2], overwrite=True)
    assert fits.getheader(out / "mask.fits")["TILE"] == 2 and not (out / "tile_0000").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod"]


def test_atomic_dir_replaces_only_a_complete_folder(tmp_path, monkeypatch):
    import os

    from szviewer.atomic import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out) as d:
        assert d.parent == tmp_path and d.name.startswith(".out.partial-") and not out.exists()
        (d / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one" and (out.stat().st_mode & 0o777) != 0o700
    with pytest.raises(FileExistsError), atomic_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as d:
        (d / "b.txt").write_text("two")
        raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "a.txt").read_text() == "one"

    # the swap itself failing puts the old folder back
    real_replace = os.replace

    def refuse_new(src, dst):
        if ".partial-" in str(src) and "-old-" not in str(src) and "-old-" not in str(dst):
            raise OSError(5, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_new)
    with pytest.raises(OSError, match="I/O error"), atomic_dir(out, overwrite=True) as d:
        (d / "b.txt").write_text("two")
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and sorted(p.name for p in out.iterdir()) == ["a.txt"]

    with atomic_dir(out, overwrite=True) as d:
        (d / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
