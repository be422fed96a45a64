"""Object catalogues: one-to-one matching, MF + CNN merging, object-level evaluation, export read back with units."""

import json

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from scored_workspaces import bare_copy

from szviewer.cli import main
from szviewer.evaluate import objects
from szviewer.evaluate.matching import match_one_to_one, separation_arcmin
from szviewer.workspace import Workspace

ARCMIN = 1 / 60.0


def test_one_to_one_matching_closest_first():
    # halos A (10, 0), B (10.1, 0), C (10.2, 0); candidates: 0.3' and 0.6' from A, 0.9' from B, 1.2' from C
    hra, hdec = np.array([10.0, 10.1, 10.2]), np.zeros(3)
    cra = np.array([10.0 + 0.6 * ARCMIN, 10.0 + 0.3 * ARCMIN, 10.1, 10.2])
    cdec = np.array([0.0, 0.0, 0.9 * ARCMIN, 1.2 * ARCMIN])
    idx, sep = match_one_to_one(cra, cdec, hra, hdec, 1.0)
    # the closer candidate takes A; the 0.6' one is a duplicate (A is used, B is 5.4' away); C is too far
    assert idx.tolist() == [-1, 0, 1, -1]
    np.testing.assert_allclose(sep[[1, 2]], [0.3, 0.9], atol=1e-6)
    assert np.isnan(sep[[0, 3]]).all()
    np.testing.assert_allclose(separation_arcmin(10, 0, 10 + 0.6 * ARCMIN, 0), 0.6, atol=1e-9)
    # across RA 0/360
    idx, _ = match_one_to_one([359.999], [0.0], [0.001], [0.0], 1.0)
    assert idx.tolist() == [0]


def _mf_table():
    return Table({"name": ["a", "b", "c"], "ra": [20.0, 20.5, 21.0], "dec": [1.0, 1.0, 1.0],
                  "snr": [9.0, 5.0, 4.5], "theta_c_arcmin": [1.0, 0.5, 2.0], "y0": [1e-4, 5e-5, 4e-5],
                  "y0_err": [1e-5] * 3, "flags": np.array([0, 2, 1], np.int32), "pos_err_arcmin": [0.1, 0.2, 0.3]})


def test_merge_and_evaluate_a_hand_made_sky():
    mf = _mf_table()
    # CNN: one 0.5' from MF 'a' (merged), one 1.5' from MF 'b' (not merged), one alone far away
    cnn = Table({"ra": [20.0 + 0.5 * ARCMIN, 20.5 + 1.5 * ARCMIN, 22.0], "dec": [1.0, 1.0, 1.0],
                 "prob": [0.9, 0.8, 0.3], "tile": [0, 0, 0]})
    cnn.meta["STRIDE"] = 2.0
    t = objects.merge_candidates(mf, cnn, bright_sources=(np.array([22.0 + 1.0 * ARCMIN]), np.array([1.0])))
    assert len(t) == 5
    assert t["source"].tolist() == ["MF+CNN", "MF", "MF", "CNN", "CNN"]
    assert t["ra"][0] == 20.0 and t["pos_err_arcmin"][0] == 0.1  # the MF position and error win
    assert t["cnn_prob"][0] == 0.9 and np.isnan(t["cnn_prob"][1]) and np.isnan(t["mf_snr"][3])
    assert t["pos_err_arcmin"][3] == pytest.approx(6.0 / np.sqrt(12))  # a window's central cell, uniform
    assert t["near_mask"].tolist() == [False, True, False, False, False]
    assert t["near_source"].tolist() == [False, False, True, False, True]  # MF flag; CNN-only within 2'
    assert t["name"][4].startswith("SZ J012800.0+010000")
    # truth: halos at 'a' (0.2' away), at 'c', and one nobody found; regions by hand
    t["region"] = ["val", "val", "val", "val", "val"]
    halos = Table({"halo_id": [7, 8, 9], "ra": [20.0 + 0.2 * ARCMIN, 21.0, 30.0], "dec": [1.0, 1.0, 1.0],
                   "m_vir": [5e14, 3e14, 2e14], "m500": [3e14, 2e14, 1.4e14], "z": [0.5, 0.7, 0.3],
                   "region": ["val", "val", "val"]})
    of_halo = objects.attach_truth(t, halos)
    assert of_halo.tolist() == [0, 2, -1]
    assert t["matched"].tolist() == [True, False, True, False, False]
    assert t["halo_offset_arcmin"][0] == pytest.approx(0.2 * np.cos(np.deg2rad(1.0)), abs=1e-6)
    assert t["halo_m500"][2] == 2e14
    # thresholds fit and counted on 'val': MF S/N >= 4.5 finds both (TP 2, FP 'b' 1, FN the unfound halo 1)
    res = objects.evaluate_objects(t, halos, of_halo, methods=["MF"],
                                   settings=objects.policy.PolicySettings(fit="val", apply="val"))
    r = res["MF"]
    assert r["thresholds"] == {"mf_snr": 4.5}
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["f1"] == pytest.approx(4 / 6) and r["completeness"] == pytest.approx(2 / 3)
    assert sum(r["completeness_m500"]["n"]) == 3 and sum(r["completeness_m500"]["detected"]) == 2


