"""AGORA: per-component HEALPix maps and halo light-cone shells in AGORA's formats, at low Nside; and the label
rule with a configurable mass definition (labels for any simulation).

Maps are written with ``healpy.write_map`` under AGORA-style names (``agora_{expt}_{freq}ghz_{component}_uk.fits``
and per-component names), units in the header or only in the name; shells ``agora_halolc_rot_X_v050223.npz`` with
the real keys (ra, dec, z, m200c, m500c, mvir in Msun/h, rvir in comoving Mpc/h, vlos, haloid). Answer keys are
computed here.
"""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM
from astropy.table import Table

from szviewer.cli import main
from szviewer.cutouts.build import CutoutSettings, build_cutouts
from szviewer.cutouts.grid import CutoutGrid
from szviewer.cutouts.labels import LabelSettings, label_grid, mass_definition
from szviewer.errors import InputError
from szviewer.sky.agora import find_agora_maps, open_agora_dir, parse_map_name, read_agora_halos
from szviewer.sky.healpix import open_recorded
from szviewer.sky.tiles import Footprint
from szviewer.workspace import Workspace

NSIDE = 256
NPIX = 12 * NSIDE**2
H = 0.6777
COSMO = FlatLambdaCDM(H0=67.77, Om0=0.307115, Ob0=0.048206)
T_CMB, H_PL, K_B, C = 2.726, 6.62607015e-34, 1.380649e-23, 2.99792458e8
Y0 = 3e-6


