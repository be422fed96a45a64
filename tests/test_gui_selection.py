"""The MF selection function in the app (issue 12 part 6): the dialog shows the stored run's summary and figures,
and says how to make one when there is none."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt6")

from szviewer.cli import main  # noqa: E402
from szviewer.gui.selection_dialog import SelectionDialog  # noqa: E402
from szviewer.jobs.selection import load_selection  # noqa: E402
from szviewer.workspace import Workspace  # noqa: E402


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SZVIEWER_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))


def test_selection_dialog_shows_the_run_and_its_staleness(qtbot, scratch_ws, capsys):
    ws = Workspace(scratch_ws)
    d = SelectionDialog(ws)
    qtbot.addWidget(d)
    assert "szviewer mf WS --inject" in d.summary_label.text() and not d.images
    assert main(["mf", str(scratch_ws), "--inject", "12", "--seed", "4"]) == 0
    ws = Workspace(scratch_ws)
    tables, summary = load_selection(ws)
    assert set(tables) == {"snr_true", "y0_theta_c", "m500_z"} and summary["n_injected"] == 12
    assert sum(tables["snr_true"]["n_injected"]) == 12
    d = SelectionDialog(ws)
    qtbot.addWidget(d)
    d.show()
    text = d.summary_label.text()
    assert text.startswith("selection function: 12 injected") and "STALE" not in text
    assert len(d.images) == 2 and all(img.pixmap().width() > 300 for img in d.images)
    assert d.width() <= 1320  # fits a 1366 x 768 screen
    # the selection function belongs to the maps, not to the cutout grid: rebuilt cutouts leave it fresh
    assert main(["cutouts", str(scratch_ws), "--overwrite"]) == 0
    capsys.readouterr()
    assert Workspace(scratch_ws).stale("mf_injection") == []


def test_the_view_menu_opens_it(qtbot, scratch_ws):
    from szviewer.gui.mainwindow import MainWindow

    assert main(["mf", str(scratch_ws), "--inject", "6", "--seed", "5"]) == 0
    win = MainWindow(restore=False)
    qtbot.addWidget(win)
    win.open_workspace(str(scratch_ws))
    view = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    item = next(a for a in view.actions() if a.text().startswith("MF &selection function"))
    item.trigger()
    dlg = win.findChild(SelectionDialog)
    assert dlg is not None and dlg.summary_label.text().startswith("selection function: 6 injected")
