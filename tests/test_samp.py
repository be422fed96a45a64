"""SAMP round trip (issue 14.6) with astropy's own hub and a test client: the candidate table, a highlighted
row, pointAt and the cutout as FITS (real hub, real messages over XML-RPC on localhost)."""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
import warnings

import numpy as np
import pytest
from scored_workspaces import scored_copy


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    pytest.importorskip("astropy.samp")
    with warnings.catch_warnings():  # deprecated in astropy 8 (pyvo.samp speaks the same protocol)
        warnings.simplefilter("ignore")
        from astropy.samp import SAMPHubServer

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the hub's lock file goes under $HOME
    (tmp_path / "home").mkdir()
    h = SAMPHubServer(web_profile=False, mode="multiple", pool_size=1)
    h.start()
    yield h
    h.stop()


class Listener:
    """A test client standing in for TOPCAT / DS9: records what it receives."""

    def __init__(self, hub):
        from astropy.samp import SAMPIntegratedClient

        self.got: dict[str, list] = {}
        self.event = threading.Event()
        self.client = SAMPIntegratedClient(name="listener")
        self.client.connect(hub=hub, pool_size=1)
        for mtype in ("table.load.votable", "coord.pointAt.sky", "image.load.fits"):
            self.client.bind_receive_notification(mtype, self._got)

    def _got(self, private_key, sender_id, mtype, params, extra):
        self.got.setdefault(mtype, []).append(params)
        self.event.set()

    def wait(self, mtype: str, timeout: float = 10.0) -> dict:
        t0 = time.monotonic()
        while mtype not in self.got and time.monotonic() - t0 < timeout:
            time.sleep(0.02)
        assert mtype in self.got, f"no {mtype} received"
        return self.got[mtype][-1]


def _wait(cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    return cond()


def test_samp_round_trip(hub, small_ws, tmp_path):
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    from szviewer.gui.samp import SampLink
    from szviewer.gui.state import ViewerState

    ws = scored_copy(small_ws["path"], tmp_path / "ws", seed=4)
    state = ViewerState()
    state.open_workspace(ws)
    link = SampLink(state)
    link.connect(hub=hub)
    other = Listener(hub)
    try:
        assert "listener" in link.clients().values()
        # 1. the candidate table, as a VOTable the receiver can read
        table_id, path = link.send_table("CNN", split="all")
        p = other.wait("table.load.votable")
        assert p["table-id"] == table_id
        t = Table.read(urllib.request.url2pathname(urllib.parse.urlparse(p["url"]).path), format="votable")
        expected = state.data.columns["id"][state.predicted("CNN")]
        assert sorted(t["cutout_id"]) == sorted(expected) and len(t) >= 3
        # 2. a row highlighted over there selects that cutout here
        k = 2
        other.client.notify_all({"samp.mtype": "table.highlight.row",
                                 "samp.params": {"table-id": table_id, "url": p["url"], "row": str(k)}})
        assert _wait(lambda: not link._inbox.empty())
        row = link.poll()
        assert row is not None and int(state.data.columns["id"][row]) == int(t["cutout_id"][k])
        assert state.current == row
        # 3. point at the selected candidate
        ra, dec = link.point_at()
        q = other.wait("coord.pointAt.sky")
        assert float(q["ra"]) == pytest.approx(float(state.data.columns["ra"][row]), abs=1e-6)
        assert float(q["dec"]) == pytest.approx(dec, abs=1e-6)
        # 4. its cutout as FITS with a WCS centred on it
        fpath = link.send_cutout()
        r = other.wait("image.load.fits")
        assert r["url"] == fpath.resolve().as_uri()
        with fits.open(fpath) as hdul:
            data, hdr = hdul[0].data, hdul[0].header
        assert data.shape == (3, 32, 32)
        np.testing.assert_allclose(data, state.images(row), rtol=1e-6)
        w = WCS(hdr).celestial
        c_ra, c_dec = w.wcs_pix2world([[15.5, 15.5]], 0)[0]
        assert c_ra == pytest.approx(ra, abs=1e-6) and c_dec == pytest.approx(dec, abs=1e-6)
        assert hdr["BAND2"] == 148
        # an unknown table's highlight is ignored
        other.client.notify_all({"samp.mtype": "table.highlight.row",
                                 "samp.params": {"table-id": "nope", "url": "file:///x", "row": "0"}})
        time.sleep(0.3)
        assert link.poll() is None and state.current == row
    finally:
        other.client.disconnect()
        link.disconnect()
        state.close()


def test_the_app_s_samp_menu(hub, small_ws, tmp_path, qtbot, monkeypatch):
    pytest.importorskip("pytestqt")
    monkeypatch.setenv("SZVIEWER_SETTINGS", str(tmp_path / "s.ini"))
    from szviewer.gui.mainwindow import MainWindow

    ws = scored_copy(small_ws["path"], tmp_path / "ws", seed=5)
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_workspace(str(ws))
    other = Listener(hub)
    try:
        assert w.samp_connect(hub=hub)
        w.f1.show_method("MF")
        w.samp_send_table()
        p = other.wait("table.load.votable")
        assert p["table-id"].startswith("szviewer-mf-")
        w.act_samp_follow.setChecked(True)
        w.state.step(3)
        q = other.wait("coord.pointAt.sky")
        assert float(q["ra"]) == pytest.approx(float(w.state.data.columns["ra"][w.state.current]), abs=1e-6)
        other.client.notify_all({"samp.mtype": "table.highlight.row",
                                 "samp.params": {"table-id": p["table-id"], "url": p["url"], "row": "0"}})
        first = int(w.samp.tables[p["table-id"]][0])
        qtbot.waitUntil(lambda: w.state.current == first, timeout=5000)  # the app's timer applied it
    finally:
        other.client.disconnect()
        w.close()
