"""Survey products in: per-band map, ivar, beam and frequency, plus one mask, through `szviewer import --fits`.

Real FITS files are written with astropy (CAR, 0.5' pixels, as ACT ships them); every recorded value, memory-mapped
pixel, beam, footprint, depth and cutout is checked against what was written, and every bad input exits 2 with one
line naming the file, leaving nothing behind.
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from szviewer.cli import main
from szviewer.errors import InputError
from szviewer.sky.beams import gaussian_bell
from szviewer.sky.fits_maps import open_fits_maps
from szviewer.workspace import Workspace

PIX = 0.5  # arcmin
SHAPE = (120, 160)  # 60' x 80'
DEPTH = {98: 10.0, 150: 14.0, 220: 30.0}  # uK-arcmin
FREQ = {98: 97.8, 150: 149.6}  # --freq given; 220 takes its band id
DEEP_150 = 7.0  # uK-arcmin, in rows 90+ of band 150
HOLE = (60, 100, 6)  # row, column, radius [pixels] of a masked hole around a "bright source"


def car_wcs(shape=SHAPE, crval=(30.0, 0.0), pix=PIX, cdelt1_sign=-1.0):
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = [cdelt1_sign * pix / 60.0, pix / 60.0]
    return w


def write(path, data, w, bunit=None):
    h = w.to_header()
    if bunit:
        h["BUNIT"] = bunit
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=h).writeto(path)
    return path


def beam_table(path, fwhm, ncol=2, ell_max=20000):
    ell = np.arange(ell_max + 1, dtype=float)
    cols = [ell, gaussian_bell(ell, fwhm)][:ncol]
    np.savetxt(path, np.column_stack(cols), header="ell B_ell")
    return path


class Survey:
    """Files of a CAR survey at 0.5' on disk, and the arrays written into them."""

    def __init__(self, d, bands, w=None):
        self.d, self.bands, self.w = d, tuple(bands), w or car_wcs()
        rng = np.random.default_rng(7)
        ny, nx = SHAPE
        yy, xx = np.mgrid[:ny, :nx]
        self.maps, self.ivars, self.files, self.ivar_files = {}, {}, {}, {}
        for b in self.bands:
            self.maps[b] = rng.normal(0, 20, SHAPE).astype(np.float32)
            ivar = np.full(SHAPE, 1.0 / (DEPTH[b] / PIX) ** 2, np.float32)  # sigma = depth / pixel side
            ivar[:, :8] = 0.0  # no data in the 8 easternmost columns
            if b == 150:
                ivar[90:] = 1.0 / (DEEP_150 / PIX) ** 2  # a deep northern strip: 27% of the usable pixels
            self.ivars[b] = ivar
            self.files[b] = write(d / f"map_{b}.fits", self.maps[b], self.w, "uK_CMB")
            self.ivar_files[b] = write(d / f"ivar_{b}.fits", ivar, self.w)
        mask = np.ones(SHAPE, np.float32)
        mask[:10] = 0.0  # southern rows outside the footprint
        mask[10:14] = 0.5  # apodised edge
        mask[:, -6:] = 0.0  # western columns outside
        r, c, rad = HOLE
        mask[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = 0.0
        self.mask = mask
        self.mask_file = write(d / "mask.fits", mask, self.w)
        self.beam_file = beam_table(d / "beam_150.txt", 1.4)

    def usable(self):
        ok = self.mask > 0
        for b in self.bands:
            ok &= self.ivars[b] > 0
        return ok

    def args(self, out, extra=(), beams=None, freqs=None):
        """argv of the import; ``beams`` / ``freqs`` replace the defaults (98: 2.0', 150: the beam file)."""
        beams = {98: "2.0", 150: str(self.beam_file)} | (beams or {})
        freqs = {b: str(f) for b, f in FREQ.items()} | (freqs or {})
        a = ["import"]
        for b in self.bands:
            a += ["--fits", f"{b}={self.files[b]}", "--ivar", f"{b}={self.ivar_files[b]}"]
        a += [x for b, v in beams.items() for x in ("--beam", f"{b}={v}")]
        a += [x for b, v in freqs.items() for x in ("--freq", f"{b}={v}")]
        return a + ["--mask", str(self.mask_file), *extra, "--out", str(out)]


@pytest.fixture(params=[(98, 150), (98, 150, 220)], ids=["two-band", "three-band"])
def survey(request, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    return Survey(d, request.param)


def test_import_records_and_reopens_survey_products(survey, tmp_path, capsys):
    out = tmp_path / "ws"
    assert main(survey.args(out)) == 0
    said = capsys.readouterr().out
    assert f"{len(survey.bands)} band(s)" in said and "0.5' pixels" in said
    assert ("220 GHz" in said and "no beam recorded" in said) == (220 in survey.bands)

    ws = Workspace(out)
    assert ws.kind == "fits" and ws.bands == survey.bands and ws.pixel_arcmin == PIX
    sky_entry = ws.products["sky"]
    prov = sky_entry["provenance"]
    json.dumps(prov)
    assert prov["mask"] == str(survey.mask_file.resolve())
    for b in survey.bands:
        e = prov["bands"][str(b)]
        assert e["map"] == str(survey.files[b].resolve()) and e["ivar"] == str(survey.ivar_files[b].resolve())
        assert e["freq_ghz"] == FREQ.get(b, float(b))
    assert prov["bands"]["98"]["beam"] == {"fwhm_arcmin": 2.0, "source": "2.0"}
    b150 = prov["bands"]["150"]["beam"]
    assert b150["path"] == str(survey.beam_file.resolve()) and b150["source"] == str(survey.beam_file)
    assert b150["fwhm_equivalent_arcmin"] == pytest.approx(1.4, rel=2e-3)
    if 220 in survey.bands:
        assert prov["bands"]["220"]["beam"] is None

    # the reopened sky carries ivar, mask, beams and frequencies
    sky = ws.sky()
    assert sky.bands == survey.bands and sky.freqs_ghz == {b: FREQ.get(b, float(b)) for b in survey.bands}
    ell = np.array([0.0, 500.0, 1000.0, 3000.0, 8000.0])
    np.testing.assert_allclose(sky.beams[98](ell), np.exp(-ell * (ell + 1) * (2.0 * math.pi / 10800) ** 2
                                                          / (16 * math.log(2))), rtol=1e-12)
    np.testing.assert_allclose(sky.beams[150](ell), gaussian_bell(ell, 1.4), atol=1e-7)
    assert sky.beams[150](ell)[3] == pytest.approx(0.8740, abs=1e-4)  # B_3000 of a 1.4' Gaussian
    if 220 in survey.bands:
        assert sky.beams[220] is None
    for b in survey.bands:
        iv = sky.ivar(b)
        assert isinstance(iv, np.memmap) and iv.dtype.type is np.float32 and iv.shape == SHAPE
        np.testing.assert_array_equal(np.asarray(iv), survey.ivars[b])
        assert iv[50, 4] == 0.0 and iv[50, 50] == pytest.approx(PIX**2 / DEPTH[b] ** 2, rel=1e-6)
    assert set(sky.ivar_maps()) == set(survey.bands)
    m = sky.mask
    assert isinstance(m, np.memmap) and m.dtype.type is np.float32
    np.testing.assert_array_equal(np.asarray(m), survey.mask)
    assert m[HOLE[0], HOLE[1]] == 0.0 and m[11, 50] == 0.5 and m[50, 50] == 1.0
    np.testing.assert_array_equal(sky.usable, survey.usable())

    # footprint: the bounding box of the pixels the mask and ivar leave usable
    rows = np.flatnonzero(survey.usable().any(axis=1))
    cols = np.flatnonzero(survey.usable().any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (10, SHAPE[0] - 1, 8, SHAPE[1] - 7)
    ra_e, dec_s = survey.w.all_pix2world(cols[0] - 0.5, rows[0] - 0.5, 0)  # east (low column), south edges
    ra_w, dec_n = survey.w.all_pix2world(cols[-1] + 0.5, rows[-1] + 0.5, 0)
    np.testing.assert_allclose(ws.geometry["footprint"], [ra_w, ra_e, dec_s, dec_n], atol=1e-9)

    # depth summary: depth = sqrt(1 / ivar) * pixel side, over usable pixels (CAR: side^2 = dx dy cos Dec)
    summ = sky_entry["summary"]
    dec_rows = survey.w.all_pix2world(np.full(SHAPE[0], 79.5), np.arange(SHAPE[0]), 0)[1]
    side = PIX * np.sqrt(np.cos(np.deg2rad(dec_rows)))[:, None] * np.ones(SHAPE)
    for b in survey.bands:
        d = summ["bands"][str(b)]["depth_uk_arcmin"]
        assert d["median"] == pytest.approx(DEPTH[b], rel=1e-4)  # near the equator cos Dec ~ 1
        ok = survey.usable()
        want = np.percentile(np.sqrt(1.0 / survey.ivars[b][ok].astype(float)) * side[ok], [5, 50, 95])
        np.testing.assert_allclose([d["p5"], d["median"], d["p95"]], want, rtol=2e-5)
        assert d["p5"] == pytest.approx(DEEP_150 if b == 150 else DEPTH[b], rel=1e-4)
        assert d["p95"] == pytest.approx(DEPTH[b], rel=1e-4)
    assert summ["usable_fraction"] == pytest.approx(survey.usable().mean(), abs=1e-6)
    assert summ["mask"]["usable_fraction"] == pytest.approx((survey.mask > 0).mean(), abs=1e-6)
    assert summ["mask"]["mean"] == pytest.approx(survey.mask.mean(), abs=1e-6)
    assert sky.depth_summary() == {k: summ[k] for k in ("usable_fraction",)} | {
        "bands": {b: {"ivar": True, "depth_uk_arcmin": summ["bands"][b]["depth_uk_arcmin"]} for b in summ["bands"]},
        "mask": {k: v for k, v in summ["mask"].items() if k != "file"}}

    # cut at the map's 0.5' pixels: 8' = 16 pixels, the very pixels written, rows S->N, columns E->W
    ra_c, dec_c = survey.w.all_pix2world(79.5, 59.5, 0)  # a pixel corner: block rows 52-67, columns 72-87
    cube = sky.cut(float(ra_c), float(dec_c), 16, PIX)["skymap"]
    assert cube.shape == (1, len(survey.bands), 16, 16) and cube.dtype == np.float32
    for i, b in enumerate(survey.bands):
        np.testing.assert_array_equal(cube[0, i], survey.maps[b][52:68, 72:88])
    ra_px, dec_px = survey.w.all_pix2world(*np.meshgrid(np.arange(72, 88), np.arange(52, 68)), 0)
    assert np.all(np.diff(ra_px, axis=1) < 0) and np.all(np.diff(dec_px, axis=0) > 0)  # east left, north up
    with pytest.raises(InputError, match="map's own pixel size"):
        sky.cut(float(ra_c), float(dec_c), 32, 0.25)

    # pickling re-opens every file
    clone = pickle.loads(pickle.dumps(sky))
    assert len(pickle.dumps(sky)) < 4000
    assert clone.freqs_ghz == sky.freqs_ghz and clone.mask_file == sky.mask_file
    np.testing.assert_array_equal(np.asarray(clone.ivar(98)), survey.ivars[98])
    np.testing.assert_allclose(clone.beams[150](ell), sky.beams[150](ell))
    np.testing.assert_array_equal(clone.cut(float(ra_c), float(dec_c), 16, PIX)["skymap"], cube)

    # `szviewer info` prints per band freq, beam, ivar and depth, and the mask's usable fraction
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "pixels 0.5'" in info
    assert "98 GHz" in info and "freq 97.8 GHz" in info and "beam 2' FWHM Gaussian" in info
    assert "beam table beam_150.txt (FWHM-equivalent 1.4')" in info
    assert "ivar ivar_98.fits, depth 10 uK-arcmin (5-95%: 10-10)" in info
    assert "ivar ivar_150.fits, depth 14 uK-arcmin (5-95%: 7-14)" in info
    assert f"mask.fits: {100 * (survey.mask > 0).mean():.1f}% of pixels usable" in info
    if 220 in survey.bands:
        assert "freq 220 GHz (the band id)" in info and "no beam recorded" in info


def test_depth_uses_the_true_pixel_area_of_car(tmp_path):
    """At Dec -60 a CAR pixel covers dx dy cos(Dec) of sky, so the same ivar means a depth sqrt(cos 60) lower."""
    w = car_wcs((40, 40), crval=(30.0, 0.0))
    w.wcs.crpix = [20.5, 20.5 + 60 * 60 / PIX]  # the map's centre at Dec -60 (CAR about the equator)
    ivar = np.full((40, 40), 1.0 / (10.0 / PIX) ** 2, np.float32)
    sky = open_fits_maps({98: write(tmp_path / "m.fits", np.zeros((40, 40)), w, "uK")},
                         ivar={98: write(tmp_path / "iv.fits", ivar, w)})
    dec = w.all_pix2world(20.0, 20.0, 0)[1]
    assert dec == pytest.approx(-60.0, abs=0.01)
    med = sky.depth_summary()["bands"]["98"]["depth_uk_arcmin"]["median"]
    assert med == pytest.approx(10.0 * math.sqrt(math.cos(math.radians(dec))), rel=1e-3)
    assert sky.depth_summary()["mask"] is None


def test_flipped_ra_axis_and_old_paper_maps(tmp_path, capsys):
    """RA increasing with column (CDELT1 > 0) is flipped to east-left; three 0.25' bands without extras still work."""
    d = tmp_path / "in"
    d.mkdir()
    w = car_wcs(cdelt1_sign=+1.0)
    data = np.arange(SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
    sky = open_fits_maps({150: write(d / "f.fits", data, w, "uK_CMB")})
    ra_c, dec_c = w.all_pix2world(79.5, 59.5, 0)
    cube = sky.cut(float(ra_c), float(dec_c), 16, PIX)["skymap"]
    np.testing.assert_array_equal(cube[0, 0], data[52:68, 72:88][:, ::-1])
    assert sky.beams == {150: None} and sky.freqs_ghz == {150: 150.0} and sky.mask is None and sky.ivar(150) is None

    old = car_wcs((80, 100), pix=0.25)
    args = ["import"]
    for b in (90, 148, 219):
        args += ["--fits", f"{b}={write(d / f'p{b}.fits', np.zeros((80, 100)), old, 'uK_CMB')}"]
    assert main(args + ["--out", str(tmp_path / "paper")]) == 0
    said = capsys.readouterr().out
    assert said.count("no beam recorded") == 3 and said.count("no ivar map") == 3
    ws = Workspace(tmp_path / "paper")
    assert ws.bands == (90, 148, 219) and ws.pixel_arcmin == 0.25
    assert ws.sky().cut(30.0, 0.0)["skymap"].shape == (1, 3, 32, 32)
    # a workspace recorded before survey products (provenance with only 'maps') still opens
    manifest = json.loads((tmp_path / "paper" / "workspace.json").read_text())
    prov = manifest["products"]["sky"]["provenance"]
    for key in ("bands", "ivar_files", "mask", "mask_file"):
        del prov[key]
    (tmp_path / "paper" / "workspace.json").write_text(json.dumps(manifest))
    sky = Workspace(tmp_path / "paper").sky()
    assert sky.bands == (90, 148, 219) and sky.ivar(90) is None and sky.beams[148] is None


# ------------------------------------------------------------------------------------------------ bad input

#: kind -> (how to spoil the survey's files, extra argv, the text its one-line error must hold)
BAD = {
    "ivar shape": ("ivar150", ["ivar_bad.fits"]), "ivar wcs": ("ivar150", ["ivar_bad.fits", "CRVAL"]),
    "ivar negative": ("ivar150", ["ivar_bad.fits", "negative"]), "ivar nan": ("ivar150", ["ivar_bad.fits", "NaN"]),
    "beam one column": ("beam", ["beam_bad.txt", "column"]), "beam ell not increasing": ("beam", ["beam_bad.txt",
                                                                                                  "not increasing"]),
    "mask covers everything": ("mask", ["mask_bad.fits", "covers everything"]),
    "mask out of range": ("mask", ["mask_bad.fits", "[0, 1]"]), "mask grid": ("mask", ["mask_bad.fits", "grid"]),
    "band twice": ("argv", ["map_98.fits", "map_150.fits", "twice"]),
    "ivar without map": ("argv", ["ivar_98.fits", "220 GHz", "no map"]),
    "beam without map": ("argv", ["220 GHz", "no map"]), "freq without map": ("argv", ["220 GHz", "no map"]),
    "freq -5": ("argv", ["150 GHz", "frequency"]), "freq 0": ("argv", ["150 GHz", "frequency"]),
    "freq nan": ("argv", ["150 GHz", "frequency"]), "fwhm -1.2": ("argv", ["150 GHz", "FWHM"]),
    "fwhm nan": ("argv", ["150 GHz", "FWHM"]),
}


def _spoil(s: Survey, kind: str):
    """Spoil one input of ``s``; returns (extra argv, beams, freqs) for :meth:`Survey.args`."""
    d, shifted = s.d, car_wcs(crval=(30.01, 0.0))
    iv = s.ivars[150].copy()
    if kind == "ivar shape":
        s.ivar_files[150] = write(d / "ivar_bad.fits", np.ones((100, 160)), s.w)
    elif kind == "ivar wcs":
        s.ivar_files[150] = write(d / "ivar_bad.fits", iv, shifted)
    elif kind in ("ivar negative", "ivar nan"):
        iv[30, 40] = -1.0 if kind == "ivar negative" else np.nan
        s.ivar_files[150] = write(d / "ivar_bad.fits", iv, s.w)
    elif kind == "beam one column":
        s.beam_file = beam_table(d / "beam_bad.txt", 1.4, ncol=1)
    elif kind == "beam ell not increasing":
        s.beam_file = d / "beam_bad.txt"
        np.savetxt(s.beam_file, [[0, 1.0], [2000, 0.8], [1000, 0.9], [3000, 0.5]])
    elif kind.startswith("mask"):
        m = {"mask covers everything": np.zeros(SHAPE), "mask out of range": np.where(s.mask > 0, 2.0, 0.0),
             "mask grid": s.mask}[kind]
        s.mask_file = write(d / "mask_bad.fits", m, shifted if kind == "mask grid" else s.w)
    extra = {"band twice": ["--fits", f"98={s.files[150]}"], "ivar without map": ["--ivar", f"220={s.ivar_files[98]}"],
             "beam without map": ["--beam", "220=1.0"], "freq without map": ["--freq", "220=216.5"]}.get(kind, [])
    freqs = {150: kind.split()[1]} if kind.startswith("freq ") and kind != "freq without map" else None
    beams = {150: kind.split()[1]} if kind.startswith("fwhm ") else None
    return extra, beams, freqs


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, kind):
    d = tmp_path / "in"
    d.mkdir()
    s = Survey(d, (98, 150))
    extra, beams, freqs = _spoil(s, kind)
    out = tmp_path / "out"
    out.mkdir()
    assert main(s.args(out / "ws", extra, beams, freqs)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("szviewer: error: "), err
    for text in BAD[kind][1]:
        assert text in err, (text, err)
    assert list(out.iterdir()) == []  # no workspace and no hidden partial folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_bad_input_messages(tmp_path):
    """The sky layer's messages name the file, the band, the count and the first bad pixel."""
    d = tmp_path / "in"
    d.mkdir()
    s = Survey(d, (98, 150))
    iv = s.ivars[150].copy()
    iv[30, 40] = -2.5
    iv[31, 40] = -1.0
    neg = write(d / "neg.fits", iv, s.w)
    with pytest.raises(InputError, match=r"neg\.fits: 2 pixel\(s\) of inverse variance \(band 150 GHz\) are "
                                         r"negative \(first at row 30, column 40: -2\.5\)"):
        open_fits_maps(s.files, ivar={150: neg})
    small = write(d / "small.fits", np.ones((60, 80)), car_wcs((60, 80)))
    with pytest.raises(InputError, match=r"small\.fits: inverse-variance map's pixel grid differs from its map "
                                         r".*map_150\.fits: shape"):
        open_fits_maps(s.files, ivar={150: small})
    with pytest.raises(InputError, match=r"small\.fits: inverse-variance map for band 220 GHz, which has no map"):
        open_fits_maps(s.files, ivar={220: small})
    with pytest.raises(InputError, match="band 98 GHz: effective frequency nan GHz must be a finite number > 0"):
        open_fits_maps(s.files, freqs={98: float("nan")})
    with pytest.raises(InputError, match="band 150 GHz: beam FWHM -1.0 arcmin"):
        open_fits_maps(s.files, beams={150: "-1"})
    rect = car_wcs((20, 20))
    rect.wcs.cdelt = [-0.5 / 60, 0.6 / 60]
    sky = open_fits_maps({98: write(d / "rect.fits", np.zeros((20, 20)), rect, "uK")})
    with pytest.raises(InputError, match=r"rect\.fits: pixels are 0\.5' x 0\.6'"):
        sky.square_pixel_arcmin()
