"""The desktop app with pytest-qt (offscreen): open, thresholds, the false-negative walk, jobs, export, session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from szviewer.workspace import Workspace

pytest.importorskip("pytestqt")

from PyQt6 import QtCore  # noqa: E402
from scored_workspaces import bare_copy, scored_copy  # noqa: E402

from szviewer.evaluate.curves import f1_curve  # noqa: E402


@pytest.fixture(autouse=True)
def _settings(tmp_path, monkeypatch):
    """Each test gets its own QSettings file and szviewer home."""
    monkeypatch.setenv("SZVIEWER_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def wsdir(small_ws, tmp_path_factory):
    base = tmp_path_factory.mktemp("gui_app")
    bare_copy(small_ws["path"], base / "bare")
    return {"scored": scored_copy(small_ws["path"], base / "scored", seed=1),
            "cnn_only": scored_copy(small_ws["path"], base / "cnn_only", mf=False, seed=1),
            "bare": base / "bare"}


@pytest.fixture()
def window(qtbot):
    from szviewer.gui.mainwindow import MainWindow

    w = MainWindow()
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    w.show()
    yield w
    for job in w.runner.active():
        job.cancel()
        job.wait(10)


def test_opens_a_workspace_with_scores(window, wsdir):
    assert window.open_workspace(str(wsdir["scored"]))
    s = window.state
    assert window.central.currentWidget() is window.inspector
    assert s.current is not None and window.inspector.grab_rgb().shape == (32, 32, 3)
    assert window.gallery.model.rowCount() == s.n
    assert set(window.f1.stats.rows) == {(m, sp) for m in ("MF", "CNN", "PROD", "AND") for sp in ("val", "test")}
    assert "scores: cnn_prob, mf_snr" in window.status_label.text()


def test_a_malformed_or_stale_workspace_is_shown_not_a_hang(window, wsdir, tmp_path):
    """A damaged manifest: the app says which file and field, and stays usable; stale scores are announced."""
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(wsdir["bare"], bad)
    m = json.loads((bad / "workspace.json").read_text())
    del m["bands"]
    (bad / "workspace.json").write_text(json.dumps(m))
    assert not window.open_workspace(str(bad))
    assert "workspace.json" in window._last_error and "bands" in window._last_error
    assert window.open_workspace(str(wsdir["scored"]))  # still usable afterwards
    stale = tmp_path / "stale"
    shutil.copytree(wsdir["scored"], stale)
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts

    make_cutouts(Workspace(stale), CutoutSettings(), overwrite=True)
    assert window.open_workspace(str(stale))
    assert any("mf scores are stale" in w and "--overwrite" in w for w in window.state.warnings)
    assert "stale" in window.statusBar().currentMessage()


def test_threshold_drag_shows_the_engines_f1(window, wsdir, qtbot):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    plot = window.f1.plots["CNN"]
    window.f1.show_method("CNN")
    sc, y, split = s.data.scores["cnn_prob"], s.labels, s.data.columns["split"]
    for t in (0.2, 0.45, 0.8):
        for x in np.linspace(t - 0.1, t, 6):  # a burst of drag events: only the last is applied
            plot.line.setValue(float(x))
        qtbot.waitUntil(lambda t=t: s.thresholds["CNN"] == pytest.approx(t), timeout=2000)
        for sp in ("val", "test"):
            c = f1_curve(sc[split == sp], y[split == sp]).counts_at(t)
            shown = window.f1.stats.shown("CNN", sp, "F1")
            assert shown == ("–" if not np.isfinite(c.f1) else f"{c.f1:.3f}" if c.f1 < 1 else f"{c.f1:.3g}")
            assert window.f1.stats.shown("CNN", sp, "TP") == str(c.tp)
            assert window.f1.stats.shown("CNN", sp, "FN") == str(c.fn)
    window.f1.plots["CNN"].snap_btn.click()
    best = f1_curve(sc[split == "val"], y[split == "val"]).best()
    assert s.thresholds["CNN"] == pytest.approx(best.threshold)
    assert plot.line.value() == pytest.approx(best.threshold)


def test_and_point_drag(window, wsdir, qtbot):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    window.f1.split.setCurrentText("all")  # the small sky has few MF detections in val alone
    andp = window.f1.plots["AND"]
    g = andp.grid
    assert g is s.and_grid("all") and g.t_b.size > 3
    ka, kb = g.t_a.size // 2, 2
    andp.target.setPos(ka + 0.5, kb + 0.5)
    qtbot.waitUntil(lambda: s.thresholds["AND"] == pytest.approx((g.t_a[ka], g.t_b[kb])), timeout=2000)
    c = s.counts("AND", "val")
    assert window.f1.stats.shown("AND", "val", "TP") == str(c.tp)
    assert window.f1.stats.shown("AND", "val", "FP") == str(c.fp)


def test_walk_false_negatives_with_the_keyboard(window, wsdir, qtbot):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    s.set_threshold("CNN", 0.9)  # strict: several clusters are missed
    window.gallery.set_outcome_filter("CNN", "FN")
    fn = np.flatnonzero(s.labels & (s.data.scores["cnn_prob"] < 0.9))
    assert fn.size >= 2
    table = window.gallery.table
    table.setFocus()
    assert s.current == fn[0]
    visited = [s.current]
    for _ in range(fn.size - 1):
        qtbot.keyClick(table, QtCore.Qt.Key.Key_J)
        visited.append(s.current)
    assert visited == list(fn)
    assert all(s.outcome_of("CNN", r) == "FN" for r in visited)
    qtbot.keyClick(table, QtCore.Qt.Key.Key_K)
    assert s.current == fn[-2]
    qtbot.keyClick(table, QtCore.Qt.Key.Key_Down)
    assert s.current == fn[-1]
    with qtbot.waitSignal(window.gallery.inspect) as sig:
        qtbot.keyClick(table, QtCore.Qt.Key.Key_Return)
    assert sig.args == [fn[-1]]
    assert "FN" in window.inspector.info.text()
    qtbot.keyClick(window.inspector, QtCore.Qt.Key.Key_K)  # the inspector walks the same list
    assert s.current == fn[-2]
    # the categories follow the threshold
    s.set_threshold("CNN", 0.0)
    qtbot.waitUntil(lambda: window.gallery.model.rowCount() == 0, timeout=2000)


def test_gallery_sorts_by_header(window, wsdir):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    g = window.gallery
    keys = [k for k, _ in g.model.cols]
    g.table.horizontalHeader().sectionClicked.emit(keys.index("cnn_prob"))
    p = s.data.scores["cnn_prob"][g.model.rows]
    assert (np.diff(p) <= 0).all()  # scores: largest first
    assert g.model.data(g.model.index(0, keys.index("cnn_prob"))) == f"{p[0]:.3f}"
    g.table.horizontalHeader().sectionClicked.emit(keys.index("cnn_prob"))
    assert (np.diff(s.data.scores["cnn_prob"][g.model.rows]) >= 0).all()
    g.table.horizontalHeader().sectionClicked.emit(keys.index("m_vir"))
    m = s.data.columns["m_vir"][g.model.rows]
    assert (np.diff(m[np.isfinite(m)]) <= 0).all() and np.isfinite(m[: np.isfinite(m).sum()]).all()
    g.split.setCurrentIndex(g.split.findData("val"))
    assert set(s.data.columns["split"][g.model.rows]) == {"val"}
    assert g.count.text().startswith(f"{(s.data.columns['split'] == 'val').sum():,} of")


def test_flag_and_note_are_saved(window, wsdir, qtbot, tmp_path):
    ws = shutil.copytree(wsdir["scored"], tmp_path / "ws")
    window.open_workspace(str(ws))
    s = window.state
    row = s.current
    qtbot.keyClick(window.gallery.table, QtCore.Qt.Key.Key_F)
    window.inspector.note.setPlainText("ring-like residual")
    qtbot.waitUntil(lambda: s.annotation(row).get("note") == "ring-like residual", timeout=3000)
    doc = json.loads((ws / "annotations.json").read_text())
    entry = doc["cutouts"][str(int(s.data.columns["id"][row]))]
    assert entry["flag"] is True and entry["note"] == "ring-like residual"
    assert window.inspector.flag.isChecked()


def test_missing_scores_say_so(window, wsdir):
    window.open_workspace(str(wsdir["bare"]))
    assert not window.state.score_columns()
    msg = window.f1.plots["MF"].message
    assert window.f1.plots["MF"].stack.currentWidget() is msg
    assert msg.text().startswith("no MF scores yet — run the matched filter")
    assert window.gallery.model.rowCount() == window.state.n
    assert window.inspector.grab_rgb() is not None
    window.open_workspace(str(wsdir["cnn_only"]))
    assert window.f1.plots["CNN"].stack.currentIndex() == 0
    assert "needs MF and CNN scores" in window.f1.plots["AND"].message.text()
    assert [window.gallery.show.itemText(i) for i in range(1, 5)] == ["CNN: FN", "CNN: FP", "CNN: TP", "CNN: TN"]


def test_inspector_overlays(window, wsdir):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    row = int(np.flatnonzero(s.labels)[0])
    s.select(row)
    c = s.data.columns
    x, y = window.inspector.panels[1].halo.getData()
    assert x[0] == pytest.approx(16 - c["halo_dx_arcmin"][row] / 0.25)  # east is left
    assert y[0] == pytest.approx(16 + c["halo_dy_arcmin"][row] / 0.25)  # north is up
    r = window.inspector.panels[0].cell.rect()
    assert (r.width(), r.x()) == (24, 4)  # the central 6' cell
    for level in s.levels():
        s.set_display(level=level, stretch="asinh")
        assert window.inspector.level.currentData() == level
    assert "M_vir" in window.inspector.info.text()


def test_sky_click_opens_the_cutout(window, wsdir):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    c = s.data.columns
    row = 42
    assert window.sky.open_at(float(c["ra"][row]), float(c["dec"][row])) == row
    assert s.current == row
    for k in range(window.sky.colour.count()):
        window.sky.colour.setCurrentIndex(k)
        assert window.sky.image.image.shape[-1] == 4


def test_export_and_read_back(window, wsdir, tmp_path):
    from astropy.table import Table

    from szviewer.gui.export_dialog import ExportDialog

    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    s.set_threshold("MF", 4.0)
    dlg = ExportDialog(s, "MF", window)
    assert dlg.t1.value() == pytest.approx(4.0)
    dlg.split.setCurrentText("all")
    dlg.fmt.setCurrentText("votable")
    dlg.path.setText(str(tmp_path / "mf.xml"))
    dlg.regions_path.setText(str(tmp_path / "mf.reg"))
    path, reg, _ = dlg.export()
    t = Table.read(path, format="votable")
    expected = np.flatnonzero(s.data.scores["mf_snr"] >= 4.0)
    assert sorted(t["cutout_id"]) == sorted(s.data.columns["id"][expected])
    assert np.all(np.asarray(t["mf_snr"]) >= 4.0)
    assert reg.read_text().count("circle(") == len(t)
    dlg2 = ExportDialog(s, "AND", window)
    dlg2.path.setText(str(tmp_path / "and.ecsv"))
    dlg2.regions.setChecked(False)
    p2, r2, _ = dlg2.export()
    t2 = Table.read(p2)
    assert r2 is None and t2.meta["method"].upper() == "AND"
    assert t2.meta["thresholds"]["cnn_prob"] == pytest.approx(s.thresholds["AND"][0])


def test_jobs_run_to_completion_and_cancel(window, qtbot, tmp_path):
    from szviewer.gui.jobs import JobSpec

    panel = window.jobs
    out = tmp_path / "sim1"
    job = panel.submit(JobSpec("simulate 1 deg²", "szviewer.gui.jobs:simulate",
                               {"out": str(out), "area_deg2": 1.0, "seed": 3}, creates=str(out),
                               open_when_done=True))
    qtbot.waitUntil(lambda: job.status == "done", timeout=60000)
    assert (out / "workspace.json").exists()
    qtbot.waitUntil(lambda: window.state.path == out, timeout=5000)
    assert window.central.currentWidget() is window.welcome  # a sky without cutouts yet
    assert "no cutouts yet" in window.welcome.headline.text()
    assert "1 deg^2" in "\n".join(job.log)
    # build its cutouts from the jobs panel; the workspace reloads with them
    cut = panel.run_on_workspace("cutouts")
    qtbot.waitUntil(lambda: cut.status == "done", timeout=60000)
    qtbot.waitUntil(lambda: window.state.n > 0, timeout=5000)
    assert window.central.currentWidget() is window.inspector

    out2 = tmp_path / "sim2"
    job2 = panel.submit(JobSpec("simulate 1 deg²", "szviewer.gui.jobs:simulate",
                                {"out": str(out2), "area_deg2": 1.0, "seed": 4}, creates=str(out2)))
    panel.list.setCurrentItem(panel.items[job2.id][0])
    assert panel.cancel_btn.isEnabled()
    panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not job2.active, timeout=30000)
    assert job2.status == "cancelled"
    assert not out2.exists()
    assert not list(tmp_path.glob(".sim2*"))


def test_matched_filter_job_scores_appear(window, wsdir, qtbot, tmp_path):
    """The real MF job from the jobs panel: when it is done the workspace reloads with its scores."""
    from szviewer.gui.jobs import available

    if not available("mf"):
        pytest.skip("the matched filter job is not built")
    ws = shutil.copytree(wsdir["bare"], tmp_path / "ws")
    window.open_workspace(str(ws))
    assert "mf_snr" not in window.state.score_columns()
    window.gallery.split.setCurrentIndex(window.gallery.split.findData("val"))
    keep = window.state.visible_rows()[2]
    window.state.select(int(keep))
    assert window.f1.plots["MF"].stack.currentWidget() is window.f1.plots["MF"].message
    job = window.jobs.run_on_workspace("mf")
    qtbot.waitUntil(lambda: not job.active, timeout=120000)
    assert job.status == "done", job.log
    qtbot.waitUntil(lambda: "mf_snr" in window.state.score_columns(), timeout=5000)
    s = window.state
    assert s.filter.split == "val" and window.gallery.split.currentData() == "val"  # a finished job keeps it
    assert s.current == keep
    assert window.f1.plots["MF"].stack.currentIndex() == 0
    assert ("MF", "val") in window.f1.stats.rows
    row = int(np.flatnonzero(s.labels & np.isfinite(s.data.scores["mf_snr"]))[0])
    s.select(row)
    assert s.detections_near(row) and "MF detections in the cutout" in window.inspector.info.text()
    assert len(window.inspector.panels[0].mf.getData()[0]) == len(s.detections_near(row))


def test_the_cnn_candidates_job_maps_the_sky_and_the_candidates_appear(window, wsdir, qtbot, tmp_path):
    """Jobs > CNN candidates (map): the dense CNN job (szviewer predict --dense) from the jobs panel; when it is done
    the workspace reloads with the map's probability at the cutouts (high at the clusters)."""
    ws = shutil.copytree(wsdir["bare"], tmp_path / "ws")
    window.open_workspace(str(ws))
    assert window.jobs.buttons["dense"].isEnabled() and "cnn_dense_prob" not in window.state.score_columns()
    job = window.jobs.run_on_workspace("dense")
    qtbot.waitUntil(lambda: not job.active, timeout=120000)
    assert job.status == "done", job.log
    assert any("CNN candidates:" in line and "(fcn," in line for line in job.log), job.log
    qtbot.waitUntil(lambda: "cnn_dense_prob" in window.state.score_columns(), timeout=5000)
    w = Workspace(ws)
    assert w.has("cnn_dense") and w.products["cnn_dense"]["settings"]["grid_arcmin"] == 1.0
    dense = np.asarray(window.state.data.scores["cnn_dense_prob"], dtype=float)
    assert np.isfinite(dense).mean() > 0.5 and (dense[window.state.labels] > 0.5).mean() > 0.5


