"""Sehgal HEALPix maps: header checks, unit conversion, orientation and exactness of the cutouts.

Files are built here in Sehgal's format (FITS binary table, column 'signal', 1024-pixel rows, PIXTYPE,
ORDERING, NSIDE, TUNIT1) at low Nside so the tests stay fast (SCIENCE.md section 1).
"""

from __future__ import annotations

import json
import os
import shutil

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from szviewer.errors import InputError
from szviewer.sky.bands import jy_sr_to_uk, tsz_uk_per_y
from szviewer.sky.geometry import separation_arcmin
from szviewer.sky.sehgal import open_healpix_map, open_sehgal_dir

NSIDE = 256
NPIX = 12 * NSIDE**2


def write_healpix(path, m, nside=NSIDE, ordering="RING", unit="Jy/sr", repeat=1024, nside_kw=None,
                  extra_first_column=False):
    """Write ``m`` as a Sehgal-like HEALPix binary table (astropy only)."""
    m = np.asarray(m, dtype=np.float32)
    cols = []
    if extra_first_column:
        zeros = np.zeros((m.size // repeat, repeat))
        cols.append(fits.Column(name="other", format=f"{repeat}E", array=zeros))
    cols.append(fits.Column(name="signal", format=f"{repeat}E", unit=unit, array=m.reshape(-1, repeat)))
    tbl = fits.BinTableHDU.from_columns(cols)
    h = tbl.header
    h["PIXTYPE"] = "HEALPIX"
    if ordering is not None:
        h["ORDERING"] = ordering
    h["NSIDE"] = nside if nside_kw is None else nside_kw
    h["FIRSTPIX"] = 0
    h["LASTPIX"] = m.size - 1
    h["INDXSCHM"] = "IMPLICIT"
    h["OBJECT"] = "FULLSKY"
    fits.HDUList([fits.PrimaryHDU(), tbl]).writeto(path, overwrite=True)
    return path


@pytest.fixture(scope="module")
def index_map_file(tmp_path_factory):
    """A RING map whose value is the pixel index (exact in float32 at Nside 256), in uK."""
    d = tmp_path_factory.mktemp("base")
    return write_healpix(d / "index_map.fits", np.arange(NPIX, dtype=np.float32), unit="uK_CMB")


def make_dir(tmp_path, files: dict[str, object]):
    """files: name -> source path (hard-linked) or array (written in Jy/sr)."""
    d = tmp_path / "sehgal"
    d.mkdir(exist_ok=True)
    for name, src in files.items():
        if isinstance(src, np.ndarray):
            write_healpix(d / name, src)
        else:
            os.link(src, d / name)
    return d


def all_bands(component, src):
    return {f"{b}_{component}_healpix.fits": src for b in ("090", "148", "219")}


def tan_reference_pixels(ra_c, dec_c, npix, pixel_arcmin, nside=NSIDE, nest=False):
    """Independent expectation: astropy's TAN WCS gives each cutout pixel's RA/Dec, healpy its pixel."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra_c, dec_c]
    w.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
    w.wcs.cdelt = [-pixel_arcmin / 60.0, pixel_arcmin / 60.0]
    jj, ii = np.meshgrid(np.arange(npix), np.arange(npix))
    ra, dec = w.all_pix2world(jj, ii, 0)
    return hp.ang2pix(nside, ra, dec, lonlat=True, nest=nest)


def test_cut_matches_independent_tan_projection(tmp_path, index_map_file):
    d = make_dir(tmp_path, {**all_bands("lensedcmb", index_map_file), **all_bands("tsz", index_map_file)})
    sky = open_sehgal_dir(d)
    assert sky.nside == NSIDE and sky.components == ("cmb", "tsz") and sky.bands == (90, 148, 219)
    ra = np.array([10.0, 45.3, 89.9, 359.95, 200.0, 30.0])
    dec = np.array([5.0, 44.1, 0.2, 10.0, -60.0, 89.5])
    for pixel_arcmin in (3.0, 20.0):
        out = sky.cut(ra, dec, npix=32, pixel_arcmin=pixel_arcmin)
        assert set(out) == {"cmb", "tsz"}
        assert out["cmb"].shape == (6, 3, 32, 32) and out["cmb"].dtype == np.float32
        for k in range(ra.size):
            expect = tan_reference_pixels(ra[k], dec[k], 32, pixel_arcmin)
            got = out["cmb"][k, 1].astype(np.int64)
            assert np.mean(got == expect) > 0.999
            np.testing.assert_array_equal(out["cmb"][k, 0], out["tsz"][k, 2])


def test_orientation_east_left_north_up(tmp_path):
    nside = 512
    ra0, dec0 = 30.0, 40.0
    m = np.zeros(12 * nside**2, dtype=np.float32)
    east = hp.ang2pix(nside, ra0 + (20 / 60) / np.cos(np.deg2rad(dec0)), dec0, lonlat=True)
    north = hp.ang2pix(nside, ra0, dec0 + 20 / 60, lonlat=True)
    m[east] = 1000.0
    m[north] = 2000.0
    path = write_healpix(tmp_path / "src.fits", m, nside=nside, unit="uK")
    d = make_dir(tmp_path, all_bands("skymap", path))
    sky = open_sehgal_dir(d)
    img = sky.cut(ra0, dec0, npix=32, pixel_arcmin=2.0)["skymap"][0, 0]
    ri, ci = np.nonzero(img == 1000.0)
    assert ri.size and ci.mean() < 15.5 - 7 and abs(ri.mean() - 15.5) < 3  # 20' east = 10 pixels left
    ri, ci = np.nonzero(img == 2000.0)
    assert ri.size and ri.mean() > 15.5 + 7 and abs(ci.mean() - 15.5) < 3  # 20' north = 10 pixels up
    # the hot pixels' positions agree with the healpix pixel centres to within a healpix pixel
    ra_e, dec_e = hp.pix2ang(nside, east, lonlat=True)
    assert separation_arcmin(ra0, dec0, ra_e, dec_e) < 25


def test_units_jy_sr_converted_per_band(tmp_path):
    ones = np.ones(NPIX, dtype=np.float32)
    d = make_dir(tmp_path, all_bands("skymap", ones))  # written with TUNIT1 = 'Jy/sr'
    sky = open_sehgal_dir(d)
    out = sky.cut([10.0, 50.0], [20.0, 60.0])["skymap"]
    cfac = {90: 5.526540e8, 148: 1.072480e9, 219: 1.318837e9}  # SCIENCE.md section 1
    for ib, band in enumerate(sky.bands):
        expect = 2.726e6 / cfac[band]
        np.testing.assert_allclose(out[:, ib], expect, rtol=1e-4)
        assert jy_sr_to_uk(band) == pytest.approx(expect, rel=1e-4)
    desc = sky.describe()
    json.dumps(desc)
    assert desc["nside"] == NSIDE and len(desc["files"]) == 3
    f0 = desc["files"][0]
    assert f0["name"] == "090_skymap_healpix.fits" and f0["unit"] == "Jy/sr" and f0["ordering"] == "RING"
    assert f0["size"] > 0 and "mtime" in f0


@pytest.mark.parametrize("unit,factor", [("uK", 1.0), ("muK", 1.0), ("uK_CMB", 1.0), ("K_CMB", 1e6),
                                         ("mK", 1e3), ("MJy/sr", None)])
def test_other_units(tmp_path, unit, factor):
    path = write_healpix(tmp_path / "m.fits", np.full(NPIX, 2.0, np.float32), unit=unit)
    m = open_healpix_map(path, 148, "cmb")
    out = np.empty(4, np.float32)
    m.gather(np.arange(4), out)
    expect = 2.0 * (factor if factor is not None else 1e6 * jy_sr_to_uk(148))
    np.testing.assert_allclose(out, expect, rtol=1e-6)


def test_compton_y_only_for_tsz(tmp_path):
    path = write_healpix(tmp_path / "y.fits", np.full(NPIX, 1e-5, np.float32), unit="Compton-y")
    m = open_healpix_map(path, 90, "tsz")
    out = np.empty(3, np.float32)
    m.gather(np.arange(3), out)
    np.testing.assert_allclose(out, 1e-5 * tsz_uk_per_y(90), rtol=1e-5)
    assert out[0] == pytest.approx(-43.56, rel=2e-3)
    with pytest.raises(InputError, match="y.fits"):
        open_healpix_map(path, 90, "cmb")


def test_nested_ordering_read_correctly(tmp_path, index_map_file):
    ring = np.arange(NPIX, dtype=np.float32)
    nested = ring[hp.nest2ring(NSIDE, np.arange(NPIX))]  # value at nested index q = ring index of q
    npath = write_healpix(tmp_path / "nested.fits", nested, ordering="NESTED", unit="uK")
    d = make_dir(tmp_path, {"090_skymap_healpix.fits": npath, "148_skymap_healpix.fits": index_map_file,
                            "219_skymap_healpix.fits": npath})
    sky = open_sehgal_dir(d)
    assert sky.maps[("skymap", 90)].nest and not sky.maps[("skymap", 148)].nest
    out = sky.cut([12.0, 80.0], [33.0, -10.0], pixel_arcmin=5.0)["skymap"]
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    np.testing.assert_array_equal(out[:, 2], out[:, 1])


def test_healpy_written_map_and_second_column(tmp_path):
    m = np.arange(NPIX, dtype=np.float32)
    hp_path = tmp_path / "hp.fits"
    hp.write_map(hp_path, m, column_names=["signal"], column_units="uK_CMB", dtype=np.float32)
    two = write_healpix(tmp_path / "two.fits", m, unit="uK", extra_first_column=True)
    one = open_healpix_map(hp_path, 90, "skymap")
    other = open_healpix_map(two, 90, "skymap")
    assert one.data.ndim == 1 and other.data.ndim == 2  # strided column read without copying the map
    assert isinstance(one.data, np.memmap) and isinstance(other.data, np.memmap)
    pix = np.array([[0, 5, 1023], [1024, 700000, NPIX - 1]])
    a = np.empty(pix.shape, np.float32)
    b = np.empty(pix.shape, np.float32)
    one.gather(pix, a)
    other.gather(pix, b)
    np.testing.assert_array_equal(a, pix)
    np.testing.assert_array_equal(b, pix)


def test_all_components_mapped_and_subset(tmp_path, index_map_file):
    files = {}
    for comp in ("lensedcmb", "unlensedcmb", "tsz", "ksz", "ir_pts", "rad_pts", "dust", "skymap"):
        files.update(all_bands(comp, index_map_file))
    files["030_tsz_healpix.fits"] = index_map_file  # other bands ignored
    sky = open_sehgal_dir(make_dir(tmp_path, files))
    assert sky.components == ("cmb", "tsz", "ksz", "ir", "radio", "dust", "skymap")
    assert sky.files[("ir", 148)].name == "148_ir_pts_healpix.fits"
    assert sky.files[("radio", 219)].name == "219_rad_pts_healpix.fits"
    out = sky.cut(np.array([1.0, 2.0]), np.array([3.0, 4.0]), components=["radio", "ksz"])
    assert list(out) == ["radio", "ksz"]
    with pytest.raises(ValueError, match="unlensed"):
        sky.cut(1.0, 2.0, components=["unlensed"])
    assert sky.cut(np.array([]), np.array([]))["cmb"].shape == (0, 3, 32, 32)


def test_missing_band_names_missing_file(tmp_path, index_map_file):
    files = {**all_bands("lensedcmb", index_map_file), **all_bands("tsz", index_map_file)}
    del files["148_tsz_healpix.fits"]
    with pytest.raises(InputError, match="148_tsz_healpix.fits"):
        open_sehgal_dir(make_dir(tmp_path, files))


def test_needs_cmb_and_tsz_or_skymap(tmp_path, index_map_file):
    d = make_dir(tmp_path, {**all_bands("ksz", index_map_file), **all_bands("lensedcmb", index_map_file)})
    with pytest.raises(InputError, match="skymap"):
        open_sehgal_dir(d)
    with pytest.raises(InputError, match="no such directory"):
        open_sehgal_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Sehgal maps"):
        open_sehgal_dir(tmp_path / "empty")


def test_bad_nside_and_pixel_count(tmp_path):
    p = write_healpix(tmp_path / "nside384.fits", np.zeros(12 * 384**2, np.float32), nside=384)
    with pytest.raises(InputError, match=r"nside384\.fits.*power of 2"):
        open_healpix_map(p, 90, "cmb")
    p = write_healpix(tmp_path / "lying.fits", np.zeros(NPIX, np.float32), nside_kw=512)
    with pytest.raises(InputError, match=r"lying\.fits.*12 Nside\^2"):
        open_healpix_map(p, 90, "cmb")


def test_bad_unit_and_ordering(tmp_path):
    p = write_healpix(tmp_path / "furlong.fits", np.zeros(NPIX, np.float32), unit="furlong")
    with pytest.raises(InputError, match=r"furlong\.fits.*'furlong'"):
        open_healpix_map(p, 90, "cmb")
    p = write_healpix(tmp_path / "nounit.fits", np.zeros(NPIX, np.float32), unit=None)
    with pytest.raises(InputError, match=r"nounit\.fits.*no unit"):
        open_healpix_map(p, 90, "cmb")
    p = write_healpix(tmp_path / "noorder.fits", np.zeros(NPIX, np.float32), ordering=None)
    with pytest.raises(InputError, match=r"noorder\.fits.*ORDERING"):
        open_healpix_map(p, 90, "cmb")


def test_nside_mismatch_across_files(tmp_path, index_map_file):
    small = write_healpix(tmp_path / "small.fits", np.zeros(12 * 128**2, np.float32), nside=128)
    files = all_bands("skymap", index_map_file)
    files["219_skymap_healpix.fits"] = small
    with pytest.raises(InputError, match="219_skymap_healpix.fits.*differs"):
        open_sehgal_dir(make_dir(tmp_path, files))


def test_truncated_file(tmp_path, index_map_file):
    files = all_bands("skymap", index_map_file)
    d = make_dir(tmp_path, {k: v for k, v in files.items() if not k.startswith("148")})
    bad = d / "148_skymap_healpix.fits"
    shutil.copy(index_map_file, bad)
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) - 100_000)
    with pytest.raises(InputError, match=r"148_skymap_healpix\.fits.*truncated"):
        open_sehgal_dir(d)
    with open(bad, "r+b") as f:
        f.truncate(3000)  # inside the table header
    with pytest.raises(InputError, match=r"148_skymap_healpix\.fits"):
        open_sehgal_dir(d)


def test_nan_and_unseen_pixels_reported(tmp_path):
    nside = NSIDE
    m = np.zeros(NPIX, np.float32)
    ra0, dec0 = 40.0, 20.0
    disc = hp.query_disc(nside, hp.ang2vec(ra0, dec0, lonlat=True), np.deg2rad(0.5))
    m[disc[: disc.size // 2]] = np.nan
    m[disc[disc.size // 2:]] = hp.UNSEEN
    p = write_healpix(tmp_path / "holes.fits", m)
    d = make_dir(tmp_path, all_bands("skymap", p))
    sky = open_sehgal_dir(d)
    assert np.all(sky.cut(200.0, -40.0)["skymap"] == 0)
    with pytest.raises(InputError, match=r"090_skymap_healpix\.fits: \d+ NaN or UNSEEN"):
        sky.cut([200.0, ra0], [-40.0, dec0], pixel_arcmin=2.0)


def test_pickle_reopens_instead_of_copying(tmp_path, index_map_file):
    import pickle

    sky = open_sehgal_dir(make_dir(tmp_path, all_bands("skymap", index_map_file)))
    blob = pickle.dumps(sky)
    assert len(blob) < 2000
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.cut(10.0, 10.0)["skymap"], sky.cut(10.0, 10.0)["skymap"])
