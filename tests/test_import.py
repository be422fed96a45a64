"""End to end: Sehgal-format HEALPix maps and flat FITS maps -> workspace -> cutouts, through the CLI."""

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from szviewer.cli import main
from szviewer.sky.bands import BANDS_GHZ, band_label, db_dt_jy_sr_per_uk
from szviewer.sky.halo_ascii import write_sehgal_ascii
from szviewer.workspace import Workspace

NSIDE = 1024


def write_sehgal_map(path, m, unit="Jy/sr"):
    cols = [fits.Column(name="signal", format="1024E", array=m.astype(np.float32).reshape(-1, 1024))]
    h = fits.BinTableHDU.from_columns(cols)
    h.header.update({"PIXTYPE": "HEALPIX", "ORDERING": "RING", "NSIDE": NSIDE, "TUNIT1": unit,
                     "FIRSTPIX": 0, "LASTPIX": m.size - 1, "INDXSCHM": "IMPLICIT"})
    h.writeto(path)


@pytest.fixture
def sehgal_dir(tmp_path):
    d = tmp_path / "sehgal"
    d.mkdir()
    npix = hp.nside2npix(NSIDE)
    ra_h, dec_h = 1.2, 1.1
    theta, phi = hp.pix2ang(NSIDE, np.arange(npix))
    dist = hp.rotator.angdist((np.pi / 2 - np.deg2rad(dec_h), np.deg2rad(ra_h)), (theta, phi))
    for band in BANDS_GHZ:
        jy = 1.0 / (1.0 / db_dt_jy_sr_per_uk(band))  # 1 uK in Jy/sr
        cmb = np.full(npix, 5.0 * jy)
        tsz = np.where(np.rad2deg(dist) * 60 < 2.0, -100.0 * jy, 0.0)
        write_sehgal_map(d / f"{band_label(band)}_lensedcmb_healpix.fits", cmb)
        write_sehgal_map(d / f"{band_label(band)}_tsz_healpix.fits", tsz)
    rows = np.zeros((3, 48))
    rows[:, 0] = [0.5, 0.1, 0.6]  # z
    rows[:, 1] = [ra_h, 1.5, 200.0]  # RA: the last is outside the octant
    rows[:, 2] = [dec_h, 1.5, 10.0]
    rows[:, 10] = [4e14, 5e14, 9e14]  # M_vir: the second is below z 0.25
    rows[:, 12] = [1.5, 1.6, 2.0]
    write_sehgal_ascii(d / "halo_sz.ascii", rows)
    return d


