"""The sky view's background band map (pytest-qt, offscreen): built from the tiles, lined up with the RA/Dec
axes, a tSZ decrement at the most massive halo at 148 GHz, and switched off where the sky is not tiled."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from szviewer.workspace import Workspace  # noqa: E402


@pytest.fixture(autouse=True)
def _settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SZVIEWER_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture()
def ws_copy(small_ws, tmp_path):
    path = tmp_path / "ws"
    shutil.copytree(small_ws["path"], path)
    return path


@pytest.fixture()
def sky(qtbot, ws_copy):
    from szviewer.gui.skyview import SkyView
    from szviewer.gui.state import ViewerState

    state = ViewerState()
    view = SkyView(state)
    qtbot.addWidget(view)
    view.show()
    state.open_workspace(ws_copy)
    return view


class _AsKind:
    """The open workspace as if its sky were of another kind (read from elsewhere, not tiles)."""

    def __init__(self, ws, kind):
        self._ws, self.kind = ws, kind

    def __getattr__(self, name):
        return getattr(self._ws, name)


def _choose(view, band):
    view.background_mode.setCurrentIndex(view.background_mode.findData(band))


def test_148_ghz_background_lines_up_and_shows_the_tsz_decrement(sky, ws_copy, qtbot):
    assert sky.background_mode.isEnabled()
    assert sky.shown_background is None and sky.image.opacity() == 1.0
    _choose(sky, 148)
    qtbot.waitUntil(lambda: sky.shown_background is not None, timeout=20000)
    bg = sky.shown_background
    img = sky.background.image
    assert bg.band == 148 and img is not None and img.dtype == np.float32 and img.ndim == 2
    assert np.isfinite(img).all()
    assert sky.background.lut is not None and len(sky.background.lut) <= 256
    lo, hi = sky.background.levels
    assert np.isfinite([lo, hi]).all() and hi > lo
    assert sky.image.opacity() < 1.0  # the cutout colours are translucent over the map

    # the image's rectangle is the footprint, within a pixel
    ra0, ra1, dec0, dec1 = json.loads((ws_copy / "workspace.json").read_text())["geometry"]["footprint"]
    ny, nx = img.shape
    rect = sky.background.mapRectToParent(sky.background.boundingRect())
    px_ra, px_dec = (ra1 - ra0) / nx, (dec1 - dec0) / ny
    assert abs(rect.left() - ra0) <= px_ra and abs(rect.right() - ra1) <= px_ra
    assert abs(rect.top() - dec0) <= px_dec and abs(rect.bottom() - dec1) <= px_dec
    assert sky.plot.getPlotItem().vb.xInverted()  # RA increases to the left, as the cutout raster

    # the most massive halo is a deep decrement at 148 GHz (row 0 of the image is the lowest Dec)
    # (the halo table also holds the halos in the tiles' margins: take the most massive in the footprint)
    h = Workspace(ws_copy).halos()
    hra, hdec, m = (np.asarray(h[c], float) for c in ("ra", "dec", "m_vir"))
    inside = (hra > ra0 + px_ra) & (hra < ra1 - px_ra) & (hdec > dec0 + px_dec) & (hdec < dec1 - px_dec)
    k = int(np.argmax(np.where(inside, m, -np.inf)))
    ra, dec = float(hra[k]), float(hdec[k])
    i = min(int((dec - rect.top()) / rect.height() * ny), ny - 1)
    j = min(int((ra - rect.left()) / rect.width() * nx), nx - 1)
    win = img[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
    assert float(win.min()) < float(np.median(img)) - 50.0  # µK; the CMB's own scatter is larger than this
    # a cleaner view: 148 - 219 GHz cancels the CMB (and the kSZ) and keeps the tSZ decrement
    diff = img - sky.backgrounds[219].image
    dwin = diff[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
    dspread = float(np.percentile(diff, 84) - np.percentile(diff, 16))
    assert float(dwin.min()) < float(np.median(diff)) - 3 * dspread, (float(dwin.min()), dspread)
    assert bg.at(ra, dec) == img[i, j]

    # switching bands uses the cached maps at once; 'none' takes the map away
    _choose(sky, 219)
    assert sky.shown_background is not None and sky.shown_background.band == 219
    _choose(sky, None)
    assert sky.shown_background is None and sky.background.image is None and sky.image.opacity() == 1.0


def test_background_is_off_for_a_sky_that_is_not_tiled(sky):
    s = sky.state
    s.set_data(s.data, workspace=_AsKind(s.workspace, "sehgal"), store=s.store)
    assert not sky.background_mode.isEnabled()
    assert sky.background_mode.currentData() is None
    assert "synthetic" in sky.background_mode.toolTip()
    assert sky.shown_background is None