def test_a_matched_filter_job_on_a_local_dask_cluster(window, wsdir, qtbot, tmp_path):
    """Issue 16 part 5: the jobs panel runs the MF's tiles on a local Dask cluster of 2 workers, shows the cluster
    (scheduler, dashboard) under the job list and one progress bar, and gives the in-process catalogue byte for
    byte."""
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.workspace import Workspace

    ws = shutil.copytree(wsdir["bare"], tmp_path / "ws")
    ref = shutil.copytree(wsdir["bare"], tmp_path / "ref")
    window.open_workspace(str(ws))
    panel = window.jobs
    panel.compute.where.setCurrentIndex(panel.compute.where.findData("cluster"))
    panel.compute.workers.setValue(2)
    assert panel.compute.workers.isVisibleTo(panel) and not panel.compute.address.isVisibleTo(panel)
    job = panel.run_on_workspace("mf")
    assert job.spec.kwargs["workers"] == 2 and "workers 2" in job.spec.title
    qtbot.waitUntil(lambda: not job.active, timeout=180000)
    assert job.status == "done", job.log
    log = "\n".join(job.log)
    assert "LocalCluster: 2 worker" in log and "scheduler tcp://" in log
    panel.list.setCurrentItem(panel.items[job.id][0])
    assert panel.cluster.isVisibleTo(panel) and panel.cluster.text().startswith("Dask: 2 workers")
    assert "scheduler tcp://" in panel.cluster.toolTip()
    assert job.total > 0 and job.done == job.total  # one bar over the tiles of every worker
    qtbot.waitUntil(lambda: "mf_snr" in window.state.score_columns(), timeout=5000)
    run_mf_on_workspace(Workspace(ref))
    assert Workspace(ws).file("mf", "mf_catalog.fits").read_bytes() == \
        Workspace(ref).file("mf", "mf_catalog.fits").read_bytes()
    panel.compute.where.setCurrentIndex(panel.compute.where.findData("local"))
    assert panel.compute.options() == {}


