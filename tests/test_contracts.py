"""Architecture: Qt only in szviewer.gui, torch never at module load outside szviewer.cnn, layers one way."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_no_torch_or_qt_at_import():
    code = ("import sys, pkgutil, importlib, szviewer\n"
            "for m in pkgutil.walk_packages(szviewer.__path__, 'szviewer.'):\n"
            "    if m.name.startswith(('szviewer.gui', 'szviewer.cnn')) or m.name == 'szviewer.__main__':\n"
            "        continue\n"
            "    importlib.import_module(m.name)\n"
            "bad = [k for k in ('torch', 'PyQt6', 'pyqtgraph') if k in sys.modules]\n"
            "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_import_linter_contracts():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_subpackage_is_packaged():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "szviewer").rglob("__init__.py")}
    assert found <= listed, found - listed
