"""The F1 panel's live object-level numbers (pytest-qt, offscreen): the candidates are read once per workspace on
a worker thread, never on the GUI thread; the panel says 'loading…' until they arrive; and a set read from a
workspace or inputs that have changed since it was asked for is never shown."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from szviewer.workspace import Workspace

pytest.importorskip("pytestqt")

from scored_workspaces import bare_copy, scored_copy  # noqa: E402

SENTINEL = "made from the workspace as it was before"


@pytest.fixture(autouse=True)
def _settings(tmp_path, monkeypatch):
    """Each test gets its own QSettings file and szviewer home."""
    monkeypatch.setenv("SZVIEWER_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture()
def window(qtbot):
    from szviewer.gui.mainwindow import MainWindow

    w = MainWindow()
    w.confirm_close = lambda: True
    qtbot.addWidget(w)
    w.show()
    yield w


@pytest.fixture(scope="module")
def scored_ws(small_ws, tmp_path_factory):
    """Cutout scores, no candidate catalogue."""
    return scored_copy(small_ws["path"], tmp_path_factory.mktemp("gui_scored") / "scored", seed=1)


@pytest.fixture(scope="module")
def objects_ws(small_ws, tmp_path_factory):
    """The small sky cut again with wide val and test bands and the 1e14 Msun label rule (halos to count in both),
    scored, and with an MF candidate catalogue as the MF job writes it: one candidate 0.3' from each labelled halo
    and one at the centre of every other cutout with an S/N, each with its cutout's S/N."""
    from astropy.table import Table

    from szviewer.cutouts.build import CutoutSettings
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.gui.detections import halo_positions
    from szviewer.gui.scores import CutoutData
    from szviewer.jobs.cutouts import make_cutouts

    base = tmp_path_factory.mktemp("gui_objects")
    ws = bare_copy(small_ws["path"], base / "relabelled")
    make_cutouts(ws, CutoutSettings(labels=LabelSettings(mass_min_msun=1e14, test_below=0.4, val_below=0.7)),
                 overwrite=True)
    dst = scored_copy(base / "relabelled", base / "ws", seed=1)
    ws = Workspace(dst)
    with ws.cutout_store() as st:
        data = CutoutData.from_table(st.table)
    c = data.columns
    snr = ws.scores(c["id"])["mf_snr"]
    hra, hdec, hrow = halo_positions(c)
    neg = np.flatnonzero(~c["label"] & np.isfinite(snr))
    ra = np.concatenate([hra + 0.3 / 60 / np.cos(np.radians(hdec)), c["ra"][neg]])
    dec = np.concatenate([hdec, c["dec"][neg]])
    s = np.concatenate([snr[hrow], snr[neg]])
    keep = np.isfinite(s)
    with ws.writing("mf", inputs=("cutouts",), overwrite=True) as w:
        w.write_scores(c["id"], {"mf_snr": snr})
        Table({"ra": ra[keep], "dec": dec[keep], "snr": s[keep]}).write(w.path("mf_catalog.fits"))
    return dst


def _shown_objects(window, method: str) -> str:
    return window.f1.plots[method].summary.text().split("<br>")[1]


def _objects_text(r) -> str:
    from szviewer.gui.common import fmt

    return (f"test objects: F1 <b>{fmt(r['f1'])}</b>, purity {fmt(r['purity'])}, completeness "
            f"{fmt(r['completeness'])}")


