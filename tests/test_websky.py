"""Websky: maps, lensed-CMB alms and halos.pksc in exactly Websky's formats, at low Nside, read back and cut.

Files are written here independently of szviewer's writers: maps with ``healpy.write_map`` (the header keywords
healpy writes: PIXTYPE, ORDERING, NSIDE, INDXSCHM, ...; no unit keyword, as Websky's own), alms with
``healpy.write_alm``, ``halos.pksc`` with ``struct`` (int32 N, float32 RTHmax, float32 redshift, N x 10 float32).
Answer keys (redshifts, masses, units, orientation, label counts) are computed here with astropy, colossus and
the Planck law directly.
"""

from __future__ import annotations

import math
import struct

import healpy as hp
import numpy as np
import pytest
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM, z_at_value
from astropy.wcs import WCS

from szviewer.cli import main
from szviewer.cutouts.build import CutoutSettings, build_cutouts
from szviewer.cutouts.labels import LabelSettings
from szviewer.errors import InputError
from szviewer.sky.healpix import open_recorded
from szviewer.sky.tiles import Footprint
from szviewer.sky.websky import find_websky_files, open_websky_dir
from szviewer.sky.websky_halos import read_pksc, read_pksc_header
from szviewer.workspace import Workspace

NSIDE = 512
NPIX = 12 * NSIDE**2
RHO = 2.775e11 * 0.31 * 0.68**2  # Msun / Mpc^3 (Websky)
COSMO = FlatLambdaCDM(H0=68, Om0=0.31, Ob0=0.049)
T_CMB, H_PL, K_B, C = 2.726, 6.62607015e-34, 1.380649e-23, 2.99792458e8


# ------------------------------------------------------------------------------------------------ writers
def write_map(path, m, unit=None, nest=False):
    hp.write_map(str(path), np.asarray(m, np.float32), nest=nest, dtype=np.float32, column_units=unit,
                 overwrite=True)
    return path


def write_pksc(path, rows, n_header=None, rthmax=None, redshift=0.0):
    rows = np.asarray(rows, np.float32)
    n = rows.shape[0] if n_header is None else n_header
    with open(path, "wb") as f:
        f.write(struct.pack("<iff", n, float(rows[:, 6].max()) if rthmax is None else rthmax, redshift))
        f.write(rows.astype("<f4").tobytes())
    return path


def pksc_rows(ra, dec, chi, rth, v=None):
    """(N, 10) pksc rows for halos at (RA, Dec) [deg], comoving distance [Mpc] and Lagrangian radius [Mpc]."""
    ra, dec = np.radians(ra), np.radians(dec)
    rows = np.zeros((np.size(ra), 10), np.float32)
    rows[:, 0] = chi * np.cos(dec) * np.cos(ra)
    rows[:, 1] = chi * np.cos(dec) * np.sin(ra)
    rows[:, 2] = chi * np.sin(dec)
    if v is not None:
        rows[:, 3:6] = v
    rows[:, 6] = rth
    rows[:, 7:] = rows[:, :3] * 0.9  # Lagrangian positions: ignored
    return rows


def rth_of(m):
    return (m / (4 * np.pi / 3 * RHO)) ** (1 / 3)


def planck_db_dt(nu_ghz):
    """dB/dT at T_CMB in Jy/sr per uK, written out here from the Planck law."""
    nu = nu_ghz * 1e9
    x = H_PL * nu / (K_B * T_CMB)
    return 2 * K_B * (K_B * T_CMB / (H_PL * C)) ** 2 * x**4 * np.exp(x) / np.expm1(x) ** 2 * 1e26 * 1e-6


def tsz_spectrum(nu_ghz):
    x = H_PL * nu_ghz * 1e9 / (K_B * T_CMB)
    return T_CMB * 1e6 * (x / np.tanh(x / 2) - 4)


def cib_sed(nu):
    """A power-law CIB intensity [MJy/sr]: what a log-log interpolation must reproduce exactly."""
    return 0.2 * (nu / 150.0) ** 3.2


