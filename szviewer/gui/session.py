"""Session memory (QSettings): window layout, recent workspaces, and per workspace the thresholds and the view
(gallery filter and sort, selected cutout, F1 tab and split, sky view overlays); the display settings.

Stored as an INI file: ``$SZVIEWER_HOME/szviewer.ini`` when ``SZVIEWER_HOME`` is set (beside the demo
workspace), else ``~/.config/szviewer/szviewer.ini``; the variable ``SZVIEWER_SETTINGS`` names another file
(tests point it at a temporary folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PyQt6 import QtCore

MAX_RECENT = 8


def settings_path() -> Path:
    """The INI file the session is kept in (see the module docstring)."""
    if os.environ.get("SZVIEWER_SETTINGS"):
        return Path(os.environ["SZVIEWER_SETTINGS"])
    if os.environ.get("SZVIEWER_HOME"):
        return Path(os.environ["SZVIEWER_HOME"]) / "szviewer.ini"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "szviewer" / "szviewer.ini"


def settings() -> QtCore.QSettings:
    return QtCore.QSettings(str(settings_path()), QtCore.QSettings.Format.IniFormat)


def _key(path) -> str:
    return str(Path(path).resolve()).replace("/", "|").replace("\\", "|")


def recent_workspaces() -> list[str]:
    v = settings().value("recent", [])
    if isinstance(v, str):
        v = [v]
    return [p for p in (v or []) if (Path(p) / "workspace.json").is_file()]


def last_workspace() -> str | None:
    r = recent_workspaces()
    return r[0] if r else None


def remember_workspace(path) -> None:
    p = str(Path(path).resolve())
    s = settings()
    r = [x for x in (s.value("recent", []) or []) if x != p]
    if isinstance(r, str):
        r = [r]
    s.setValue("recent", [p] + r[: MAX_RECENT - 1])


def save_json(name: str, obj) -> None:
    settings().setValue(name, json.dumps(obj))


def load_json(name: str, default=None):
    v = settings().value(name)
    if not v:
        return default
    try:
        return json.loads(v)
    except (TypeError, ValueError):
        return default


def save_thresholds(path, thresholds: dict) -> None:
    save_json(f"thresholds/{_key(path)}", {k: list(v) if isinstance(v, tuple) else v for k, v in thresholds.items()})


def load_thresholds(path) -> dict:
    return load_json(f"thresholds/{_key(path)}", {}) or {}


def save_view(path, view: dict) -> None:
    """The view of a workspace (gallery filter, selected cutout id, F1 tab, sky overlays) for the next session."""
    save_json(f"view/{_key(path)}", view)


def load_view(path) -> dict:
    v = load_json(f"view/{_key(path)}", {}) or {}
    return v if isinstance(v, dict) else {}