def test_f1_panel_shows_the_object_level_numbers_at_the_threshold(qtbot, window, scored_ws, objects_ws):
    """Under each plot, the object-level purity, completeness and F1 on the test region at the current threshold:
    what evaluate_objects counts at its thresholds, and a count by hand at any other; read once per workspace."""
    from szviewer.evaluate.objects import evaluate_objects
    from szviewer.jobs.catalogue import load_objects

    window.open_workspace(str(scored_ws))  # cutout scores only: a hint at once, no numbers, no read
    assert not window.state.objects.loading
    assert _shown_objects(window, "MF") == "objects: no candidate catalogue yet: run the matched filter (or the " \
                                           "dense CNN)"
    ws_path = objects_ws
    window.open_workspace(str(ws_path))
    s = window.state
    oset = load_objects(Workspace(ws_path), learned=False)
    table = evaluate_objects(oset.cands, oset.halos, oset.of_halo)
    test = np.asarray(oset.cands["region"]) == "test"
    matched = np.asarray(oset.cands["matched"], bool)
    n_halos = int((np.asarray(oset.halos["region"]) == "test").sum())
    snr = np.asarray(oset.cands["mf_snr"], float)
    assert n_halos >= 5 and matched[test].sum() >= 5
    qtbot.waitUntil(lambda: not s.objects.loading, timeout=60000)  # read on a worker thread
    prepared = s.object_set()
    # at the thresholds evaluate chose on val, the panel shows evaluate's test-region numbers
    s.set_threshold("MF", table["MF"]["thresholds"]["mf_snr"])
    assert _shown_objects(window, "MF") == _objects_text(table["MF"])
    a = table["AND"]["thresholds"]
    s.set_threshold("AND", (a["cnn_prob"], a["mf_snr"]))
    assert _shown_objects(window, "AND") == _objects_text(table["AND"])
    # two other thresholds, two other numbers, each the count by hand: TP passing matched candidates of the test
    # region, FP the other passing ones, FN the test region's halos less TP
    shown = set()
    for t in (5.5, 8.0):
        s.set_threshold("MF", t)
        ok = test & (snr >= t)
        tp, fp = int((ok & matched).sum()), int((ok & ~matched).sum())
        want = {"f1": 2 * tp / (2 * tp + fp + n_halos - tp), "purity": tp / (tp + fp), "completeness": tp / n_halos}
        got = s.object_counts("MF")
        assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, n_halos - tp)
        assert {k: got[k] for k in want} == pytest.approx(want)
        assert _shown_objects(window, "MF") == _objects_text(want)
        shown.add(_shown_objects(window, "MF"))
    assert len(shown) == 2 and _objects_text(table["MF"]) not in shown
    assert s.object_set() is prepared  # a threshold move only counts; the candidates were read once
    # no dense CNN candidates: the CNN tab says so instead of counting the MF rows' cell probabilities
    assert _shown_objects(window, "CNN").startswith("test objects: no CNN candidates")
    window.state.reload()
    assert s.object_set() is not prepared  # a workspace change reads them again
    qtbot.waitUntil(lambda: not s.objects.loading, timeout=60000)
    assert s.object_set()[0] is not None


def _expected_counter(path):
    """The object counter of a workspace read on this thread, as the panel did before the read moved off it."""
    from szviewer.gui.detections import object_counter

    counter, note = object_counter(Workspace(path))
    assert counter is not None and note == ""
    return counter


def _shown_for(window, counter, method: str) -> str:
    from szviewer.gui.detections import policy_thresholds

    return _objects_text(counter.counts(method, policy_thresholds(method, window.state.thresholds[method])))


class _GatedRead:
    """``load_objects`` that records the thread it runs on and, for the first ``n_gated`` calls, waits on a gate
    (before the read, or after it with ``after=True``); the first one's notes are marked with :data:`SENTINEL`
    (``mark``)."""

    def __init__(self, monkeypatch, n_gated: int = 1, after: bool = False, mark: bool = True):
        from szviewer.jobs import catalogue

        self.real = catalogue.load_objects
        self.threads: list[threading.Thread] = []
        self.gates = [threading.Event() for _ in range(n_gated)]
        self.read = [threading.Event() for _ in range(n_gated)]
        self.returned = [threading.Event() for _ in range(n_gated)]
        self.after = after
        self.mark = mark
        monkeypatch.setattr(catalogue, "load_objects", self)

    def __call__(self, *args, **kwargs):
        k = len(self.threads)
        self.threads.append(threading.current_thread())
        if k >= len(self.gates):
            return self.real(*args, **kwargs)
        if not self.after:
            assert self.gates[k].wait(30)
        oset = self.real(*args, **kwargs)
        self.read[k].set()
        if self.after:
            assert self.gates[k].wait(30)
        if k == 0 and self.mark:
            oset.notes.append(SENTINEL)
        self.returned[k].set()
        return oset


def _never_shows(window, what: str) -> None:
    for p in window.f1.plots.values():
        assert what not in p.summary.text() and what not in p.summary.toolTip()
    assert what not in window.state.object_set()[1]


