"""The observed sky (issue 10): simulate per instrument, the cutout set as a table plus windows, read speed, disk,
and the measured noise spectra of every instrument preset against the preset's own numbers.

References in the same process: numpy's rfft2+irfft2 of one tile-sized map (the unit of work of a Gaussian field)
for the simulation; for reads, the same windows copied out of an in-memory array with numpy (the floor any reader
of these pixels has to pay).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

#: Cutouts of the octant's DeepSZ set (RESULTS.md, issue 2): for the disk extrapolation.
OCTANT_CUTOUTS = 432_528


def _fft_ref(n: int) -> float:
    from timing import best_time

    x = np.random.default_rng(0).standard_normal((n, n))
    return best_time(lambda: np.fft.irfft2(np.fft.rfft2(x), s=x.shape))


def _simulate(tmp: Path, name: str, instrument: str, area: float, seed: int = 1) -> tuple[float, dict]:
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    t0 = time.perf_counter()
    card = simulate_workspace(tmp / name, SimulationSettings(area_deg2=area, seed=seed, instrument=instrument))
    return time.perf_counter() - t0, card


def _reads(ws_path: Path) -> list[dict]:
    from szviewer.workspace import Workspace

    rows = []
    ws = Workspace(ws_path)
    with ws.cutout_store() as st:
        n = len(st)
        t = st.table
        obs = np.array(ws.sky().observed(0))  # in memory: the reference reader
        y0, x0, npix = np.asarray(t["y0"]), np.asarray(t["x0"]), st.npix
        idx = np.random.default_rng(0).integers(0, n, 3000)
        st.images(idx[:50])  # open the maps
        t0 = time.perf_counter()
        for i in idx:
            st.image(int(i))
        rnd = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in idx:
            obs[:, y0[i]:y0[i] + npix, x0[i]:x0[i] + npix].copy()
        ref = time.perf_counter() - t0
        rows.append({"name": "read one random cutout (all components + noise)", "seconds": rnd / idx.size,
                     "throughput": idx.size / rnd, "unit": "cutouts/s", "target": ">= 2000",
                     "ratio_to_ref": rnd / ref, "note": "x ref: time over a numpy copy from RAM"})
        t0 = time.perf_counter()
        for a in range(0, n, 1024):
            st.images(np.arange(a, min(n, a + 1024)))
        grid = time.perf_counter() - t0
        rows.append({"name": f"read all {n} cutouts in grid order (batches of 1024)", "seconds": grid,
                     "throughput": n / grid, "unit": "cutouts/s", "target": ">= 10000"})
        t0 = time.perf_counter()
        for a in range(0, n, 1024):
            st.images(np.arange(a, min(n, a + 1024)), "cmb_tsz")
        lvl = time.perf_counter() - t0
        rows.append({"name": "read all cutouts at level cmb_tsz (components + the map's noise)", "seconds": lvl,
                     "throughput": n / lvl, "unit": "cutouts/s", "target": ""})
        size = ws.file("cutouts", "cutouts.h5").stat().st_size
        rows.append({"name": "cutouts.h5 per cutout (a table row; no pixels)", "seconds": float("nan"),
                     "throughput": size / n, "unit": "bytes/cutout", "target": ""})
        rows.append({"name": f"-> the octant's {OCTANT_CUTOUTS:,} cutouts", "seconds": float("nan"),
                     "throughput": size / n * OCTANT_CUTOUTS / 1e9, "unit": "GB", "target": "<= 1",
                     "note": "round one: 22 GB"})
    return rows


def run(area_deg2: float = 100.0) -> list[dict]:
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.sky.instrument_presets import instrument_names
    from szviewer.workspace import Workspace

    rows = []
    ref = _fft_ref(2548)
    rows.append({"name": "reference: rfft2+irfft2 of a 2548^2 map", "seconds": ref, "throughput": 1 / ref,
                 "unit": "per s", "target": ""})
    tmp = Path(tempfile.mkdtemp(prefix="szbench-observed-"))
    try:
        for inst in ("spt3g-paper", "act-dr6"):
            sec, _ = _simulate(tmp, inst, inst, area_deg2)
            rows.append({"name": f"simulate {area_deg2:g} deg^2 through {inst}", "seconds": sec,
                         "throughput": sec / area_deg2 * 100, "unit": "s per 100 deg^2",
                         "target": "<= 30" if inst == "act-dr6" else "", "ratio_to_ref": sec / ref})
        ws = Workspace(tmp / "spt3g-paper")
        t0 = time.perf_counter()
        s = make_cutouts(ws, CutoutSettings())
        rows.append({"name": f"cutout set of {s['cutouts']} cutouts (table and window origins)",
                     "seconds": time.perf_counter() - t0, "throughput": s["cutouts"] / (time.perf_counter() - t0),
                     "unit": "cutouts/s", "target": ""})
        rows += _reads(tmp / "spt3g-paper")
        shutil.rmtree(tmp / "act-dr6", ignore_errors=True)
        for inst in instrument_names():
            _, card = _simulate(tmp, "card-" + inst, inst, 100.0, seed=2)  # one 10 deg tile
            for r in card["noise"]:
                kr = r["ell_knee_ratio"]
                rows.append({"name": f"{inst} {r['band']} GHz: measured / preset white level"
                                     + ("" if kr is None else " (and ell_knee)"),
                             "seconds": float("nan"), "throughput": r["white_ratio"], "unit": "ratio",
                             "target": "0.95-1.05",
                             "note": "" if kr is None else f"ell_knee {r['ell_knee']:.0f} / {r['preset_ell_knee']:.0f}"
                                                          f" = {kr:.3f}"})
            shutil.rmtree(tmp / ("card-" + inst), ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    from run import print_table

    print_table(run())


if __name__ == "__main__":
    main()
