"""Start the desktop app: ``szviewer gui [WS]``, or ``python -m szviewer.gui.app [WS]``.

The window appears first; the workspace (the given one, else the last one, else the welcome view) is opened
on the first pass of the event loop, so the start is quick. torch is never imported here: it is loaded by
the CNN jobs only, in their own process.

``SZVIEWER_GUI_SMOKE=1`` makes the app print ``szviewer: first window`` once the window is on screen, then
(with a workspace argument) ``szviewer: workspace shown`` once that is open, and quit (for the start-up
benchmark and test).
"""

from __future__ import annotations

import argparse
import os
import sys

from PyQt6 import QtCore, QtGui, QtWidgets

from szviewer.gui import display_available

__all__ = ["run", "main", "application", "display_available"]

SMOKE_MARK = "szviewer: first window"
SHOWN_MARK = "szviewer: workspace shown"


def dark_palette(app: QtWidgets.QApplication) -> None:
    app.setStyle("Fusion")
    p = QtGui.QPalette()
    C = QtGui.QPalette.ColorRole
    base, window, text = QtGui.QColor(30, 32, 38), QtGui.QColor(40, 43, 50), QtGui.QColor(220, 223, 228)
    p.setColor(C.Window, window)
    p.setColor(C.WindowText, text)
    p.setColor(C.Base, base)
    p.setColor(C.AlternateBase, QtGui.QColor(36, 39, 46))
    p.setColor(C.ToolTipBase, window)
    p.setColor(C.ToolTipText, text)
    p.setColor(C.Text, text)
    p.setColor(C.Button, window)
    p.setColor(C.ButtonText, text)
    p.setColor(C.Highlight, QtGui.QColor(52, 110, 190))
    p.setColor(C.HighlightedText, QtGui.QColor(255, 255, 255))
    p.setColor(C.Link, QtGui.QColor(100, 170, 255))
    p.setColor(C.PlaceholderText, QtGui.QColor(130, 134, 142))
    for role in (C.Text, C.ButtonText, C.WindowText):
        p.setColor(QtGui.QPalette.ColorGroup.Disabled, role, QtGui.QColor(120, 123, 130))
    app.setPalette(p)


def application(argv: list[str] | None = None) -> QtWidgets.QApplication:
    """The QApplication (created once), with the app's name, style and palette."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv) if argv else [sys.argv[0]])
        app.setApplicationName("szviewer")
        app.setOrganizationName("szviewer")
        dark_palette(app)
    return app


def main(workspace: str | None = None, argv: list[str] | None = None) -> int:
    """Open the main window (on ``workspace``, else the last one, else the welcome view); run until closed."""
    app = application(argv)
    from szviewer.gui.mainwindow import MainWindow

    win = MainWindow()
    win.show()
    if os.environ.get("SZVIEWER_GUI_SMOKE"):
        def smoke():
            app.processEvents()  # the first paint
            print(f"{SMOKE_MARK} torch={'torch' in sys.modules}", flush=True)
            if workspace is not None:
                win.open_initial(workspace)
                app.processEvents()
                print(f"{SHOWN_MARK} cutouts={win.state.n} torch={'torch' in sys.modules}", flush=True)
            win.close()
            app.quit()

        QtCore.QTimer.singleShot(0, smoke)
        return app.exec()
    QtCore.QTimer.singleShot(0, lambda: win.open_initial(workspace))
    return app.exec()


def run(workspace=None) -> int:
    """Entry for the CLI: ``run("path/to/WS")``, ``run(None)`` (last workspace or welcome) or ``run(argv)``."""
    if isinstance(workspace, (list, tuple)):
        p = argparse.ArgumentParser(prog="szviewer gui", description="the szviewer desktop app")
        p.add_argument("workspace", nargs="?", help="workspace folder to open (default: the last one)")
        args = p.parse_args(list(workspace))
        workspace = args.workspace
    if workspace is not None:
        workspace = os.fspath(workspace)
    if not display_available():
        print("szviewer gui: no display (set DISPLAY, or QT_QPA_PLATFORM=offscreen)", file=sys.stderr)
        return 2
    return main(workspace)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
