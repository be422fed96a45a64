"""The matched filter on a workspace and on FITS maps: matching to halos and cutouts (paper section 2.3)."""

import shutil

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from szviewer.cli import main
from szviewer.cutouts.grid import CutoutGrid
from szviewer.mf.halo_match import assign_to_cutouts, cutout_snr, match_to_halos
from szviewer.sky.tiles import Footprint
from szviewer.workspace import Workspace


def test_matching_rules():
    halos = Table({"ra": [1.0, 1.0 + 0.5 / 60, 1.2], "dec": [1.0, 1.0, 1.2], "m_vir": [1e14, 3e14, 5e14]})
    # within 1' of both the first two halos: the more massive wins; 1.5' from any: unmatched
    m = match_to_halos([1.0 + 0.2 / 60, 1.2 + 1.5 / 60], [1.0, 1.2], halos)
    assert list(m) == [1, -1]
    grid = CutoutGrid(Footprint(0, 2, 0, 2))
    det = Table({"ra": [1.0 + 0.2 / 60, 1.2 + 1.5 / 60], "dec": [1.0, 1.2], "snr": [7.0, 4.0]})
    match, cells = assign_to_cutouts(det, halos, grid)
    assert cells[0] == grid.cell_of(halos["ra"][1], halos["dec"][1])  # the true halo's cutout
    assert cells[1] == grid.cell_of(det["ra"][1], det["dec"][1])  # its own cutout
    ids = np.array([cells[1], cells[0], 12345])
    snr = cutout_snr(np.array([cells[0], cells[0], cells[1]]), np.array([7.0, 9.0, 4.0]), ids)
    assert snr[0] == 4.0 and snr[1] == 9.0 and np.isnan(snr[2])


def test_mf_on_a_workspace(small_ws, tmp_path, capsys):
    path = tmp_path / "ws"
    shutil.copytree(small_ws["path"], path)
    assert main(["mf", str(path)]) == 0
    assert "positive cutouts detected" in capsys.readouterr().out
    ws = Workspace(path)
    assert ws.has("mf")
    with ws.cutout_store() as st:
        t = st.table
    scores = ws.scores(np.asarray(t["id"]))
    snr = scores["mf_snr"]
    # the flag column says which cutouts have no detection (their mf_snr is NaN)
    assert np.array_equal(scores["mf_detected"] == 1, np.isfinite(snr))
    y = np.asarray(t["label"])
    # massive clusters are found: most positives have a detection, and their S/N beats the negatives'
    assert np.isfinite(snr[y]).mean() > 0.7
    assert np.nanmedian(snr[y]) > 2 * np.nanmedian(snr[~y])
    cat = Table.read(Workspace(path).file("mf", "mf_catalog.fits"))
    for col in ("name", "ra", "dec", "snr", "theta_c_arcmin", "y0", "y0_err", "cutout_id", "halo_id"):
        assert col in cat.colnames
    assert np.all(cat["snr"] >= 3)


def test_mf_on_fits_maps(tmp_path, capsys):

    ny, nx = 400, 400
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [30.0, -20.0]
    w.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    w.wcs.cdelt = [-0.25 / 60, 0.25 / 60]
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:ny, :nx]
    x0, y0 = 250.0, 180.0
    theta_c = 1.0 / 0.25
    y_map = 1e-4 / (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / theta_c**2)
    args = ["mf"]
    for band, f, sigma in ((90, -4.356e6, 11.2), (148, -2.668e6, 10.4), (219, 6.1e4, 26.4)):
        data = (f * y_map + rng.normal(0, sigma, (ny, nx))).astype(np.float32)
        hdr = w.to_header()
        hdr["BUNIT"] = "uK_CMB"
        p = tmp_path / f"m{band}.fits"
        fits.PrimaryHDU(data, hdr).writeto(p)
        args += ["--map", f"{band}={p}"]
    out = tmp_path / "cands.ecsv"
    assert main(args + ["--out", str(out), "--snr-threshold", "5"]) == 0
    cat = Table.read(out)
    assert len(cat) >= 1
    ra0, dec0 = w.pixel_to_world_values(x0, y0)
    best = cat[np.argmax(cat["snr"])]
    from szviewer.sky.geometry import separation_arcmin

    assert separation_arcmin(best["ra"], best["dec"], ra0, dec0) < 0.3
    assert best["snr"] > 10
    assert main(args + ["--out", str(out)]) == 2  # exists
    capsys.readouterr()