def websky_dir(tmp_path, ksz=None, halos=None, cib_freqs=(93.0, 145.0, 217.0, 353.0), patchy=False):
    d = tmp_path / "websky"
    d.mkdir(parents=True, exist_ok=True)
    write_map(d / "tsz.fits", np.full(NPIX, 2e-5))
    write_map(d / "ksz.fits", np.arange(NPIX, dtype=np.float32) if ksz is None else ksz)
    if patchy:
        write_map(d / "ksz_patchy.fits", np.full(NPIX, 3.0))
    for nu in cib_freqs:
        name = f"cib_nu{nu:06.1f}.fits" if nu != int(nu) else f"cib_nu{int(nu):04d}.fits"
        write_map(d / name, np.full(NPIX, cib_sed(nu)), unit="MJy/sr")
    lmax = 3 * NSIDE - 1
    alm = np.zeros(hp.Alm.getsize(lmax), complex)
    alm[hp.Alm.getidx(lmax, 0, 0)] = 50.0 * np.sqrt(4 * np.pi)  # a 50 uK monopole
    alm[hp.Alm.getidx(lmax, 1, 0)] = 20.0 * np.sqrt(4 * np.pi / 3)  # + 20 uK cos(theta)
    hp.write_alm(str(d / "lensed_alm.fits"), [alm, 0 * alm, 0 * alm])
    if halos is not None:
        write_pksc(d / "halos.pksc", halos)
    return d