def write_map(path, m, unit=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    hp.write_map(str(path), np.asarray(m, np.float32), dtype=np.float32, column_units=unit, overwrite=True)
    return path


def planck_db_dt(nu_ghz):
    x = H_PL * nu_ghz * 1e9 / (K_B * T_CMB)
    return 2 * K_B * (K_B * T_CMB / (H_PL * C)) ** 2 * x**4 * np.exp(x) / np.expm1(x) ** 2 * 1e26 * 1e-6


def tsz_spectrum(nu_ghz):
    x = H_PL * nu_ghz * 1e9 / (K_B * T_CMB)
    return T_CMB * 1e6 * (x / np.tanh(x / 2) - 4)


def cib(nu):
    return 3e5 * (nu / 150.0) ** 3.4  # Jy/sr


def radio(nu):
    return 2e4 * (nu / 150.0) ** -0.7  # Jy/sr


def agora_dir(tmp_path, halo_shells=None):
    d = tmp_path / "agora"
    write_map(d / "agora_lcmbNG_uk.fits", np.arange(NPIX), unit="uK")  # the pixel index: orientation
    write_map(d / "agora_lkszNGbahamas80.fits", np.full(NPIX, -4.0), unit="uK_CMB")
    for nu in (95, 150, 220):
        write_map(d / f"agora_spt3g_{nu}ghz_ltszNGbahamas80_uk.fits", np.full(NPIX, Y0 * tsz_spectrum(nu)))
        write_map(d / "cib" / f"agora_spt3g_{nu}ghz_lcibNG_uk.fits", np.full(NPIX, cib(nu) / planck_db_dt(nu)))
        write_map(d / f"agora_spt3g_{nu}ghz_lradNG_uk.fits", np.full(NPIX, radio(nu) / planck_db_dt(nu)),
                  unit="uK_CMB")
    write_map(d / "agora_lkappaNG.fits", np.zeros(NPIX))  # not a sky component: ignored
    write_map(d / "agora_unlensedcmb_uk.fits", np.zeros(NPIX))
    for k, shell in enumerate(halo_shells or []):
        (d / "halocat").mkdir(exist_ok=True)
        save = np.savez if k % 2 == 0 else np.savez_compressed
        save(d / "halocat" / f"agora_halolc_rot_{k}_v050223.npz", **shell)
    return d


def bn_r_vir(m, z):
    """Bryan & Norman (1998) R_vir [proper Mpc] of M_vir [Msun], written out here."""
    x = COSMO.Om(z) - 1
    delta = 18 * np.pi**2 + 82 * x - 39 * x**2
    return (3 * m / (4 * np.pi * delta * COSMO.critical_density(z).to_value(u.Msun / u.Mpc**3))) ** (1 / 3)


def shell(rng, ra, dec, z, mvir):
    """One shell with AGORA's keys and units (Msun/h, comoving Mpc/h)."""
    n = ra.size
    return {"ra": ra, "dec": dec, "z": z, "mvir": mvir * H, "m200c": 0.82 * mvir * H, "m500c": 0.55 * mvir * H,
            "rvir": bn_r_vir(mvir, z) * (1 + z) * H, "vlos": rng.normal(0, 300, n),
            "haloid": rng.integers(0, 10**9, n)}


def test_map_names():
    m = parse_map_name("agora_spt3g_150ghz_ltszNGbahamas80_uk.fits")
    assert (m.component, m.freq_ghz, m.unit_token) == ("tsz", 150.0, "uk")
    assert parse_map_name("agora_cmbs4_95ghz_lcibNG_uk.fits").component == "ir"  # 'cmbs4' is no CMB
    assert parse_map_name("agora_lcmbNG_uk.fits").component == "cmb"
    assert parse_map_name("agora_so_217p5ghz_lradNG_uk.fits").freq_ghz == 217.5
    assert parse_map_name("agora_spt3g_95ghz_total_uk.fits").component == "skymap"
    for skipped in ("agora_lkappaNG.fits", "agora_unlensedcmb_uk.fits", "halos.fits", "agora_readme.fits"):
        assert parse_map_name(skipped) is None


def test_units_and_interpolation(tmp_path):
    d = agora_dir(tmp_path)
    sky = open_agora_dir(d)
    assert sky.components == ("cmb", "tsz", "ksz", "ir", "radio")
    out = sky.cut([20.0, 100.0], [10.0, -50.0], npix=4, pixel_arcmin=2.0)
    for ib, band in enumerate(sky.bands):
        np.testing.assert_allclose(out["tsz"][:, ib], Y0 * tsz_spectrum(band), rtol=1e-5)  # uK at nu -> y -> band
        np.testing.assert_allclose(out["ksz"][:, ib], -4.0)
        # uK at the maps' frequencies -> intensity -> power law in frequency -> uK at the band (90: extrapolated)
        np.testing.assert_allclose(out["ir"][:, ib], cib(band) / planck_db_dt(band), rtol=2e-5)
        np.testing.assert_allclose(out["radio"][:, ib], radio(band) / planck_db_dt(band), rtol=2e-5)
    rec = sky.describe()["recipes"]
    assert "150ghz" in rec["tsz"]["219"][0]  # the 220 GHz map sits at the tSZ null: its neighbour is used
    assert "extrapolated" in rec["ir"]["90"][0] and "between" in rec["ir"]["148"][0]
    units = {f["name"]: f["unit"] for f in sky.describe()["files"]}
    assert units["agora_spt3g_95ghz_ltszNGbahamas80_uk.fits"].startswith("uK_CMB (from the name")
    # the CMB map holds each pixel's index: an independent ang2pix at the cutout centre agrees
    img = sky.cut(20.0, 10.0, npix=2, pixel_arcmin=0.01, components="cmb")["cmb"][0, 0]
    assert int(img[0, 0]) == hp.ang2pix(NSIDE, 20.0, 10.0, lonlat=True)


def test_ambiguous_maps_and_prefer(tmp_path):
    d = agora_dir(tmp_path)
    write_map(d / "agora_spt3g_150ghz_ltszNGbahamas78_uk.fits", np.zeros(NPIX))
    with pytest.raises(InputError, match="several tsz maps at 150 GHz.*--prefer"):
        find_agora_maps(d)
    names = [m.name for m in find_agora_maps(d, prefer=("bahamas80",))]
    assert "agora_spt3g_150ghz_ltszNGbahamas80_uk.fits" in names
    (tmp_path / "bare").mkdir()
    write_map(tmp_path / "bare" / "agora_lkszNG_uk.fits", np.zeros(NPIX))
    with pytest.raises(InputError, match="need at least the lensed CMB and tSZ"):
        open_agora_dir(tmp_path / "bare")
    write_map(tmp_path / "bare" / "agora_lcmbNG.fits", np.zeros(NPIX))  # no unit anywhere
    write_map(tmp_path / "bare" / "agora_ltszNG_y.fits", np.zeros(NPIX))
    with pytest.raises(InputError, match=r"agora_lcmbNG\.fits: no unit keyword"):
        open_agora_dir(tmp_path / "bare")


def test_halo_shells(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-80, 80, n)
    z, mvir = rng.uniform(0.05, 2.0, n), 10 ** rng.uniform(13.5, 15.2, n)
    d = agora_dir(tmp_path, [shell(rng, ra[:30], dec[:30], z[:30], mvir[:30]),
                             shell(rng, ra[30:], dec[30:], z[30:], mvir[30:])])
    paths = sorted((d / "halocat").glob("*.npz"))
    t = read_agora_halos(paths, mass_floor=0.0)
    assert len(t) == n and list(t["halo_id"]) == list(range(n))
    np.testing.assert_allclose(t["m_vir"], mvir, rtol=1e-12)  # Msun/h -> Msun
    np.testing.assert_allclose(t["m500"], 0.55 * mvir, rtol=1e-12)
    np.testing.assert_allclose(t["m200c"], 0.82 * mvir, rtol=1e-12)
    np.testing.assert_allclose(t["r_vir"], bn_r_vir(mvir, z), rtol=1e-9)  # comoving Mpc/h -> proper Mpc
    assert t.meta["rvir"].startswith("comoving") and t.meta["h"] == "0.6777"
    assert t["ra"].unit == u.deg and "source_halo_id" in t.colnames and t["v_los"].unit == u.km / u.s
    floor = read_agora_halos(paths, mass_floor=2e14, footprint=Footprint(0, 180, -90, 90))
    keep = (mvir >= 2e14) & (ra < 180)
    assert list(floor["halo_id"]) == list(np.nonzero(keep)[0])
    # bad shells: one line naming the file
    np.savez(tmp_path / "agora_halolc_bad.npz", ra=ra, dec=dec, z=z)
    with pytest.raises(InputError, match=r"agora_halolc_bad\.npz: missing key\(s\) mvir"):
        read_agora_halos([tmp_path / "agora_halolc_bad.npz"])
    cut = tmp_path / "agora_halolc_cut.npz"
    cut.write_bytes(paths[1].read_bytes()[:200])
    with pytest.raises(InputError, match=r"agora_halolc_cut\.npz: .*truncated"):
        read_agora_halos([cut])


def test_import_cutouts_labels_against_an_answer_key(tmp_path, capsys):
    rng = np.random.default_rng(5)
    g = 0.5 + np.arange(6) * (20 / 60)  # one halo per cutout cell, 20' apart inside RA, Dec 0.5-2.2
    ra, dec = (a.ravel() for a in np.meshgrid(g, g))
    z = rng.uniform(0.1, 1.2, ra.size)
    mvir = 10 ** rng.uniform(13.8, 14.9, ra.size)
    mvir = np.where(np.abs(np.log(mvir / 2e14)) < 0.01, mvir * 1.05, mvir)
    z = np.where(np.abs(z - 0.25) < 0.005, 0.3, z)
    outside = [np.array([200.0]), np.array([-30.0]), np.array([0.5]), np.array([9e14])]
    d = agora_dir(tmp_path, [shell(rng, ra, dec, z, mvir), shell(rng, *outside)])
    ws = tmp_path / "ws"
    assert main(["import", "--agora", str(d), "--region", "0,3,0,3", "--out", str(ws)]) == 0
    cap = capsys.readouterr()
    assert "simulation agora" in cap.out and "Nside 256" in cap.err
    w = Workspace(ws)
    assert w.products["sky"]["provenance"]["kind"] == "agora_healpix"
    assert len(w.halos()) == int(np.sum(mvir >= 1e14))
    assert main(["cutouts", str(ws), "--levels", "cmb_tsz"]) == 0
    with Workspace(ws).cutout_store() as st:
        assert int(np.sum(st.table["label"])) == int(np.sum((mvir >= 2e14) & (z >= 0.25)))
    # the label rule on another mass definition, recorded in the table
    sky = open_recorded(w.products["sky"]["provenance"], w.root)
    labels = LabelSettings.from_options("m500c", "1e14", "0.2")
    s = build_cutouts(sky, Footprint(0, 3, 0, 3), w.halos(), tmp_path / "c500.h5",
                      CutoutSettings(labels=labels, levels=("cmb_tsz",)))
    assert s["positives"] == int(np.sum((0.55 * mvir >= 1e14) & (z >= 0.2))) > 3




# ------------------------------------------------------------------------------------------------ label rule
def test_label_settings_spellings_and_errors():
    assert LabelSettings() == LabelSettings("vir", 2e14, 0.25)
    assert [mass_definition(s) for s in ("mvir", "M_VIR", "m500", "500c", "m200", "m200c", "200m")] == \
        ["vir", "vir", "500c", "500c", "200c", "200c", "200m"]
    s = LabelSettings.from_options("m500", "1e14", "0.2")
    assert (s.mass_def, s.mass_column, s.mass_min_msun, s.z_min) == ("500c", "m500", 1e14, 0.2)
    assert s.describe() == "M500c >= 1e+14 Msun, z >= 0.2"
    for bad, match in ((("m300",), "label mass 'm300'"), ((None, "lots"), "--label-min 'lots'"),
                       ((None, "-1"), "positive"), ((None, None, "nan"), "redshift")):
        with pytest.raises(ValueError, match=match):
            LabelSettings.from_options(*bad)


def test_label_grid_mass_definitions_and_missing_column():
    fp = Footprint(0, 2, 0, 2)
    grid = CutoutGrid(fp)
    ra, dec, _, _ = grid.centres()
    pick = np.array([10, 50, 90, 130])
    halos = Table({"halo_id": np.arange(4), "ra": ra[pick], "dec": dec[pick], "z": [0.3, 0.3, 0.22, 0.5],
                   "m_vir": [3e14, 1.5e14, 3e14, 2.5e14], "m500": [1.6e14, 0.9e14, 1.7e14, 1.2e14],
                   "m200c": [np.nan] * 4}, meta={"source": "cat.fits"})
    t = label_grid(grid, halos)
    assert sorted(np.nonzero(t["label"])[0]) == [10, 130]  # M_vir >= 2e14, z >= 0.25
    t = label_grid(grid, halos, LabelSettings("500c", 1e14, 0.2))
    assert sorted(np.nonzero(t["label"])[0]) == [10, 90, 130]
    assert t.meta["label_settings"]["mass_column"] == "m500" and np.isfinite(t["m500"][90])
    with pytest.raises(InputError, match=r"cat\.fits: the halo catalogue has no m200c \(200c\) masses.*m_vir, m500"):
        label_grid(grid, halos, LabelSettings("200c"))