def test_the_candidates_are_read_off_the_gui_thread(qtbot, window, objects_ws, monkeypatch):
    """Opening a workspace draws its summary at once with 'loading…' under each plot; load_objects runs on a
    worker thread; then the panel shows the same object-level numbers as the count on the GUI thread did."""
    want = _expected_counter(objects_ws)
    spy = _GatedRead(monkeypatch, n_gated=1, mark=False)  # a large sky: the read takes a while
    arrived = []
    window.state.events.objects.connect(lambda: arrived.append(window.state.objects.loading))
    assert window.open_workspace(str(objects_ws))  # returns while the candidates are still being read
    s = window.state
    assert s.objects.loading and arrived == [True]
    for m in ("MF", "PROD", "AND"):
        assert _shown_objects(window, m) == "test objects: loading…"
        assert s.object_counts(m) is None
    spy.gates[0].set()
    qtbot.waitUntil(lambda: not s.objects.loading, timeout=30000)
    assert arrived == [True, False]  # the state announced the start and the arrival
    assert len(spy.threads) == 1 and spy.threads[0] is not threading.main_thread()
    for m in ("MF", "PROD", "AND"):
        assert m in want.scores
        assert _shown_objects(window, m) == _shown_for(window, want, m)
    s.set_threshold("MF", 6.0)  # a threshold move counts at once, without another read
    assert _shown_objects(window, "MF") == _shown_for(window, want, "MF") and len(spy.threads) == 1


def test_a_set_read_before_the_workspace_was_reopened_is_dropped(qtbot, window, objects_ws, monkeypatch):
    """The workspace is reloaded while its candidates are read: the first read's set, though it finishes first,
    is never shown; the panel waits for the second read and shows its numbers."""
    want = _expected_counter(objects_ws)
    spy = _GatedRead(monkeypatch, n_gated=2)
    assert window.open_workspace(str(objects_ws))
    s = window.state
    assert s.objects.loading
    s.reload()  # e.g. a job's new scores: a new request, the read in flight is stale
    assert s.objects.loading and _shown_objects(window, "MF") == "test objects: loading…"
    spy.gates[0].set()  # the stale read finishes first ...
    assert spy.returned[0].wait(30)
    qtbot.wait(300)  # ... and the panel's timer polls on
    assert s.objects.loading and _shown_objects(window, "MF") == "test objects: loading…"
    _never_shows(window, SENTINEL)
    spy.gates[1].set()
    qtbot.waitUntil(lambda: not s.objects.loading, timeout=30000)
    assert len(spy.threads) == 2 and threading.main_thread() not in spy.threads
    _never_shows(window, SENTINEL)
    assert _shown_objects(window, "MF") == _shown_for(window, want, "MF")


def test_a_set_whose_inputs_were_rebuilt_during_the_read_is_dropped(qtbot, window, objects_ws, monkeypatch,
                                                                  tmp_path):
    """A job rebuilds the MF catalogue after the candidates were read but before the set arrives: the set is
    dropped and the panel says so; reopening the workspace reads and counts the new one."""
    import shutil

    from astropy.table import Table

    from szviewer.gui.objectset import CHANGED

    path = tmp_path / "ws"
    shutil.copytree(objects_ws, path)
    spy = _GatedRead(monkeypatch, n_gated=1, after=True)
    assert window.open_workspace(str(path))
    s = window.state
    assert spy.read[0].wait(30)  # read from the mf generation the state shows ...
    ws = Workspace(path)
    with ws.cutout_store() as st:
        ids = np.asarray(st.table["id"])
    snr = ws.scores(ids)["mf_snr"]
    cat = Table.read(ws.file("mf", "mf_catalog.fits"))
    with ws.writing("mf", inputs=("cutouts",), overwrite=True) as w:  # ... which is rebuilt now
        w.write_scores(ids, {"mf_snr": snr})
        cat.write(w.path("mf_catalog.fits"))
    spy.gates[0].set()
    qtbot.waitUntil(lambda: not s.objects.loading, timeout=30000)
    assert s.object_set() == (None, CHANGED) and s.object_counts("MF") is None
    assert _shown_objects(window, "MF") == f"objects: {CHANGED}"
    _never_shows(window, SENTINEL)
    s.reload()
    qtbot.waitUntil(lambda: not s.objects.loading, timeout=30000)
    assert _shown_objects(window, "MF") == _shown_for(window, _expected_counter(path), "MF")


def test_a_kept_result_needs_a_thread_job():
    """A job's result itself only comes back from a thread; a process sends a summary."""
    from szviewer.gui.jobs import Job, JobSpec

    with pytest.raises(ValueError, match="keep_result"):
        JobSpec("x", "szviewer.gui.objectset:read_object_set", keep_result=True)
    job = Job(JobSpec("x", "szviewer.gui.detections:object_inputs", {"ws": None}, mode="thread", keep_result=True))
    job.start()
    assert job.wait(10) == "done" and job.result == ()
