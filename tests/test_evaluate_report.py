"""Figures and the HTML report (szviewer.evaluate.figures, szviewer.evaluate.report)."""

import ast
import base64
import re
from pathlib import Path

import numpy as np
import pytest

import szviewer.evaluate
from szviewer.evaluate import figures
from szviewer.evaluate.curves import roc_curve
from szviewer.evaluate.ensembles import and_grid
from szviewer.evaluate.report import evaluation_report, write_report
from szviewer.evaluate.science import binned_fraction_2d, binned_mean
from szviewer.evaluate.table1 import table1

PNG = b"\x89PNG\r\n\x1a\n"


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.06
    cnn = np.where(y, rng.beta(3, 2, n), rng.beta(0.5, 10, n))
    mf = np.where(y, rng.normal(7, 3, n), rng.normal(0, 2, n))
    mf[mf < 3] = np.nan
    split = np.array(["test", "val", "train"])[rng.integers(0, 3, n)]
    m = np.where(y, 10 ** rng.uniform(14.3, 15, n), np.nan)
    z = np.where(y, rng.uniform(0.25, 2, n), np.nan)
    return {"cnn_prob": cnn, "mf_snr": mf}, y, split, {"m_vir": m, "z": z}


def test_figures_are_png_and_written(tmp_path):
    # the F1, AND heat-map, ROC and completeness figures are also drawn by the report test below
    cols, y, _, halo = _data()
    png = figures.roc_figure({"CNN": roc_curve(cols["cnn_prob"], y)}, path=tmp_path / "roc.png")
    assert png.startswith(PNG) and (tmp_path / "roc.png").read_bytes() == png
    with pytest.raises(FileExistsError):
        figures.roc_figure({}, path=tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes() == png
    found = {"CNN": cols["cnn_prob"] > 0.5, "MF": cols["mf_snr"] > 5}
    maps = {k: binned_fraction_2d(halo["m_vir"], halo["z"], v, 5, 5, mask=y) for k, v in found.items()}
    assert figures.tp_fraction_figure(maps).startswith(PNG)
    assert figures.binned_mean_figure({"CNN": binned_mean(halo["z"], cols["cnn_prob"], 5)}).startswith(PNG)
    g = and_grid(cols["cnn_prob"][:50], cols["mf_snr"][:50], np.zeros(50, bool), levels=5)
    assert figures.and_heatmap_figure(g).startswith(PNG)  # no positives: no best point, still a figure


def test_evaluation_report_is_self_contained(tmp_path):
    cols, y, split, halo = _data()
    path = tmp_path / "report.html"
    evaluation_report(path, cols, y, split, halo=halo, provenance={"run": "<test>"}, levels=30)
    text = path.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    # F1 curves, AND heat map, ROC, completeness vs mass and vs z, and the true-positive fraction over (M_vir, z)
    assert len(images) == 6
    assert "Fig. 12" in text and "found by the CNN only" in text
    assert all(base64.b64decode(b).startswith(PNG) for b in images)
    rows = table1(cols, y, split, levels=30)
    for r in rows:
        assert f"<td>{r.method}</td>" in text and f"<td>{r.tp}</td>" in text
    assert "&lt;test&gt;" in text and "<test>" not in text  # provenance is escaped
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from outside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    with pytest.raises(FileExistsError):
        write_report(path, title="again")
    write_report(path, title="again & again", overwrite=True)
    assert "again &amp; again" in path.read_text()


def test_no_qt_or_torch_imports():
    pkg = Path(szviewer.evaluate.__file__).parent
    for f in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"PyQt6", "PyQt5", "PySide6", "pyqtgraph", "torch"}, (
                    f"{f.name} imports {name}"
                )
                assert name != "matplotlib.pyplot", f"{f.name} imports pyplot"
