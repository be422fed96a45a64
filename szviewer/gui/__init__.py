"""The desktop app (PyQt6 + pyqtgraph). Qt is imported only by the modules of this package that need it;
``state``, ``models``, ``scores``, ``annotations``, ``detections``, ``display``, ``skymap``, ``samp`` and ``jobs``
are pure Python, and this file imports nothing, so ``display_available`` can be asked without loading Qt.
Start the app with :func:`szviewer.gui.app.run`.
"""

from __future__ import annotations

import os
import sys


def display_available() -> bool:
    """Whether a GUI can be shown here (a desktop session, or QT_QPA_PLATFORM set, e.g. offscreen)."""
    if sys.platform in ("darwin", "win32") or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