def test_closing_during_a_job_asks_first(window, qtbot, tmp_path):
    from szviewer.gui.jobs import JobSpec

    out = tmp_path / "sim"
    job = window.jobs.submit(JobSpec("simulate", "szviewer.gui.jobs:simulate", {"out": str(out), "area_deg2": 1.0},
                                     creates=str(out)))
    asked = []
    window.confirm_close = lambda: asked.append(1) or False
    window.close()
    assert asked and window.isVisible() and job.active
    window.confirm_close = lambda: True
    window.close()
    assert not window.isVisible()
    assert job.status == "cancelled" and not out.exists()


def test_welcome_builds_the_demo(qtbot, tmp_path):
    from szviewer.gui.mainwindow import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.open_initial(None)
    assert w.central.currentWidget() is w.welcome
    w.welcome.area.setValue(1)
    job = w.welcome.build_demo()
    qtbot.waitUntil(lambda: not job.active, timeout=90000)
    assert job.status == "done", job.log
    qtbot.waitUntil(lambda: w.state.n > 0, timeout=5000)
    assert w.state.path == tmp_path / "home" / "demo"
    assert w.central.currentWidget() is w.inspector


def test_session_is_restored(qtbot, wsdir, tmp_path):
    from szviewer.gui.mainwindow import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.open_workspace(str(wsdir["scored"]))
    w.state.set_threshold("MF", 5.5)
    w.state.set_threshold("AND", (0.3, 4.2))
    w.state.set_display(stretch="asinh", level="ksz", cmap="viridis", show_mf=False)
    w.state.set_filter(split="test", outcome=("CNN", "TN"))
    w.state.set_sort("cnn_prob", descending=True)
    chosen = int(w.state.visible_rows()[3])
    w.state.select(chosen)
    w.f1.show_method("AND")
    w.sky.show_halos.setChecked(True)
    w.docks["sky"].hide()
    w.close()

    w2 = MainWindow()
    qtbot.addWidget(w2)
    w2.show()
    w2.open_initial(None)
    assert w2.state.path == wsdir["scored"]
    assert w2.state.thresholds["MF"] == 5.5 and w2.state.thresholds["AND"] == (0.3, 4.2)
    assert (w2.state.display.stretch, w2.state.display.level, w2.state.display.cmap) == ("asinh", "ksz", "viridis")
    assert w2.inspector.stretch.currentText() == "asinh" and not w2.inspector.show_mf.isChecked()
    f = w2.state.filter
    assert (f.split, f.outcome, f.sort_key, f.sort_descending) == ("test", ("CNN", "TN"), "cnn_prob", True)
    assert w2.gallery.show.currentData() == "CNN:TN" and w2.gallery.split.currentData() == "test"
    assert w2.state.current == chosen
    assert w2.current_method() == "AND" and w2.sky.show_halos.isChecked()
    assert not w2.docks["sky"].isVisible()
    assert (tmp_path / "settings.ini").is_file()
    w2.close()