def tan_pixels(ra_c, dec_c, npix, pixel_arcmin, nside=NSIDE):
    """Independent expectation: astropy's TAN WCS places each cutout pixel (RA to the left), healpy finds its pixel."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra_c, dec_c]
    w.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
    w.wcs.cdelt = [-pixel_arcmin / 60.0, pixel_arcmin / 60.0]
    jj, ii = np.meshgrid(np.arange(npix), np.arange(npix))
    ra, dec = w.all_pix2world(jj, ii, 0)
    return hp.ang2pix(nside, ra, dec, lonlat=True)


def colossus_masses(z, m200m):
    """M_vir, M500c, M200c [Msun] straight from colossus (no interpolation), Websky cosmology, Duffy 2008."""
    from colossus.cosmology import cosmology
    from colossus.halo import mass_adv

    try:
        prev = cosmology.getCurrent()
    except Exception:
        prev = None
    cosmology.setCosmology("websky-test", params={"flat": True, "H0": 68.0, "Om0": 0.31, "Ob0": 0.049,
                                                  "sigma8": 0.81, "ns": 0.965, "relspecies": False},
                           persistence="")
    out = {"m_vir": [], "m500": [], "m200c": []}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for zi, mi in zip(z, m200m, strict=True):
                for key, mdef in (("m_vir", "vir"), ("m500", "500c"), ("m200c", "200c")):
                    m, _, _ = mass_adv.changeMassDefinitionCModel(mi * 0.68, zi, "200m", mdef, c_model="duffy08")
                    out[key].append(m / 0.68)
    finally:
        if prev is not None:
            cosmology.setCurrent(prev)
    return {k: np.array(v) for k, v in out.items()}




# ------------------------------------------------------------------------------------------------ halos.pksc
def test_pksc_values_negative_n_and_block_edges(tmp_path):
    ra = np.array([10.0, 200.0, 45.0, 300.5, 89.9])
    dec = np.array([5.0, -60.0, 44.0, 10.0, 0.3])
    chi = np.array([800.0, 2500.0, 4000.0, 6500.0, 1200.0])
    m = np.array([3e14, 8e13, 1.2e15, 2e14, 5e14])
    v = np.array([[300.0, 0, 0], [0, -200, 0], [0, 0, 100], [50, 50, 50], [-10, 0, 0]])
    rows = pksc_rows(ra, dec, chi, rth_of(m), v)
    path = write_pksc(tmp_path / "halos.pksc", rows, n_header=-5, redshift=0.5)
    hd = read_pksc_header(path)
    assert (hd.n, hd.n_stored, hd.ncol, hd.redshift) == (5, -5, 10, 0.5)
    for block in (2, 1 << 18):  # block boundaries change nothing
        t = read_pksc(path, m200m_min=0.0, block=block)
        assert list(t["halo_id"]) == [0, 1, 2, 3, 4]
        np.testing.assert_allclose(t["ra"], ra, atol=1e-4)
        np.testing.assert_allclose(t["dec"], dec, atol=1e-4)
        zkey = [z_at_value(COSMO.comoving_distance, c * u.Mpc).value for c in chi]
        np.testing.assert_allclose(t["z"], zkey, rtol=2e-5)
        np.testing.assert_allclose(t["m200m"], m, rtol=1e-5)
    x = rows[:, :3].astype(float)
    vlos = np.sum(v * x, axis=1) / np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(t["v_los"], vlos, rtol=1e-4, atol=1e-3)
    assert t["ra"].unit == u.deg and t["m_vir"].unit == u.Msun
    assert t.meta["nstored"] == -5 and t.meta["massdef"] == "M200m"
    key = colossus_masses(np.asarray(t["z"]), m)
    for col in ("m_vir", "m500", "m200c"):
        np.testing.assert_allclose(t[col], key[col], rtol=2e-3)
    assert np.all(t["m_vir"] > 0) and np.all(t["r_vir"] > 0.1) and np.all(t["r500"] < t["r_vir"])
    # the mass floor (M200m) and a region cut on read
    t2 = read_pksc(path, m200m_min=2.5e14, footprint=Footprint(0, 90, 0, 90))
    assert list(t2["halo_id"]) == [0, 2, 4]
    assert read_pksc(path, m200m_min=2e14)["halo_id"].tolist() == [0, 2, 3, 4]  # the floor is inclusive


def test_pksc_truncated_and_malformed(tmp_path, capsys):
    rows = pksc_rows([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1000.0, 1000.0, 1000.0], rth_of(np.full(3, 3e14)))
    good = write_pksc(tmp_path / "good.pksc", rows)
    cut = tmp_path / "halos_cut.pksc"
    cut.write_bytes(good.read_bytes()[:-13])
    with pytest.raises(InputError, match=r"halos_cut\.pksc: truncated: the header says 3 halos") as exc:
        read_pksc(cut)
    assert "\n" not in str(exc.value)
    (tmp_path / "tiny.pksc").write_bytes(b"\x03\x00\x00")
    with pytest.raises(InputError, match=r"tiny\.pksc: truncated.*12-byte"):
        read_pksc_header(tmp_path / "tiny.pksc")
    extra = tmp_path / "extra.pksc"
    extra.write_bytes(good.read_bytes() + b"\0" * 8)
    with pytest.raises(InputError, match=r"extra\.pksc: .*not 3 halos of 10"):
        read_pksc(extra)
    # the same through the command line: one line naming the file, exit 2, no workspace
    d = websky_dir(tmp_path)
    (d / "halos.pksc").write_bytes(cut.read_bytes())
    ws = tmp_path / "ws"
    assert main(["import", "--websky", str(d), "--out", str(ws)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "halos.pksc: truncated" in err[0]
    assert not ws.exists() and not list(tmp_path.glob(".ws.*"))


# ------------------------------------------------------------------------------------------------ maps
def test_units_cib_interpolation_and_cmb(tmp_path):
    d = websky_dir(tmp_path, ksz=np.full(NPIX, 7.0), patchy=True)
    from szviewer.sky.websky_cmb import synthesise_cmb

    rec = synthesise_cmb(d / "lensed_alm.fits", NSIDE, tmp_path / "cmb.fits")
    assert rec["lmax"] == 3 * NSIDE - 1
    sky = open_websky_dir(d, tmp_path / "cmb.fits")
    assert sky.components == ("cmb", "tsz", "ksz", "ir") and sky.bands == (90, 148, 219)
    ra, dec = np.array([10.0, 120.0, 250.0]), np.array([0.0, 60.0, -80.0])
    out = sky.cut(ra, dec, npix=8, pixel_arcmin=1.0)
    for ib, band in enumerate(sky.bands):
        np.testing.assert_allclose(out["tsz"][:, ib], 2e-5 * tsz_spectrum(band), rtol=1e-5)
        np.testing.assert_allclose(out["ksz"][:, ib], 10.0, rtol=1e-6)  # ksz + ksz_patchy
        # MJy/sr -> uK_CMB at the band: the power-law SED is reproduced exactly (90 GHz: extrapolated from 93/145)
        np.testing.assert_allclose(out["ir"][:, ib], cib_sed(band) * 1e6 / planck_db_dt(band), rtol=2e-5)
    # the CMB synthesised from the alms: 50 uK + 20 uK cos(theta)
    theta = np.radians(90.0 - dec)
    np.testing.assert_allclose(out["cmb"][:, 0, 4, 4], 50 + 20 * np.cos(theta), atol=0.15)
    np.testing.assert_array_equal(out["cmb"][:, 0], out["cmb"][:, 2])
    # 'nearest': the intensity of the nearest map, converted at the band
    near = open_websky_dir(d, None, cib="nearest").cut(ra, dec, npix=4, pixel_arcmin=1.0)["ir"]
    for ib, (band, nu) in enumerate(((90, 93.0), (148, 145.0), (219, 217.0))):
        np.testing.assert_allclose(near[:, ib], cib_sed(nu) * 1e6 / planck_db_dt(band), rtol=2e-5)
    desc = sky.describe()
    assert desc["kind"] == "websky_healpix" and "power law" in desc["recipes"]["ir"]["148"][0]
    assert any("Websky convention" in f["unit"] for f in desc["files"] if f["name"] == "tsz.fits")


def test_power_law_falls_back_to_linear_where_a_map_is_not_positive():
    from szviewer.sky.healpix_recipes import Part

    raw = {0: np.array([1.0, 0.0, 2.0], np.float32), 1: np.array([4.0, 3.0, -1.0], np.float32)}
    dst = np.zeros(3, np.float32)
    Part(0, 1.0, 1, 1.0, 0.25, 2.0).evaluate(raw, dst, add=False)
    expect = 2 * np.array([1.0**0.75 * 4.0**0.25, 0.75 * 0.0 + 0.25 * 3.0, 0.75 * 2.0 + 0.25 * -1.0])
    np.testing.assert_allclose(dst, expect, rtol=1e-6)


def test_orientation_matches_an_independent_tan_projection(tmp_path):
    d = websky_dir(tmp_path)  # ksz holds each pixel's own index
    sky = open_websky_dir(d)
    ra = np.array([10.0, 45.3, 89.9, 359.95, 200.0, 30.0])
    dec = np.array([5.0, 44.1, 0.2, 10.0, -60.0, 89.5])
    out = sky.cut(ra, dec, npix=32, pixel_arcmin=3.0, components=["ksz"])["ksz"]
    for k in range(ra.size):
        expect = tan_pixels(ra[k], dec[k], 32, 3.0)
        assert np.mean(out[k, 1].astype(np.int64) == expect) > 0.999


def test_a_source_lands_east_left_and_north_up(tmp_path):
    d = websky_dir(tmp_path)
    ra0, dec0 = 30.0, 40.0
    y = np.zeros(NPIX, np.float32)
    east = hp.ang2pix(NSIDE, ra0 + (40 / 60) / np.cos(np.radians(dec0)), dec0, lonlat=True)
    north = hp.ang2pix(NSIDE, ra0, dec0 + 40 / 60, lonlat=True)
    y[east], y[north] = 1e-4, 2e-4
    write_map(d / "tsz.fits", y)
    img = open_websky_dir(d).cut(ra0, dec0, npix=32, pixel_arcmin=4.0, components="tsz")["tsz"][0, 0]
    hot_e = np.isclose(img, 1e-4 * tsz_spectrum(90), rtol=1e-4)
    hot_n = np.isclose(img, 2e-4 * tsz_spectrum(90), rtol=1e-4)
    ri, ci = np.nonzero(hot_e)
    assert ri.size and abs(ci.mean() - (15.5 - 10)) < 1.5 and abs(ri.mean() - 15.5) < 1.5  # 40' east = 10 left
    ri, ci = np.nonzero(hot_n)
    assert ri.size and abs(ri.mean() - (15.5 + 10)) < 1.5 and abs(ci.mean() - 15.5) < 1.5  # 40' north = 10 up


def test_folder_errors(tmp_path):
    d = websky_dir(tmp_path)
    (d / "lensed_alm_seed2.fits").write_bytes((d / "lensed_alm.fits").read_bytes())
    assert find_websky_files(d).alm == "lensed_alm.fits"  # the plain name wins
    (d / "lensed_alm.fits").rename(d / "lensed_alm_seed1.fits")
    with pytest.raises(InputError, match="several lensed-CMB alm files.*--cmb-alm"):
        find_websky_files(d)
    assert find_websky_files(d, cmb_alm=d / "lensed_alm_seed1.fits").alm.endswith("lensed_alm_seed1.fits")
    (d / "tsz.fits").rename(d / "compton-y.fits")
    assert find_websky_files(d, cmb_alm=d / "lensed_alm_seed1.fits").tsz == "compton-y.fits"
    (d / "compton-y.fits").unlink()
    with pytest.raises(InputError, match="no tsz.fits"):
        find_websky_files(d)
    with pytest.raises(InputError, match="no such directory"):
        find_websky_files(tmp_path / "nope")
    e = websky_dir(tmp_path / "e", cib_freqs=(353.0, 545.0))
    with pytest.raises(InputError, match="no ir map near 90 GHz"):
        open_websky_dir(e)


# ------------------------------------------------------------------------------------------------ end to end
RULES = ((2e14, 0.25, None, "m_vir"), (1e14, 0.2, "m500", "m500"))  # the paper's, and a 500c rule


def label_halos(rng, n_side=7):
    """Halos on a 20' lattice inside RA 0.5-2.5, Dec 0.5-2.5 (one per cutout cell) and their answer key: z from
    astropy, M_vir and M500c from colossus; no halo within 1% of a mass threshold or 0.005 of a redshift one."""
    g = 0.5 + np.arange(n_side) * (20 / 60)
    ra, dec = (a.ravel() for a in np.meshgrid(g, g))
    z = rng.uniform(0.1, 1.0, ra.size)
    for _, zmin, _, _ in RULES:
        z = np.where(np.abs(z - zmin) < 0.005, zmin + 0.01, z)
    m200m = 10 ** rng.uniform(13.9, 15.0, ra.size)
    for _ in range(5):
        key = colossus_masses(z, m200m)
        near = np.zeros(ra.size, bool)
        for mass, _, _, col in RULES:
            near |= np.abs(np.log(key[col] / mass)) < 0.01
        if not near.any():
            break
        m200m = np.where(near, m200m * 1.04, m200m)
    chi = COSMO.comoving_distance(z).value
    return ra, dec, chi, m200m


def test_import_cutouts_and_labels_against_an_answer_key(tmp_path, capsys):
    rng = np.random.default_rng(3)
    ra, dec, chi, m200m = label_halos(rng)
    far = pksc_rows([150.0], [-40.0], [3000.0], rth_of(np.array([1e15])))  # outside the region: dropped
    rows = np.vstack([pksc_rows(ra, dec, chi, rth_of(m200m)), far])
    d = websky_dir(tmp_path, halos=rows)
    ws = tmp_path / "ws"
    assert main(["import", "--websky", str(d), "--region", "0,3,0,3", "--out", str(ws)]) == 0
    cap = capsys.readouterr()
    assert "simulation websky" in cap.out and "power law" in cap.out
    assert "coarser than the cutouts' 0.25' pixels" in cap.err  # Nside 512 against 0.25' pixels
    w = Workspace(ws)
    assert w.kind == "sehgal" and w.products["sky"]["provenance"]["kind"] == "websky_healpix"
    assert w.products["sky"]["files"] == ["sky/websky_lensed_cmb.fits"] and w.has("sky")
    halos = w.halos()
    assert len(halos) == int(np.sum(m200m >= 1e14))  # the default floor; the far halo is outside the region
    # the answer key, computed here: z from astropy, M_vir / M500c straight from colossus
    z = np.array([z_at_value(COSMO.comoving_distance, c * u.Mpc).value for c in chi])
    key = colossus_masses(z, m200m)
    for mass, rule_z, mdef, col in RULES:
        q = (key[col] >= mass) & (z >= rule_z) & (m200m >= 1e14)
        labels = LabelSettings() if mdef is None else LabelSettings.from_options(mdef, str(mass), str(rule_z))
        sky = open_recorded(w.products["sky"]["provenance"], w.root)
        s = build_cutouts(sky, Footprint(0, 3, 0, 3), halos, tmp_path / f"c_{col}.h5",
                          CutoutSettings(labels=labels, levels=("ksz",)))
        assert s["positives"] == int(q.sum()) > 3
    # through the CLI
    assert main(["cutouts", str(ws), "--levels", "ksz"]) == 0
    capsys.readouterr()
    with Workspace(ws).cutout_store() as st:
        t = st.table
        assert int(np.sum(t["label"])) == int(((key["m_vir"] >= 2e14) & (z >= 0.25) & (m200m >= 1e14)).sum())
        assert t.meta["label_settings"]["rule"] == "M_vir >= 2e+14 Msun, z >= 0.25"
        rows_ = np.arange(0, len(st), 97)
        comps = st.component_images(rows_)
        ksz = comps[:, st.components.index("ksz"), 0]
        for k, r in enumerate(rows_):  # the stored cutouts hold the pixels an independent TAN projection picks
            expect = tan_pixels(float(t["ra"][r]), float(t["dec"][r]), 32, 0.25)
            assert np.mean(ksz[k].astype(np.int64) == expect) > 0.999
        assert np.all(comps[:, st.components.index("cmb")] > 49)
    # an overwrite reuses the synthesised CMB made from the same alms
    assert main(["import", "--websky", str(d), "--region", "0,3,0,3", "--out", str(ws), "--overwrite"]) == 0
    assert "reused" in Workspace(ws).products["sky"]["summary"]["cmb"]


def test_workspace_opens_a_websky_sky(tmp_path, capsys):
    d = websky_dir(tmp_path)
    ws = tmp_path / "ws"
    assert main(["import", "--websky", str(d), "--region", "0,1,0,1", "--out", str(ws)]) == 0
    assert Workspace(ws).sky().simulation == "websky"
    # 'all' is every component Websky has (no radio, no dust maps); the label rule from the command line
    assert main(["cutouts", str(ws), "--label-mass", "m500", "--label-min", "1e14", "--label-zmin", "0.2"]) == 0
    with Workspace(ws).cutout_store() as st:
        assert st.levels["all"] == ("cmb", "tsz", "ksz", "ir")
        assert st.table.meta["label_settings"]["rule"] == "M500c >= 1e+14 Msun, z >= 0.2"
        assert st.attrs()["orientation"].startswith("rows south to north")
    capsys.readouterr()
    assert main(["cutouts", str(ws), "--label-min", "lots", "--overwrite"]) == 2
    assert "--label-min 'lots': not a number" in capsys.readouterr().err
    assert main(["cutouts", str(ws), "--label-mass", "m300", "--overwrite"]) == 2
    assert "label mass 'm300'" in capsys.readouterr().err


def test_mass_floor_flag_and_option_errors(tmp_path, capsys):
    rows = pksc_rows([1.0, 1.5], [1.0, 1.5], [1500.0, 1500.0], rth_of(np.array([5e13, 3e14])))
    d = websky_dir(tmp_path, halos=rows)
    ws = tmp_path / "ws"
    assert main(["import", "--websky", str(d), "--region", "0,2,0,2", "--mass-floor", "1e13", "--out", str(ws)]) == 0
    assert len(Workspace(ws).halos()) == 2
    capsys.readouterr()
    assert main(["import", "--sehgal", str(d), "--cib", "nearest", "--out", str(tmp_path / "x")]) == 2
    assert "--cib" in capsys.readouterr().err
    assert main(["import", "--websky", str(d), "--agora", str(d), "--out", str(tmp_path / "x")]) == 2
    assert "give one of" in capsys.readouterr().err
    assert math.isclose(Workspace(ws).products["sky"]["summary"]["mass_floor_m200m"], 1e13)
