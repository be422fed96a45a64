"""The GUI's pure-Python model (szviewer.gui.state, display, skymap, jobs): no Qt needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scored_workspaces import bare_copy, scored_copy

from szviewer.evaluate.curves import confusion, f1_curve
from szviewer.evaluate.ensembles import and_predict, prod_score


@pytest.fixture(scope="module")
def scored_ws(small_ws, tmp_path_factory):
    return scored_copy(small_ws["path"], tmp_path_factory.mktemp("gui_state") / "ws")


@pytest.fixture()
def state(scored_ws):
    from szviewer.gui.state import ViewerState

    s = ViewerState()
    s.open_workspace(scored_ws)
    yield s
    s.close()


def test_counts_match_the_engine(state):
    sc = state.data.scores
    y = state.labels
    split = state.data.columns["split"]
    assert state.available_methods() == ["MF", "CNN", "PROD", "AND"]
    for sp in ("val", "test"):
        m = split == sp
        for method, col in (("MF", "mf_snr"), ("CNN", "cnn_prob")):
            t = state.thresholds[method]
            assert state.counts(method, sp) == f1_curve(sc[col][m], y[m]).counts_at(t)
            assert state.counts(method, sp) == confusion(sc[col][m] >= t, y[m])
        q = prod_score(sc["cnn_prob"], sc["mf_snr"], groups=split)
        assert state.counts("PROD", sp) == confusion(q[m] >= state.thresholds["PROD"], y[m])
        t1, t2 = state.thresholds["AND"]
        assert state.counts("AND", sp) == confusion(and_predict(sc["cnn_prob"][m], sc["mf_snr"][m], t1, t2), y[m])


def test_thresholds_start_at_the_validation_optimum(state):
    m = state.data.columns["split"] == "val"
    best = f1_curve(state.data.scores["cnn_prob"][m], state.labels[m]).best()
    assert state.thresholds["CNN"] == pytest.approx(best.threshold)
    state.set_threshold("CNN", 0.99)
    state.snap("CNN")
    assert state.thresholds["CNN"] == pytest.approx(best.threshold)


def test_outcomes_and_filters_follow_thresholds(state):
    seen = []
    state.events.thresholds.connect(seen.append)
    state.set_threshold("CNN", 0.5)
    assert seen == ["CNN"]
    out = state.outcome("CNN")
    pred = state.data.scores["cnn_prob"] >= 0.5
    np.testing.assert_array_equal(out, 2 * state.labels + pred)
    state.set_filter(outcome=("CNN", "FN"))
    fn = state.visible_rows()
    np.testing.assert_array_equal(fn, np.flatnonzero(state.labels & ~pred))
    state.set_threshold("CNN", 0.95)  # more misses
    fn2 = state.visible_rows()
    assert set(fn) <= set(fn2)
    np.testing.assert_array_equal(fn2, np.flatnonzero(state.labels & (state.data.scores["cnn_prob"] < 0.95)))
    state.set_filter(split="test", outcome=None)
    assert (state.data.columns["split"][state.visible_rows()] == "test").all()
    state.set_filter(split=None, outcome=("FOUND", "MF_ONLY"))
    rows = state.visible_rows()
    assert (state.labels[rows] & state.predicted("MF")[rows] & ~state.predicted("CNN")[rows]).all()


def test_sort_by_score_puts_nan_last(state):
    state.set_filter(split=None, outcome=None)
    state.set_sort("mf_snr", descending=True)
    v = state.data.scores["mf_snr"][state.visible_rows()]
    finite = np.isfinite(v)
    assert finite[: finite.sum()].all() and not finite[finite.sum():].any()
    assert (np.diff(v[finite]) <= 0).all()
    state.set_sort("z")
    z = state.data.columns["z"][state.visible_rows()]
    assert (np.diff(z[np.isfinite(z)]) >= 0).all()
    state.set_sort("id")


def test_step_walks_the_visible_rows(state):
    state.set_filter(split=None, outcome=None)
    vis = state.visible_rows()
    state.select(int(vis[0]))
    assert state.step(1) == vis[1]
    assert state.step(-1) == vis[0]
    assert state.step(-1) == vis[0]  # stays at the first


def test_annotations_are_saved_in_the_workspace(state, scored_ws):
    from szviewer.gui.state import ViewerState

    row = 3
    state.set_annotation(row, flag=True, note="odd ring at 219 GHz")
    doc = json.loads((scored_ws / "annotations.json").read_text())
    key = str(int(state.data.columns["id"][row]))
    assert doc["cutouts"][key]["flag"] is True and doc["cutouts"][key]["note"] == "odd ring at 219 GHz"
    state.set_filter(outcome=None, split=None, flagged_only=True)
    assert list(state.visible_rows()) == [row]
    other = ViewerState()
    other.open_workspace(scored_ws)
    assert other.annotation(row)["note"] == "odd ring at 219 GHz"
    other.close()
    state.set_annotation(row, flag=False, note="")
    assert key not in json.loads((scored_ws / "annotations.json").read_text())["cutouts"]
    state.set_filter(flagged_only=False)


def test_missing_scores_are_reported(small_ws, tmp_path):
    from szviewer.gui.state import ViewerState

    s = ViewerState()
    s.open_workspace(bare_copy(small_ws["path"], tmp_path / "bare").root)
    assert s.available_methods() == []
    assert s.missing_message("MF") == "no MF scores yet — run the matched filter (szviewer mf WS)"
    assert "CNN" in s.missing_message("CNN")
    assert s.outcome_of("MF", 0) is None
    assert s.visible_rows().size == s.n
    s.close()


def test_shared_stretch_and_rgb(state):
    from szviewer.gui import display

    lv = state.band_levels("all", "percentile")
    assert lv.shape == (3, 2) and (lv[:, 1] > lv[:, 0]).all()
    img = state.images(0, "cmb_tsz")
    rgb = display.rgb_composite(img, lv, "asinh")
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    t = display.stretch(np.array([lv[0, 0], lv[0, 1]]), lv[0, 0], lv[0, 1], "linear")
    np.testing.assert_allclose(t, [0, 1])


def test_sky_raster_finds_each_cutout(state):
    from szviewer.gui.skymap import sky_raster

    c = state.data.columns
    r = sky_raster(c["ra"], c["dec"], c["row"])
    shown = set(np.unique(r.index[r.index >= 0]))
    assert shown == set(range(state.n))
    for row in (0, 17, state.n - 1):
        assert r.at(float(c["ra"][row]), float(c["dec"][row])) == row


def test_export_catalog(state, tmp_path):
    from szviewer.evaluate.export import read_catalog
    from szviewer.jobs.evaluate import export_candidates
    from szviewer.workspace import Workspace

    state.set_threshold("MF", 4.2)
    out, reg, table = state.export_catalog(tmp_path / "c.fits", "MF", split="all", regions_path=tmp_path / "c.reg")
    t = read_catalog(out)
    assert len(t) == int(state.predicted("MF").sum())
    assert t.meta["method"].upper() == "MF" and t.meta["thresholds"]["mf_snr"] == pytest.approx(4.2)
    assert {"cutout_id", "ra", "dec", "mf_snr"} <= set(t.colnames)
    assert reg.read_text().count("circle") == len(t)
    # the same request from the CLI's export writes the same rows and columns (issue 14: 17 against 9)
    cli = export_candidates(Workspace(state.path), "MF", tmp_path / "cli.fits", thresholds=[4.2], split=None,
                            allow_stale=True)
    t2 = read_catalog(cli["out"])
    assert t2.colnames == t.colnames and len(t2) == len(t)
    for c in t.colnames:
        np.testing.assert_array_equal(np.asarray(t2[c]), np.asarray(t[c]))


def test_jobs_report_errors(tmp_path):
    from szviewer.gui.jobs import JobRunner, JobSpec

    r = JobRunner()
    job = r.submit(JobSpec("bad", "szviewer.gui.jobs:cutouts", {"workspace": str(tmp_path / "nope")}, mode="thread"))
    assert job.wait(30) == "failed"
    assert "no such workspace folder" in job.error


def test_app_thresholds_are_the_policy_s(state):
    """Snap to optimum and `szviewer export` pick the same thresholds (issue 14: 0.1955 against 0.2553)."""
    from szviewer.evaluate import policy

    cols, y, split = state.data.scores, state.labels, state.data.columns["split"]
    for method in ("MF", "CNN", "PROD", "AND"):
        want = policy.choose(method, cols, y, split).values
        state.snap(method)
        got = state.thresholds[method]
        assert (tuple(got) if method == "AND" else (got,)) == pytest.approx(want)


def test_models_emit_when_a_value_is_set(state):
    seen = []
    state.events.filter.connect(lambda: seen.append("filter"))
    state.events.display.connect(lambda *_: seen.append("display"))
    state.events.selection.connect(lambda row: seen.append(("selection", row)))
    state.filter.split = "val"
    assert seen[0] == "filter" and set(state.data.columns["split"][state.visible_rows()]) == {"val"}
    assert state.data.columns["split"][state.current] == "val"  # the selection moved to a shown cutout
    state.display.stretch = "asinh"
    assert seen[-1] == "display"
    row = int(state.visible_rows()[1])
    state.selection.row = row
    assert seen[-1] == ("selection", row) and state.current == row
    seen.clear()
    state.set_filter(split="test", outcome=("CNN", "TP"), flagged_only=False)  # one event for the batch
    assert seen.count("filter") == 1
    state.set_filter(split=None, outcome=None)


def test_job_eta_in_words(monkeypatch):
    from szviewer.gui import jobs
    from szviewer.gui.jobs import Job, JobSpec, eta_words

    assert eta_words(None) == "" and eta_words(5) == "a few seconds left"
    assert eta_words(42) == "about 40 s left" and eta_words(185) == "about 3 min left"
    assert eta_words(4800) == "about 1 h 20 min left"
    now = [1000.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: now[0])
    job = Job(JobSpec("t", "x:y"))
    job.status = "running"
    job._q.put(("progress", 0, 50, "reading val"))
    job.poll()
    now[0] += 10
    job._q.put(("progress", 50, 50, "reading val"))
    job.poll()
    job._q.put(("progress", 10, 1200, "r=1 loss=0.69"))  # training starts: a new phase, a new rate
    job.poll()
    assert job.eta_s is None  # not enough of the new phase yet
    now[0] += 20
    job._q.put(("progress", 110, 1200, "r=1 loss=0.41"))
    job.poll()
    assert job.eta_s == pytest.approx(1090 * 20 / 100) and job.eta_text() == "about 4 min left"