def test_start_is_quick_and_without_torch(tmp_path):
    env = dict(os.environ, SZVIEWER_GUI_SMOKE="1", QT_QPA_PLATFORM="offscreen",
               SZVIEWER_SETTINGS=str(tmp_path / "s.ini"))
    r = subprocess.run([sys.executable, "-m", "szviewer.gui.app"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "szviewer: first window torch=False" in r.stdout


def test_first_window_fits_a_1366x768_screen(window, wsdir):
    """The docks and the inspector leave room on a small laptop screen (the walkthrough found 1763 px)."""
    window.open_workspace(str(wsdir["scored"]))
    m = window.minimumSizeHint()
    assert m.width() <= 1366 - 20 and m.height() <= 768 - 60, m
    window.resize(1366, 700)
    QtCore.QCoreApplication.processEvents()
    assert window.width() <= 1366


def test_settings_follow_szviewer_home(monkeypatch, tmp_path):
    from szviewer.gui import session

    monkeypatch.delenv("SZVIEWER_SETTINGS")
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "myhome"))
    assert session.settings_path() == tmp_path / "myhome" / "szviewer.ini"
    session.save_json("probe", {"a": 1})
    session.settings().sync()
    assert (tmp_path / "myhome" / "szviewer.ini").is_file()
    monkeypatch.delenv("SZVIEWER_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert session.settings_path() == tmp_path / "cfg" / "szviewer" / "szviewer.ini"


def test_jobs_menu_and_enter_opens_the_inspector(window, wsdir, qtbot):
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions()}
    jobs = [a.text() for a in menus["Jobs"].actions() if a.text()]
    for want in ("Run the matched filter", "Train the CNN…", "Score with the CNN", "Evaluate (Table 1)"):
        assert want in jobs
    window.open_workspace(str(wsdir["scored"]))
    window.show_welcome()
    assert window.central.currentWidget() is window.welcome
    table = window.gallery.table
    table.setFocus()
    qtbot.keyClick(table, QtCore.Qt.Key.Key_J)
    row = window.state.current
    qtbot.keyClick(table, QtCore.Qt.Key.Key_Return)
    assert window.central.currentWidget() is window.inspector and window.state.current == row