def test_sehgal_import_and_cutouts(sehgal_dir, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["import", "--sehgal", str(sehgal_dir), "--region", "0,2.5,0,2", "--out", str(ws)]) == 0
    assert "halos 2" in capsys.readouterr().out  # the halo outside the octant is dropped
    assert main(["cutouts", str(ws), "--levels", "ksz"]) == 2  # there is no kSZ map
    assert "not available" in capsys.readouterr().err
    assert main(["cutouts", str(ws)]) == 0
    with Workspace(ws).cutout_store() as st:
        t = st.table
        assert set(st.levels) == {"cmb_tsz", "all"} and st.levels["all"] == ("cmb", "tsz")  # all it has
        pos = np.nonzero(np.asarray(t["label"]))[0]
        assert pos.size == 1  # one qualifying halo, one positive cutout
        comps = st.component_images(pos)[0]
        cmb = comps[st.components.index("cmb")]
        tsz = comps[st.components.index("tsz")]
        # Jy/sr converted to uK in every band
        assert np.allclose(cmb, 5.0, rtol=1e-4)
        assert tsz.min() == pytest.approx(-100.0, rel=1e-4)
        assert t["offset_arcmin"][pos[0]] < 4.3
    # the region must stay inside the octant
    assert main(["import", "--sehgal", str(sehgal_dir), "--region", "80,100,0,2", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_sehgal_import_warns_of_coarse_maps_and_reads_binary_halos(sehgal_dir, tmp_path, capsys):
    """Nside 1024 (3.4' pixels) against 0.25' cutout pixels: the import says so (and records it); halo_nbody.binary
    (20 float32 per halo, the ASCII column order) is found beside the maps when there is no ASCII catalogue."""
    (sehgal_dir / "halo_sz.ascii").unlink()
    rows = np.zeros((3, 20), np.float32)
    rows[:, 0] = [0.5, 0.1, 0.6]
    rows[:, 1] = [1.2, 1.5, 200.0]
    rows[:, 2] = [1.1, 1.5, 10.0]
    rows[:, 10] = [4e14, 5e14, 9e14]
    rows.astype("<f4").tofile(sehgal_dir / "halo_nbody.binary")
    ws = tmp_path / "ws"
    assert main(["import", "--sehgal", str(sehgal_dir), "--region", "0,2.5,0,2", "--out", str(ws)]) == 0
    cap = capsys.readouterr()
    assert "halos 2" in cap.out
    assert "warning: the HEALPix maps (Nside 1024, 3.44' pixels) are coarser than the cutouts' 0.25' pixels" in cap.err
    w = Workspace(ws)
    assert "coarser" in w.products["sky"]["summary"]["warning"]
    assert w.products["halos"]["provenance"]["source"].endswith("halo_nbody.binary")
    assert main(["info", str(ws)]) == 0
    assert "WARNING: the HEALPix maps (Nside 1024" in capsys.readouterr().out


def test_sehgal_import_refuses_missing_band(sehgal_dir, tmp_path, capsys):
    (sehgal_dir / "219_tsz_healpix.fits").unlink()
    assert main(["import", "--sehgal", str(sehgal_dir), "--out", str(tmp_path / "ws")]) == 2
    assert "219_tsz_healpix.fits" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def flat_maps(tmp_path, nan=False):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    w.wcs.crval = [10.0, 0.0]
    w.wcs.crpix = [150.5, 100.5]
    w.wcs.cdelt = [-0.25 / 60, 0.25 / 60]
    rng = np.random.default_rng(0)
    paths = {}
    for band in BANDS_GHZ:
        data = rng.normal(0, 10, (200, 300)).astype(np.float32)
        if nan:
            data[100, 150] = np.nan
        hdr = w.to_header()
        hdr["BUNIT"] = "uK_CMB"
        p = tmp_path / f"map_{band}.fits"
        fits.PrimaryHDU(data, hdr).writeto(p)
        paths[band] = p
    return paths


def test_fits_import_and_cutouts(tmp_path, capsys):
    paths = flat_maps(tmp_path)
    ws = tmp_path / "ws"
    args = ["import"] + [a for b, p in paths.items() for a in ("--fits", f"{b}={p}")] + ["--out", str(ws)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["cutouts", str(ws)]) == 0
    with Workspace(ws).cutout_store() as st:
        assert st.add_noise is False  # real maps carry their own noise
        img = st.images(np.arange(len(st)))
        assert img.shape[1:] == (3, 32, 32) and 8 <= img.std() <= 12


def test_fits_nan_pixels_leave_their_cutouts_out(tmp_path, capsys):
    """A NaN pixel (a hole in a real map) removes the cutouts whose window holds it, and says how many; a map
    where every cutout holds one is a clear error naming the files, with nothing written."""
    paths = flat_maps(tmp_path, nan=True)
    ws = tmp_path / "ws"
    args = ["import"] + [a for b, p in paths.items() for a in ("--fits", f"{b}={p}")] + ["--out", str(ws)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["cutouts", str(ws)]) == 0
    with Workspace(ws).cutout_store() as st:
        dropped = st.attrs()["dropped_bad_pixels"]
        assert 1 <= dropped <= 4  # the cutouts overlapping pixel (100, 150)
        assert np.isfinite(st.images(np.arange(len(st)))).all()
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in paths.values():
        with fits.open(p) as h:
            data = h[0].data.copy()
            data[::20, :] = np.nan  # a NaN row every 5': every 8' cutout holds one
            fits.PrimaryHDU(data, h[0].header).writeto(bad / p.name)
    ws2 = tmp_path / "ws2"
    args = ["import"] + [a for b, p in paths.items() for a in ("--fits", f"{b}={bad / p.name}")] + ["--out", str(ws2)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["cutouts", str(ws2)]) == 2
    err = capsys.readouterr().err
    assert "unusable pixel" in err and "map_90.fits" in err
    assert "cutouts" not in Workspace(ws2).products
    assert not [p for p in ws2.rglob("*") if ".part" in p.name]