@pytest.fixture(scope="module")
def mf_ws(small_ws, tmp_path_factory):
    """The small workspace with a real MF run (its catalogue) and CNN scores per cutout derived from the labels."""
    from szviewer.jobs.mf import run_mf_on_workspace

    path = tmp_path_factory.mktemp("objects") / "ws"
    ws = bare_copy(small_ws["path"], path)
    run_mf_on_workspace(ws)
    with ws.cutout_store() as st:
        t = st.table
    rng = np.random.default_rng(1)
    y = np.asarray(t["label"])
    ws.write_scores("cnn", t["id"], {"cnn_prob": np.where(y, rng.beta(4, 1.5, y.size), rng.beta(0.3, 12, y.size))})
    return path


def test_export_objects_in_every_format_with_units(mf_ws, tmp_path, capsys):
    for fmt in ("ecsv", "fits", "csv", "xml"):
        out = tmp_path / f"objects.{fmt}"
        assert main(["export", str(mf_ws), "--method", "mf", "--threshold", "4.5", "--out", str(out)]) == 0
        msg = capsys.readouterr().out
        assert msg.startswith("wrote ") and "objects" in msg and "mf_snr >= 4.5" in msg and str(out) in msg
        back = Table.read(out)  # no options, every format
        assert len(back) > 0 and (np.asarray(back["mf_snr"]) >= 4.5).all()
        for col in ("name", "ra", "dec", "pos_err_arcmin", "mf_snr", "theta_c_arcmin", "y0", "cnn_prob",
                    "score", "near_source", "near_mask", "halo_id", "halo_m500", "halo_z", "halo_offset_arcmin"):
            assert col in back.colnames, (fmt, col)
        assert str(back["name"][0]).startswith("SZ J")
        if fmt != "csv":  # plain CSV carries no units; read_catalog restores them
            assert back["ra"].unit == u.deg and back["pos_err_arcmin"].unit == u.arcmin
            assert back["halo_m500"].unit == u.Msun
        from szviewer.evaluate.export import read_catalog

        full = read_catalog(out)
        assert full["ra"].unit == u.deg and full["halo_m500"].unit == u.Msun
        assert full["theta_c_arcmin"].unit == u.arcmin
        assert all(full[c].unit is not None for c in full.colnames if full[c].dtype.kind == "f")
    # the overwrite error names the file and the flag
    assert main(["export", str(mf_ws), "--method", "mf", "--threshold", "4.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and "overwrite=True" not in err


def test_export_takes_a_users_redshifts_for_the_arnaud_mass(mf_ws, tmp_path, capsys):
    """A follow-up table (ra, dec, z) matched within 1': its z gives the Arnaud M500 of those objects (z_source
    'user'), the rest keep the halo's; a table without a redshift column is refused in one line, before any work."""
    from szviewer.evaluate.mass import m500_from_y0

    base = tmp_path / "base.ecsv"
    assert main(["export", str(mf_ws), "--method", "mf", "--threshold", "4.5", "--out", str(base)]) == 0
    ref = Table.read(base)
    pick = np.nonzero(np.isfinite(np.asarray(ref["y0"], float)))[0][:3]
    follow = Table({"RA": np.asarray(ref["ra"])[pick] + 0.3 / 60, "Dec": np.asarray(ref["dec"])[pick],
                    "redshift": [0.31, 0.52, 0.87][:pick.size]})  # 0.3' off: within the 1' match
    follow.add_row((10.0, -80.0, 0.4))  # far from every object: matches nothing
    zfile = tmp_path / "followup.fits"
    follow.write(zfile)
    capsys.readouterr()
    out = tmp_path / "with_z.ecsv"
    assert main(["export", str(mf_ws), "--method", "mf", "--threshold", "4.5", "--redshifts", str(zfile),
                 "--out", str(out)]) == 0
    got = Table.read(out)
    assert len(got) == len(ref) and list(got["name"]) == list(ref["name"])
    user = np.asarray(got["z_source"]) == "user"
    assert user.sum() == pick.size and np.array_equal(np.nonzero(user)[0], pick)
    np.testing.assert_allclose(np.asarray(got["z_used"])[pick], follow["redshift"][:pick.size])
    want = m500_from_y0(np.asarray(got["y0"])[pick], np.asarray(got["theta_c_arcmin"])[pick],
                        np.asarray(follow["redshift"][:pick.size], float))
    np.testing.assert_allclose(np.asarray(got["m500_arnaud"])[pick], want, rtol=1e-10)
    others = ~user
    np.testing.assert_array_equal(np.asarray(got["z_used"])[others], np.asarray(ref["z_used"])[others])
    assert set(np.asarray(got["z_source"])[others]) <= {"truth", "none"}
    bad = tmp_path / "noz.csv"
    Table({"ra": [1.0], "dec": [1.0], "mass": [1e14]}).write(bad)
    assert main(["export", str(mf_ws), "--method", "mf", "--threshold", "4.5", "--redshifts", str(bad),
                 "--out", str(tmp_path / "never.ecsv")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "no redshift column" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never.ecsv").exists()


def test_evaluate_reports_objects_and_aucs(mf_ws, tmp_path, capsys):
    js = tmp_path / "e.json"
    assert main(["evaluate", str(mf_ws), "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "Objects (one-to-one" in text and "AUC (test cutouts)" in text
    res = json.loads(js.read_text())
    assert set(res["auc_test"]) >= {"MF", "CNN", "PROD"}
    obj = res["objects"]
    # MF candidates only (each with its cell's CNN probability): the ensembles are rows, the CNN alone is not
    assert {"MF", "AND", "PROD", "OR"} <= set(obj["methods"]) and "CNN" not in obj["methods"]
    assert "no CNN candidates with positions yet: run `szviewer predict WS --dense`" in text
    ws = Workspace(mf_ws)
    n_test_halos = obj["halos"]["test"]
    for r in obj["methods"].values():
        assert r["tp"] + r["fn"] == n_test_halos
        assert 0 <= r["tp"] <= n_test_halos
    # the thresholds in the JSON are what export uses for the same request
    out = tmp_path / "and.ecsv"
    assert main(["export", str(mf_ws), "--method", "and", "--out", str(out)]) == 0
    cat = Table.read(out)
    assert cat.meta["thresholds"] == obj["methods"]["AND"]["thresholds"]
    assert ws.has("evaluation")


def test_arnaud_mass_inverts_the_profile_and_refuses_missing_input():
    """y0 chosen so the beta model's Y inside theta500 equals the Arnaud profile's: the estimate returns M500."""
    from szviewer.evaluate.mass import m500_from_y0, mass_scatter, r500_mpc, y_beta_arcmin2
    from szviewer.sky.pressure import theta500_arcmin, y_cylinder_arcmin2

    m500 = np.array([1.5e14, 4e14, 9e14])
    z = np.array([0.3, 0.8, 1.4])
    tc = np.array([0.5, 1.0, 1.5])
    r = r500_mpc(m500, z)
    th = theta500_arcmin(r, z)
    y0 = y_cylinder_arcmin2(m500, r, z, radius_r500=1.0) / y_beta_arcmin2(1.0, tc, th)
    np.testing.assert_allclose(m500_from_y0(y0, tc, z), m500, rtol=1e-6)
    # by hand: rho_c(0.8) = 2.775e11 h^2 (0.264 * 1.8^3 + 0.736) = 3.19e11 Msun/Mpc^3 -> R500 = 0.843 Mpc
    assert r[1] == pytest.approx(0.843, rel=5e-3)
    assert np.isnan(m500_from_y0([np.nan, 1e-4, 1e-4], [1.0, 1.0, 1.0], [0.5, np.nan, -1.0])).all()
    s = mass_scatter(m500 * 10**0.1, m500)
    assert s["bias_dex"] == pytest.approx(0.1) and s["scatter_dex"] == pytest.approx(0.0, abs=1e-12)