def test_filtered_views_in_the_inspector(window, wsdir):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    row = int(np.flatnonzero(s.labels)[0])
    s.select(row)
    s.display.view = "filtered"  # setting the evented model's value is enough: the view is bound to it
    ins = window.inspector
    assert ins.view.currentData() == "filtered"
    titles = [p.label.text for p in ins.panels]
    assert titles[1].startswith("MF S/N (θc") and titles[2].startswith("Compton y")
    snr, y, theta = ins._filtered(row, s.display.level if s.display.level in s.levels() else "all",
                                  s.images(row))
    assert snr.shape == y.shape == (32, 32) and theta > 0
    assert ins.panels[1].image.image.shape == (32, 32)
    s.display.view = "bands"
    assert ins.panels[1].label.text == "148 GHz"


def test_sky_view_fits_the_data_and_a_click_keeps_the_zoom(window, wsdir, qtbot):
    window.open_workspace(str(wsdir["scored"]))
    s = window.state
    c = s.data.columns
    sky = window.sky
    assert not sky.show_halos.isChecked() and not sky.show_mf.isChecked()  # outcome colours stay visible
    qtbot.wait(50)
    (x0, x1), _ = sky.plot.getPlotItem().vb.viewRange()
    span = float(c["ra"].max() - c["ra"].min())
    assert (x1 - x0) < 1.4 * span + 0.5  # the RA axis spans the footprint (the walkthrough saw twice that)
    before = sky.plot.getPlotItem().vb.viewRange()
    row = 42
    ra, dec = float(c["ra"][row]) + 0.02, float(c["dec"][row]) - 0.02  # off-centre: still the nearest centre
    assert sky.open_at(ra, dec) == s.nearest(ra, dec) == row
    qtbot.wait(50)
    after = sky.plot.getPlotItem().vb.viewRange()
    np.testing.assert_allclose(after, before)


