"""Foundation benchmarks: simulate seconds per 100 deg^2, cutouts per second from tiles, peak memory.

Reference in the same process: numpy's rfft2+irfft2 of one tile-sized map (the unit of work of a
Gaussian field), so ratios travel between machines.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(area_deg2: float = 100.0) -> list[dict]:
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    rows = []
    x = np.random.default_rng(0).standard_normal((2548, 2548))
    t0 = time.perf_counter()
    for _ in range(3):
        np.fft.irfft2(np.fft.rfft2(x), s=x.shape)
    ref = (time.perf_counter() - t0) / 3
    rows.append({"name": "reference: rfft2+irfft2 of a 2548^2 map", "seconds": ref, "throughput": 1 / ref,
                 "unit": "per s", "target": ""})
    tmp = Path(tempfile.mkdtemp(prefix="szbench-"))
    try:
        t0 = time.perf_counter()
        simulate_workspace(tmp / "ws", SimulationSettings(area_deg2=area_deg2, seed=1))
        sim = time.perf_counter() - t0
        rows.append({"name": f"simulate {area_deg2:g} deg^2, all components", "seconds": sim,
                     "throughput": sim / area_deg2 * 100, "unit": "s per 100 deg^2", "target": "<= 20",
                     "ratio_to_ref": sim / ref})
        ws = Workspace(tmp / "ws")
        t0 = time.perf_counter()
        s = make_cutouts(ws, CutoutSettings())
        cut = time.perf_counter() - t0
        rows.append({"name": f"cutouts from tiles ({s['cutouts']} x 6 components x 3 bands, to HDF5)",
                     "seconds": cut, "throughput": s["cutouts"] / cut, "unit": "cutouts/s", "target": "",
                     "ratio_to_ref": cut / ref})
        from szviewer.cutouts.store import CutoutStore

        with CutoutStore(ws.file("cutouts", "cutouts.h5")) as st:
            rng = np.random.default_rng(0)
            idx = rng.integers(0, len(st), 2000)
            t0 = time.perf_counter()
            for i in idx:
                st.image(int(i))
            rd = time.perf_counter() - t0
        rows.append({"name": "read one random cutout (all components + noise)", "seconds": rd / idx.size,
                     "throughput": idx.size / rd, "unit": "cutouts/s", "target": ""})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows.append({"name": "peak resident memory of this process", "seconds": float("nan"),
                 "throughput": _peak_rss_mb(), "unit": "MB", "target": "<= 6000"})
    return rows


def main() -> None:
    from run import print_table

    print_table(run())


if __name__ == "__main__":
    main()
