"""The one evaluation policy: the same thresholds from Table 1, export and policy.choose; the learned ensemble."""

import numpy as np
import pytest
from scored_workspaces import scored_copy

from szviewer.evaluate import policy
from szviewer.evaluate.table1 import table1
from szviewer.jobs.evaluate import export_candidates
from szviewer.workspace import Workspace


def test_registry_and_search_rules():
    assert policy.available({"mf_snr"}) == ["MF"]
    assert policy.available({"mf_snr", "cnn_prob"}) == ["MF", "CNN", "AND", "PROD", "OR"]
    assert policy.method_of("and").thresholded == ("cnn_prob", "mf_snr")
    with pytest.raises(ValueError, match="XOR"):
        policy.method_of("XOR")
    # one score: scores 1..4, positives {3, 4}: F1 is 1 at t = 3
    c = policy.search("MF", {"mf_snr": np.array([1.0, 2, 3, 4])}, [0, 0, 1, 1])
    assert c.thresholds == {"mf_snr": 3.0} and c.fit_f1 == 1.0
    # the same, with two halos that no row scores (object level): F1 = 2*2 / (2*2 + 0 + 2)
    c = policy.search("MF", {"mf_snr": np.array([1.0, 2, 3, 4])}, [0, 0, 1, 1], n_missed=2)
    assert c.thresholds["mf_snr"] == 3.0 and c.fit_f1 == pytest.approx(4 / 6)
    assert policy.format_thresholds({"cnn_prob": 0.195512345, "mf_snr": 4.87123}) == \
        "cnn_prob >= 0.1955, mf_snr >= 4.871"
    with pytest.raises(ValueError, match="2 threshold"):
        policy.thresholds_from_values("AND", [0.5])


def test_table1_export_and_choose_agree(small_ws, tmp_path):
    """The same request (method, validation split) gives the same thresholds from every caller (issue 14.1)."""
    path = scored_copy(small_ws["path"], tmp_path / "ws", seed=3)
    ws = Workspace(path)
    with ws.cutout_store() as st:
        t = st.table
    y = np.asarray(t["label"], bool)
    sp = np.asarray(t["split"]).astype(str)
    scores = ws.scores(np.asarray(t["id"]))
    rows = {r.method: r for r in table1(scores, y, sp)}
    for method in ("MF", "CNN", "AND", "PROD", "OR"):
        res = export_candidates(ws, method.lower(), tmp_path / f"{method}.ecsv", rows="cutouts")
        chosen = policy.choose(method, scores, y, sp).thresholds
        assert res["thresholds"] == rows[method].thresholds == chosen, method
    # AND thresholds are a real optimum: no grid cell on validation beats it
    g = policy.choose("AND", scores, y, sp).grid
    assert rows["AND"].fit_f1 == pytest.approx(np.nanmax(g.f1))


def _noisy_candidates(n: int, rng):
    """Candidates whose false MF detections grow with the local noise y0_err: AND and PROD cannot see that."""
    y = rng.random(n) < 0.08
    noise = rng.uniform(1.0, 3.0, n)  # local noise of y0
    snr = np.where(y, rng.normal(6.0, 1.5, n), rng.normal(0.0, 1.0, n) * noise)
    snr[snr < 3.0] = np.nan
    logit = np.where(y, rng.normal(1.5, 1.5, n), rng.normal(-2.0, 1.5, n))
    cols = {"mf_snr": snr, "cnn_prob": 1 / (1 + np.exp(-logit)), "y0_err": noise * 1e-5,
            "y0": np.where(np.isfinite(snr), snr * noise * 1e-5, np.nan)}
    return cols, y


def test_learned_ensemble_is_at_least_the_best_of_prod_and_and():
    from szviewer.evaluate.learned import learned_scores

    rng = np.random.default_rng(5)
    cols, y = _noisy_candidates(6000, rng)
    region = rng.choice(["train", "val", "test"], y.size, p=[0.6, 0.2, 0.2])
    prob, _ = learned_scores(cols, y, region)
    prob2, _ = learned_scores(cols, y, region)
    np.testing.assert_array_equal(prob, prob2)  # seeded
    assert ((prob >= 0) & (prob <= 1)).all()
    cols["learned_prob"] = prob
    val = {m: policy.choose(m, cols, y, region).fit_f1 for m in ("PROD", "AND", "LEARNED")}
    assert val["LEARNED"] >= max(val["PROD"], val["AND"]), val
    # and the threshold chosen on validation holds on test
    rows = {r.method: r for r in table1(cols, y, region)}
    assert rows["LEARNED"].f1 >= max(rows["PROD"].f1, rows["AND"].f1) - 0.02, {k: r.f1 for k, r in rows.items()}


def test_a_calibrated_method_thresholds_at_half_the_best_f1_and_that_holds_better_on_test():
    """LEARNED (a calibrated probability) takes t = F1*/2 of the fit curve (Lipton et al. 2014), fit_f1 the F1
    there; on calibrated scores (y ~ Bernoulli(p)) with a small validation split that rule keeps more test F1
    than the curve's highest point, over 40 seeded skies of candidates."""
    from szviewer.evaluate.curves import f1_curve

    gains = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        p = rng.beta(0.3, 3.0, 3000)
        y = rng.random(p.size) < p
        region = np.where(np.arange(p.size) < 300, "val", "test")
        cols = {"learned_prob": p}
        c = policy.choose("LEARNED", cols, y, region)
        val = f1_curve(p[region == "val"], y[region == "val"])
        assert c.thresholds["learned_prob"] == pytest.approx(val.best().f1 / 2)
        assert c.fit_f1 == pytest.approx(val.counts_at(val.best().f1 / 2).f1) and c.fit_f1 <= val.best().f1
        test = f1_curve(p[region == "test"], y[region == "test"])
        gains.append(test.counts_at(c.thresholds["learned_prob"]).f1 - test.counts_at(val.best().threshold).f1)
    assert np.mean(gains) > 0.005, np.mean(gains)
    # a score that is not a probability keeps the highest point of its curve
    rng = np.random.default_rng(0)
    s = rng.normal(size=500)
    y = s + rng.normal(size=500) > 1.5
    c = policy.choose("MF", {"mf_snr": s}, y, np.full(500, "val"))
    assert c.thresholds["mf_snr"] == f1_curve(s, y).best().threshold