def test_the_view_is_kept_without_a_clean_close(qtbot, wsdir):
    """A killed app (no closeEvent) still comes back on the cutout and filter it showed."""
    from szviewer.gui.mainwindow import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.open_workspace(str(wsdir["scored"]))
    w.state.set_filter(split="val")
    row = int(w.state.visible_rows()[4])
    w.state.select(row)
    qtbot.waitUntil(lambda: not w._session_timer.isActive(), timeout=5000)
    w2 = MainWindow()  # the first window was never closed
    qtbot.addWidget(w2)
    w2.open_initial(None)
    assert w2.state.current == row and w2.state.filter.split == "val"
    for win in (w, w2):
        win.confirm_close = lambda: True


def test_sky_view_is_bound_to_its_model(window, wsdir):
    window.open_workspace(str(wsdir["scored"]))
    s, sky = window.state, window.sky
    s.sky.show_halos = True  # the model drives the widget and the markers
    assert sky.show_halos.isChecked() and len(sky.halos.getData()[0]) == int(s.labels.sum())
    sky.show_halos.setChecked(False)  # and the widget writes the model
    assert s.sky.show_halos is False and len(sky.halos.getData()[0]) == 0
    s.sky.colour = "split:"
    assert sky.colour.currentData() == "split:" and "train" in sky.legend.text()
