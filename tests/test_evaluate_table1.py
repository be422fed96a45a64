"""Table 1: thresholds chosen on validation, applied to test (szviewer.evaluate.table1)."""

import math

import numpy as np
import pytest

from szviewer.evaluate.curves import Counts, confusion, f1_curve
from szviewer.evaluate.ensembles import and_grid, and_predict, or_predict, prod_score
from szviewer.evaluate.table1 import format_table1, table1


def _data(seed=0, n=6000):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.05
    cnn = np.where(y, rng.beta(3, 2, n), rng.beta(0.5, 10, n))
    mf = np.where(y, rng.normal(7, 3, n), rng.normal(0, 2, n))
    mf[mf < 3] = np.nan
    ra = rng.random(n) * 90
    split = np.where(ra < 0.13 * 90, "test", np.where(ra < 0.2 * 90, "val", "train"))
    return {"cnn_prob": cnn, "mf_snr": mf}, y, split


def test_hand_case_mf_only():
    cols = {"mf_snr": np.array([9.0, 5.0, 4.0, np.nan, 8.0, 6.0, 3.0, np.nan])}
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    split = np.array(["val"] * 4 + ["test"] * 4)
    (row,) = table1(cols, y, split)
    # val: t=9 -> F1 2/3, t=5 -> F1 1, t=4 -> 0.8: threshold 5
    assert row.method == "MF" and row.thresholds == {"mf_snr": 5.0}
    assert row.fit_f1 == 1.0
    # test scores 8, 6, 3, NaN with labels 1, 0, 1, 0 at S/N >= 5
    assert row.counts == Counts(tp=1, fp=1, fn=1, tn=1)
    assert row.f1 == 0.5 and row.purity == 0.5 and row.completeness == 0.5


def test_all_methods_match_independent_computation():
    cols, y, split = _data()
    rows = {r.method: r for r in table1(cols, y, split, levels=40)}
    assert list(rows) == ["MF", "CNN", "AND", "PROD", "OR"]
    val, test = split == "val", split == "test"
    for method, col in (("MF", "mf_snr"), ("CNN", "cnn_prob")):
        t = f1_curve(cols[col][val], y[val]).best().threshold
        assert rows[method].thresholds == {col: t}
        assert rows[method].counts == confusion(cols[col][test] >= t, y[test])
    # PROD: ranks within each split, threshold from validation ranks applied to test ranks
    q_val = prod_score(cols["cnn_prob"][val], cols["mf_snr"][val])
    q_test = prod_score(cols["cnn_prob"][test], cols["mf_snr"][test])
    t = f1_curve(q_val, y[val]).best().threshold
    assert rows["PROD"].thresholds == {"rank_product": t}
    assert rows["PROD"].counts == confusion(q_test >= t, y[test])
    # AND: best cell of the validation grid, applied to test
    g = and_grid(cols["cnn_prob"][val], cols["mf_snr"][val], y[val], levels=40)
    t1, t2, f1, _ = g.best()
    assert rows["AND"].thresholds == {"cnn_prob": t1, "mf_snr": t2}
    assert rows["AND"].fit_f1 == pytest.approx(f1)
    assert rows["AND"].counts == confusion(
        and_predict(cols["cnn_prob"][test], cols["mf_snr"][test], t1, t2), y[test]
    )
    t1, t2 = rows["OR"].thresholds.values()
    assert rows["OR"].counts == confusion(
        or_predict(cols["cnn_prob"][test], cols["mf_snr"][test], t1, t2), y[test]
    )
    for r in rows.values():
        assert r.n_apply == test.sum() and r.tp + r.fp + r.fn + r.tn == test.sum()
        assert r.f1 > 0.5


def test_missing_columns_skip_methods():
    cols, y, split = _data()
    rows = table1({"cnn_prob": cols["cnn_prob"]}, y, split)
    assert [r.method for r in rows] == ["CNN"]
    assert table1({}, y, split) == []
    rows = table1(cols, y, split, methods=("PROD",))
    assert [r.method for r in rows] == ["PROD"]
    with pytest.raises(ValueError, match="unknown methods"):
        table1(cols, y, split, methods=("XOR",))
    with pytest.raises(ValueError, match="differ in length"):
        table1({"mf_snr": cols["mf_snr"][:10]}, y, split)


def test_validation_without_positives_predicts_nothing():
    cols, y, split = _data(1)
    y = y & (split != "val")
    rows = table1(cols, y, split, levels=20)
    n_pos_test = int((y & (split == "test")).sum())
    assert len(rows) == 5
    for r in rows:
        assert all(math.isnan(v) for v in r.thresholds.values())
        assert math.isnan(r.fit_f1)
        assert (r.tp, r.fp, r.fn) == (0, 0, n_pos_test)
        assert r.f1 == 0.0 and math.isnan(r.purity) and r.completeness == 0.0


def test_test_split_without_positives():
    cols, y, split = _data(2)
    y = y & (split != "test")
    for r in table1(cols, y, split, levels=20):
        assert r.tp == 0 and r.fn == 0
        assert math.isnan(r.completeness)
        assert r.f1 == 0.0 if r.fp else math.isnan(r.f1)


def test_format_table1():
    cols, y, split = _data()
    rows = table1(cols, y, split, levels=20)
    text = format_table1(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + 5
    mf = rows[0]
    assert lines[2].split()[:1] == ["MF"]
    assert f"{mf.tp:>7d} {mf.fp:>7d} {mf.fn:>7d} {mf.tn:>9d}" in lines[2]
    assert f"{mf.f1:.2f}" in lines[2]
    paper = format_table1(rows, style="paper")
    assert "Has Cluster" in paper and str(rows[3].tn) in paper
    assert len(paper.splitlines()) == 3 + 2 * 5
    with pytest.raises(ValueError):
        format_table1(rows, style="latex")
