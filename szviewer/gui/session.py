"""Session memory (QSettings): window layout, recent workspaces, thresholds per workspace, display settings.

Stored as an INI file under the user's config folder (``~/.config/szviewer/szviewer.ini``); the environment
variable ``SZVIEWER_SETTINGS`` names another file (tests point it at a temporary folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PyQt6 import QtCore

MAX_RECENT = 8


def settings() -> QtCore.QSettings:
    path = os.environ.get("SZVIEWER_SETTINGS")
    if path:
        return QtCore.QSettings(path, QtCore.QSettings.Format.IniFormat)
    return QtCore.QSettings(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope,
                            "szviewer", "szviewer")


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
