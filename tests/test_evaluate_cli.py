"""`szviewer evaluate` and `szviewer export` on a real workspace whose score table holds MF and CNN columns."""

import json
import shutil

import numpy as np
import pytest
from astropy.table import Table

from szviewer.cli import main
from szviewer.workspace import Workspace


@pytest.fixture
def scored_ws(small_ws, tmp_path):
    path = tmp_path / "ws"
    shutil.copytree(small_ws["path"], path)
    ws = Workspace(path)
    with ws.cutout_store() as st:
        t = st.table
    rng = np.random.default_rng(0)
    y = np.asarray(t["label"])
    snr = np.where(y, rng.normal(6, 2, y.size), rng.normal(2, 1, y.size))
    snr[snr < 3] = np.nan  # no detection
    cnn = 1 / (1 + np.exp(-(np.where(y, 2.0, -2.0) + rng.normal(0, 1.5, y.size))))
    ws.write_scores("mf", t["id"], {"mf_snr": snr})
    ws.write_scores("cnn", t["id"], {"cnn_prob": cnn})
    return path, t, snr, cnn


def test_evaluate_prints_table1_and_writes_json_and_report(scored_ws, tmp_path, capsys):
    from szviewer.evaluate.curves import confusion, f1_curve

    path, t, snr, cnn = scored_ws
    assert main(["evaluate", str(path), "--json", str(tmp_path / "e.json"), "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    for m in ("MF", "CNN", "AND", "PROD"):
        assert m in out
    res = json.loads((tmp_path / "e.json").read_text())
    rows = {r["method"]: r for r in res["table1"]}
    # independent computation of the CNN row: threshold = best F1 on validation, counts on test
    sp = np.asarray(t["split"])
    y = np.asarray(t["label"])
    val, test = sp == "val", sp == "test"
    thr = f1_curve(cnn[val], y[val]).best().threshold
    c = confusion(cnn[test] >= thr, y[test])
    assert rows["CNN"]["threshold_cnn_prob"] == pytest.approx(thr)
    assert (rows["CNN"]["tp"], rows["CNN"]["fp"], rows["CNN"]["fn"], rows["CNN"]["tn"]) == (c.tp, c.fp, c.fn, c.tn)
    assert (tmp_path / "rep" / "report.html").stat().st_size > 10_000
    assert list((tmp_path / "rep").glob("*.png"))
    assert Workspace(path).has("evaluation")


def test_export_formats_and_regions(scored_ws, tmp_path, capsys):
    from regions import Regions

    path, t, snr, cnn = scored_ws
    out = tmp_path / "cands.ecsv"
    reg = tmp_path / "cands.reg"
    assert main(["export", str(path), "--method", "and", "--out", str(out), "--regions", str(reg)]) == 0
    cat = Table.read(out)
    assert cat.meta["method"] == "and" and set(cat.meta["thresholds"]) == {"cnn_prob", "mf_snr"}
    assert np.all(cat["cnn_prob"] >= cat.meta["thresholds"]["cnn_prob"])
    assert np.all(cat["mf_snr"] >= cat.meta["thresholds"]["mf_snr"])
    assert len(Regions.read(reg, format="ds9")) == len(cat)
    for fmt in ("fits", "csv", "votable"):
        f = tmp_path / f"c.{fmt}"
        assert main(["export", str(path), "--method", "mf", "--threshold", "4", "--format", fmt, "--out", str(f)]) == 0
        from szviewer.evaluate.export import read_catalog

        back = read_catalog(f, format=fmt)
        assert len(back) == int(np.sum(np.nan_to_num(snr, nan=-1) >= 4))
    # refuses to overwrite, and to take the wrong number of thresholds
    capsys.readouterr()
    assert main(["export", str(path), "--method", "mf", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(path), "--method", "and", "--threshold", "0.5", "--out", str(tmp_path / "x.csv")]) == 2


def test_evaluate_without_scores_says_what_to_run(small_ws, capsys):
    assert main(["evaluate", str(small_ws["path"])]) == 2
    assert "szviewer mf" in capsys.readouterr().err


def test_cnn_per_component_level(scored_ws, tmp_path, capsys):
    from szviewer.evaluate.curves import confusion, f1_curve

    path, t, snr, cnn = scored_ws
    ws = Workspace(path)
    rng = np.random.default_rng(5)
    y = np.asarray(t["label"])
    easy = 1 / (1 + np.exp(-(np.where(y, 4.0, -4.0) + rng.normal(0, 1.0, y.size))))
    ws.write_scores("cnn_cmb_tsz", t["id"], {"cnn_prob_cmb_tsz": easy})
    assert main(["evaluate", str(path), "--json", str(tmp_path / "e.json"), "--report", str(tmp_path / "r")]) == 0
    assert "per component level" in capsys.readouterr().out
    per = {d["level"]: d for d in json.loads((tmp_path / "e.json").read_text())["cnn_per_level"]}
    assert [d["level"] for d in json.loads((tmp_path / "e.json").read_text())["cnn_per_level"]] == ["cmb_tsz", "all"]
    sp = np.asarray(t["split"])
    val, test = sp == "val", sp == "test"
    thr = f1_curve(easy[val], y[val]).best().threshold
    assert per["cmb_tsz"]["test_f1"] == pytest.approx(confusion(easy[test] >= thr, y[test]).f1)
    assert per["cmb_tsz"]["test_auc"] > per["all"]["test_auc"]  # the cleaner level separates better here
    assert list((tmp_path / "r").glob("roc_of_the_cnn_per_component_level*.png"))


def test_the_report_shows_the_mf_selection_function(scored_ws, tmp_path, capsys):
    path, *_ = scored_ws
    assert main(["evaluate", str(path), "--report", str(tmp_path / "r0")]) == 0
    assert "selection function" not in (tmp_path / "r0" / "report.html").read_text()
    assert main(["mf", str(path), "--inject", "6", "--seed", "1"]) == 0
    assert main(["evaluate", str(path), "--report", str(tmp_path / "r1")]) == 0
    html = (tmp_path / "r1" / "report.html").read_text()
    assert "MF selection function by injection: recovered fraction" in html
    assert "MF injections: S/N ratio and position offsets" in html
    assert (tmp_path / "r1" / "mf_selection_function_by_injection_recovered_fraction.png").stat().st_size > 5000
