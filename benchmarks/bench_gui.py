"""Benchmark of the desktop app (issue 5): start to first window, and threshold drags at the paper's scale.

- start: ``python -m szviewer.gui.app`` in a fresh process (``SZVIEWER_GUI_SMOKE=1``: print a mark once the
  window is shown, then quit); wall time from launch to the mark, best of 3. Target <= 1.5 s. The process also
  reports whether torch was imported (it must not be).
- drag: the main window (offscreen) on 808,201 synthetic cutouts (scores shaped like the paper's, Fig. 5; no
  images), with the gallery filtered on the CNN's false negatives and the sky view coloured by the CNN's
  outcome, so both follow the threshold; the CNN threshold line is moved step by step and the event loop run
  after each move, as a mouse drag does. Updates per second = threshold changes applied (and painted) per
  second. Target >= 100 per second (issue 14). The rate of the model alone (``ViewerState.set_threshold`` + counts on
  val and test) is the reference.

Run: ``python benchmarks/bench_gui.py [n]`` (QT_QPA_PLATFORM defaults to offscreen).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
N_PAPER = 808_201


def time_start(workspace: str | None = None, repeat: int = 3) -> tuple[float, float, bool]:
    """Best wall times from launch to the first window and to the workspace shown; whether torch was imported."""
    best, best_ws, torch = np.inf, np.inf, False
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SZVIEWER_GUI_SMOKE="1", SZVIEWER_SETTINGS=str(Path(tmp) / "s.ini"))
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        cmd = [sys.executable, "-m", "szviewer.gui.app"] + ([workspace] if workspace else [])
        for _ in range(repeat):
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for line in p.stdout:
                if line.startswith("szviewer: first window"):
                    best = min(best, time.perf_counter() - t0)
                elif line.startswith("szviewer: workspace shown"):
                    best_ws = min(best_ws, time.perf_counter() - t0)
                torch = torch or "torch=True" in line
            p.wait(60)
    return best, best_ws, torch


def small_workspace(root: Path) -> str:
    """A 4 deg^2 synthetic workspace with cutouts and score columns (CNN and MF, from the labels)."""
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    path = root / "ws"
    simulate_workspace(path, SimulationSettings(area_deg2=4.0, seed=7))
    ws = Workspace(path)
    make_cutouts(ws, CutoutSettings())
    with ws.cutout_store() as st:
        ids, y = np.asarray(st.table["id"]), np.asarray(st.table["label"])
    rng = np.random.default_rng(0)
    ws.write_scores("cnn", ids, {"cnn_prob": np.where(y, rng.beta(4, 1.5, ids.size), rng.beta(0.3, 12, ids.size))})
    snr = np.where(y, rng.normal(6, 2.5, ids.size), rng.normal(0, 1.5, ids.size))
    snr[snr < 3.5] = np.nan
    ws.write_scores("mf", ids, {"mf_snr": snr})
    return str(path)


def synthetic_data(n: int = N_PAPER, seed: int = 0):
    """The paper's cutout grid (centres every 6' from 4' in RA and Dec over the octant: 899 x 899 = 808,201)
    with scores shaped like the paper's (``bench_evaluate.synthetic_scores``) and the RA split."""
    from bench_evaluate import synthetic_scores

    from szviewer.gui.state import CutoutData

    scores, y, _ = synthetic_scores(n, seed)
    side = int(np.ceil(np.sqrt(n)))
    centres = (4.0 + 6.0 * np.arange(side)) / 60.0
    row, col = np.divmod(np.arange(n), side)
    ra, dec = centres[col], centres[row]
    split = np.where(ra < 0.13 * 90, "test", np.where(ra < 0.2 * 90, "val", "train"))
    rng = np.random.default_rng(seed + 1)
    cols = {"id": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, "row": row.astype(np.int32),
            "split": split, "label": y,
            "m_vir": np.where(y, 10 ** rng.uniform(14.3, 15.2, n), np.nan),
            "z": np.where(y, rng.uniform(0.25, 2.0, n), np.nan),
            "halo_dx_arcmin": np.where(y, rng.uniform(-3, 3, n), np.nan),
            "halo_dy_arcmin": np.where(y, rng.uniform(-3, 3, n), np.nan)}
    return CutoutData(cols, scores)


def time_drag(n: int = N_PAPER, steps: int = 150) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SZVIEWER_SETTINGS"] = str(Path(tmp) / "s.ini")
        from szviewer.gui.app import application
        from szviewer.gui.mainwindow import MainWindow

        app = application()
        data = synthetic_data(n)
        w = MainWindow(restore=False)
        w.resize(1600, 1000)
        w.show()
        t0 = time.perf_counter()
        w.state.set_data(data)
        app.processEvents()
        t_open = time.perf_counter() - t0
        w.gallery.set_outcome_filter("CNN", "FN")
        w.sky.colour.setCurrentIndex(w.sky.colour.findData("outcome:CNN"))
        w.f1.show_method("CNN")
        app.processEvents()
        line = w.f1.plots["CNN"].line
        co = w.f1.coalescer
        xs = 0.5 + 0.4 * np.sin(np.linspace(0, 4 * np.pi, steps))
        applied0 = co.applied
        t0 = time.perf_counter()
        for x in xs:
            line.setValue(float(x))
            app.processEvents()
        app.processEvents()
        t_drag = time.perf_counter() - t0
        applied = co.applied - applied0
        # the model alone, no views (reference)
        from szviewer.gui.state import ViewerState

        s = ViewerState()
        s.set_data(data)
        t0 = time.perf_counter()
        for x in xs:
            s.set_threshold("CNN", float(x))
            s.counts("CNN", "val")
            s.counts("CNN", "test")
        t_model = time.perf_counter() - t0
        w.confirm_close = lambda: True
        w.close()
    return {"open": t_open, "drag": t_drag, "applied": applied, "steps": steps, "model": t_model}


def run(n: int = N_PAPER) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        start, shown, torch = time_start(small_workspace(Path(tmp)))
    d = time_drag(n)
    rate = d["applied"] / d["drag"]
    return [
        {"name": "start to first window (python -m szviewer.gui.app WS)", "seconds": start, "throughput": 1 / start,
         "unit": "starts/s", "target": "<=1.5s", "note": "torch imported!" if torch else "no torch"},
        {"name": "start to a 4 deg^2 workspace shown (images, curves, sky)", "seconds": shown,
         "throughput": 1 / shown, "unit": "starts/s"},
        {"name": f"open {n:,} synthetic cutouts (curves, PROD, raster)", "seconds": d["open"],
         "throughput": n / d["open"], "unit": "cutouts/s"},
        {"name": f"threshold drag, {n:,} cutouts, gallery + sky follow", "seconds": d["drag"] / max(d["applied"], 1),
         "throughput": rate, "unit": "updates/s", "target": ">=100/s",
         "note": f"{d['applied']} of {d['steps']} moves applied"},
        {"name": "set_threshold + val/test counts, model alone (reference)", "seconds": d["model"] / d["steps"],
         "throughput": d["steps"] / d["model"], "unit": "updates/s"},
    ]


if __name__ == "__main__":
    from run import print_table

    print_table(run(int(sys.argv[1]) if len(sys.argv) > 1 else N_PAPER), "gui")
