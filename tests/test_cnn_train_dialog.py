"""The app's train dialog shows a measured time estimate, never a promise (issue 13.1), and the app never loads
torch for it: a remembered measurement at once, otherwise a few real steps timed in the background."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")

from szviewer.workspace import Workspace  # noqa: E402

RATES = {"step_seconds": 2.0, "eval_seconds_per_cutout": 0.0, "steps": 3, "batch": 64, "device": "cpu",
         "threads": 2, "bf16_autocast": False}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SZVIEWER_SETTINGS", str(tmp_path / "settings.ini"))


def _fake_measure(calls):
    def measure(settings, x, y=None, device="cpu", steps=3, cancelled=None):
        calls.append(settings.preset)
        return dict(RATES, batch=settings.batch, step_seconds=2.0 if settings.preset == "quick" else 4.0)
    return measure


def test_dialog_measures_in_the_background_then_remembers(small_ws, qtbot, monkeypatch):
    import szviewer.cnn.train as train_mod
    from szviewer.gui.jobspanel import TrainDialog

    calls: list[str] = []
    monkeypatch.setattr(train_mod, "measure_rates", _fake_measure(calls))
    dlg = TrainDialog(None, str(small_ws["path"]), measure_mode="thread")  # thread: the stub above applies
    qtbot.addWidget(dlg)
    assert dlg.options() == {"preset": "quick", "device": "auto"}
    assert "measuring" in dlg.estimate.text()  # nothing remembered yet: a background measurement
    qtbot.waitUntil(lambda: "at most" in dlg.estimate.text(), timeout=20000)
    text = dlg.estimate.text()
    assert "at most 40 min" in text and "1,200 steps of 64 at 2.00 s/step" in text and "measured here" in text
    assert calls == ["quick"]
    dlg.preset.setCurrentIndex(1)  # long: 8,000 steps at 4 s = at most 8.9 h
    qtbot.waitUntil(lambda: "8,000 steps" in dlg.estimate.text(), timeout=20000)
    assert "at most 8.9 h" in dlg.estimate.text()
    dlg.preset.setCurrentIndex(0)  # quick again: remembered, shown at once, not measured again
    assert "at most 40 min" in dlg.estimate.text() and "measured here on" in dlg.estimate.text()
    assert calls == ["quick", "long"]
    dlg.close()


def test_dialog_without_a_workspace_and_no_torch_in_the_app(qtbot):
    from szviewer.gui.jobspanel import TrainDialog

    dlg = TrainDialog(None, None)
    qtbot.addWidget(dlg)
    assert "open a workspace" in dlg.estimate.text()
    for _name, text in TrainDialog.PRESETS:
        assert "min" not in text and "hour" not in text, text  # no promised durations, only the plan's size


def test_cached_estimate_in_the_dialog_does_not_import_torch(small_ws, tmp_path):
    """The dialog's own path (measure=False) in a fresh interpreter: the cache answers and torch stays unloaded."""
    import subprocess

    from szviewer.jobs.cnn import _cache_rates, _machine_key, train_settings

    _cache_rates(_machine_key(train_settings("quick"), "auto"), RATES)
    code = ("import sys; from szviewer.gui.jobspanel import TrainDialog; from PyQt6 import QtWidgets; "
            "app = QtWidgets.QApplication([]); "
            f"d = TrainDialog(None, {str(small_ws['path'])!r}); "
            "print('at most 40 min' in d.estimate.text(), 'torch' in sys.modules)")
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "SZVIEWER_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.split()[-2:] == ["True", "False"], r.stdout + r.stderr
    assert Workspace(small_ws["path"]).has("cutouts")
