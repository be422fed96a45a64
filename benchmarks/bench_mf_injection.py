"""The MF selection function by injection (the MF issue's target: 1,000 clusters on 100 deg^2 in <= 5 min).

A 100 deg^2 synthetic sky (spt3g-paper, seed 21) is simulated once; the reference row is one plain MF run over it
(model noise, the workspace default); then ``szviewer mf WS --inject 1000`` (its job function) in model noise and
in data noise. Ratios are to the plain run in the same process. Run ``python benchmarks/run.py mf_injection``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def run() -> list[dict]:
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.jobs.mf_injection import run_injection_on_workspace
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.mf.selection_plan import InjectionSettings
    from szviewer.mf.settings import MFSettings
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_inj_") as tmp:
        path = Path(tmp) / "ws"
        simulate_workspace(path, SimulationSettings(seed=21, area_deg2=100.0))
        ws = Workspace(path)
        make_cutouts(ws, CutoutSettings())
        t0 = time.perf_counter()
        run_mf_on_workspace(ws)
        ref = time.perf_counter() - t0
        rows.append({"name": "reference: szviewer mf WS (model noise), 100 deg^2", "seconds": ref,
                     "throughput": 100.0 / ref, "unit": "deg^2/s"})
        for mode in ("model", "data"):
            t0 = time.perf_counter()
            s = run_injection_on_workspace(Workspace(path), MFSettings(noise_mode=mode),
                                           InjectionSettings(n=1000, seed=1), overwrite=True)
            sec = time.perf_counter() - t0
            rows.append({"name": f"mf --inject 1000, {mode} noise, 100 deg^2", "seconds": sec,
                         "throughput": 1000 / sec, "unit": "injections/s", "target_s": 300.0,
                         "ratio_to_ref": sec / ref,
                         "note": f"completeness at noise-free S/N >= 5: {s.get('completeness_snr_true_ge_5')}; "
                                 f"S/N ratio median {s.get('snr_ratio_median')}"})
    return rows


if __name__ == "__main__":
    from run import print_table

    print_table(run(), "mf_injection")
