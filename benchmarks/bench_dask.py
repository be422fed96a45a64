"""Scale-out benchmark (issue 16): the MF over a tiled sky in process, on 1 and on 2 Dask workers; the scheduler's
overhead per task (in the real run, and on a LocalCluster of 8 workers on tiny tasks); a full-sky estimate of
simulate + cutouts + MF on 16 and 128 cores from the measured per-tile costs.

Rows (``run() -> list[dict]``, printed by ``benchmarks/run.py dask``):

* ``reference: mf in process`` -- :func:`szviewer.jobs.mf.run_mf_on_workspace`, scipy.fft with its default 2 threads;
* ``mf on a LocalCluster of 1 / 2 workers`` -- the same job, each worker one process with one thread; the ratio of
  the two is the scaling (target >= 1.8 on 2 cores); cluster start-up is reported apart;
* ``scheduler overhead per MF tile task`` -- ``(workers x wall - sum of the tasks' own seconds) / tasks``: what a
  task costs beyond its work (includes the tail where one worker waits for the last tile), and as a fraction of
  the mean task (target <= 1%);
* ``worker idle between MF tile tasks`` -- from Dask's own task stream (each task's compute start and stop on its
  worker): the mean gap between one task's end and the next one's start on the same worker, the scheduler's and
  the transfer's share alone (no tail), as a fraction of the mean task's compute time (target <= 1%);
* ``8 workers, tiny tasks`` -- 800 no-op tasks: the pure per-task cost of the scheduler (submit, run, gather);
* ``full sky estimate on C cores`` -- ``serial + ceil(tiles / C) x (per-tile costs + overhead)`` with the
  serial parts (the driver's CPU seconds: halo and source catalogues, the cutout grid and labels, the MF's matching
  and commit) scaled by area, and the per-tile costs (the tasks' CPU seconds on one thread, on the 1-worker cluster:
  CPU time, so the figure does not move with the other jobs on a shared machine) scaled to 10 deg tiles (with
  their margins) by pixels x log(pixels); the overhead per task from the 8-worker run.

``python benchmarks/bench_dask.py [--area DEG2] [--tile-deg DEG]`` (default 400 deg^2 in 5 deg tiles: the issue's
sky). The machine is shared: run it beside ``uptime``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

FULL_SKY_DEG2 = 41253.0
FULL_SKY_TILE_DEG = 10.0


def _noop(x):
    return x


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def run(area_deg2: float = 400.0, tile_deg: float = 5.0, tiny_tasks: int = 800) -> list[dict]:
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.parallel import DaskExecutor, ExecutorSettings
    from szviewer.sky.synthetic import SimulationSettings, tiles_for
    from szviewer.workspace import Workspace

    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="szbench-dask-"))
    settings = SimulationSettings(area_deg2=area_deg2, seed=1, tile_deg=tile_deg)
    tiles = tiles_for(settings)
    ws_path = tmp / "ws"
    try:
        # ---------------------------------------------------------------- simulate on 1 worker: per-tile costs
        t0 = time.perf_counter()
        ex1 = DaskExecutor(ExecutorSettings(workers=1))
        start1 = time.perf_counter() - t0
        rec = _Recording(ex1)
        _, sim_wall, sim_serial = _timed(lambda: simulate_workspace(ws_path, settings, executor=rec))
        sim_tile = sum(rec.cpu) / len(rec.cpu)
        rows.append({"name": f"simulate {area_deg2:g} deg^2 ({len(tiles)} tiles of {tile_deg:g} deg), 1 worker",
                     "seconds": sim_wall, "throughput": sim_tile, "unit": "CPU s per tile task",
                     "note": f"wall per task {sum(rec.wall) / len(rec.wall):.1f} s; driver CPU (serial part) "
                             f"{sim_serial:.1f} s; load {_load()}"})
        ws = Workspace(ws_path)
        _, cut_wall, cut_cpu = _timed(lambda: make_cutouts(ws, CutoutSettings()))
        rows.append({"name": "cutouts (serial: grid, labels, windows)", "seconds": cut_wall,
                     "throughput": area_deg2 / cut_wall, "unit": "deg^2/s", "note": f"CPU {cut_cpu:.2f} s; "
                                                                                   f"load {_load()}"})

        # ---------------------------------------------------------------- MF: in process, 1 worker, 2 workers
        s, ref, _ = _timed(lambda: run_mf_on_workspace(Workspace(ws_path), overwrite=True))
        rows.append({"name": "reference: mf in process (scipy.fft 2 threads)", "seconds": ref,
                     "throughput": area_deg2 / ref, "unit": "deg^2/s", "ratio_to_ref": 1.0,
                     "note": f"{s['detections']} detections; load {_load()}"})
        walls = {}
        for n in (1, 2):
            if n == 1:
                ex = ex1
            else:
                ex1.close()
                t0 = time.perf_counter()
                ex = DaskExecutor(ExecutorSettings(workers=2))
                start2 = time.perf_counter() - t0
            rec = _Recording(ex)
            from distributed import get_task_stream

            with get_task_stream(client=ex.client) as stream:
                summary, walls[n], driver_cpu = _timed(
                    lambda rec=rec: run_mf_on_workspace(Workspace(ws_path), overwrite=True, executor=rec))
            gap, compute, ngaps = task_gaps(stream.data)
            busy, cpu = sum(rec.wall), sum(rec.cpu)
            over = (n * walls[n] - busy) / len(rec.wall)
            rows.append({"name": f"mf on a LocalCluster of {n} worker(s) x 1 thread", "seconds": walls[n],
                         "throughput": area_deg2 / walls[n], "unit": "deg^2/s", "ratio_to_ref": ref / walls[n],
                         "note": f"{summary['detections']} detections; tasks: wall {busy:.0f} s, CPU {cpu:.0f} s "
                                 f"(CPU share {cpu / busy:.2f}); load {_load()}"})
            rows.append({"name": f"  scheduler overhead per MF tile task, {n} worker(s)", "seconds": over,
                         "throughput": 100 * over / (busy / len(rec.wall)), "unit": "% of a task", "target": "<= 1%",
                         "note": f"(workers x wall - task wall) / tasks; mean task {busy / len(rec.wall):.2f} s "
                                 f"over {len(rec.wall)} tasks"})
            rows.append({"name": f"  worker idle between MF tile tasks, {n} worker(s)", "seconds": gap,
                         "throughput": 100 * gap / compute if compute else None, "unit": "% of a task",
                         "target": "<= 1%", "note": f"Dask task stream: mean of {ngaps} gaps between a task's end "
                                                    f"and the next start on its worker; mean compute {compute:.2f} s"})
            if n == 1:
                mf_tile_1t = cpu / len(rec.cpu)
                mf_serial = driver_cpu
        ex.close()
        rows.append({"name": "mf scaling: 2 workers over 1 (wall)", "seconds": None,
                     "throughput": walls[1] / walls[2], "unit": "x", "target": ">= 1.8",
                     "note": f"cluster start {start1:.1f} s / {start2:.1f} s"})

        # ---------------------------------------------------------------- 8 workers, tiny tasks
        t0 = time.perf_counter()
        ex8 = DaskExecutor(ExecutorSettings(workers=8))
        start8 = time.perf_counter() - t0
        ex8.map_tiles(_noop, range(16))  # warm
        t0 = time.perf_counter()
        ex8.map_tiles(_noop, range(tiny_tasks))
        tiny = time.perf_counter() - t0
        ex8.close()
        rows.append({"name": f"LocalCluster of 8 workers, {tiny_tasks} no-op tasks", "seconds": tiny,
                     "throughput": 1e3 * tiny / tiny_tasks, "unit": "ms per task (wall)",
                     "note": f"= {1e3 * 8 * tiny / tiny_tasks:.1f} worker-ms per task; start {start8:.1f} s; "
                             f"load {_load()}"})

        # ---------------------------------------------------------------- full-sky estimate
        per_tile_overhead = 8 * tiny / tiny_tasks  # worker-seconds per task, from the tiny tasks
        npix = sum(t.ny * t.nx for t in tiles) / len(tiles)  # a benchmark tile, margins included
        full = ((FULL_SKY_TILE_DEG * 60 + 2 * settings.margin_arcmin) / settings.pixel_arcmin) ** 2
        scale = full / npix * math.log(full) / math.log(npix)
        n_full = math.ceil(FULL_SKY_DEG2 / FULL_SKY_TILE_DEG ** 2)
        sim_tile = sim_tile * scale
        mf_tile = mf_tile_1t * scale
        serial = (sim_serial + cut_cpu + mf_serial) * FULL_SKY_DEG2 / area_deg2
        for cores in (16, 128):
            waves = math.ceil(n_full / cores)
            est = serial + waves * (sim_tile + mf_tile + 2 * per_tile_overhead)
            rows.append({"name": f"full sky estimate, simulate + cutouts + mf, {cores} cores", "seconds": est,
                         "throughput": est / 3600, "unit": "hours", "target": "<= 2 h" if cores == 128 else "",
                         "note": f"{n_full} tiles of {FULL_SKY_TILE_DEG:g} deg: {waves} waves x ({sim_tile:.0f} s "
                                 f"sim + {mf_tile:.0f} s mf) + serial {serial:.0f} s"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def task_gaps(records: list[dict]) -> tuple[float, float, int]:
    """(mean idle gap between consecutive tasks on the same worker [s], mean task compute [s], number of gaps)
    from ``distributed.get_task_stream`` records (their ``startstops`` 'compute' intervals)."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        for ss in r.get("startstops", ()):
            if ss.get("action") == "compute":
                by_worker.setdefault(str(r.get("worker")), []).append((float(ss["start"]), float(ss["stop"])))
    gaps, computes = [], []
    for spans in by_worker.values():
        spans.sort()
        computes += [b - a for a, b in spans]
        gaps += [max(0.0, s1 - e0) for (_, e0), (s1, _) in zip(spans[:-1], spans[1:], strict=True)]
    import statistics

    return (statistics.fmean(gaps) if gaps else 0.0), (statistics.fmean(computes) if computes else 0.0), len(gaps)


class _Recording:
    """An executor wrapper that collects each tile task's own wall and CPU seconds as the driver receives them."""

    def __init__(self, inner):
        self.inner = inner
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def map_tiles(self, fn, items, **kw):
        label = kw.pop("label", None)
        if kw.get("progress") is None:
            kw["progress"] = lambda done, total, message="": None

        def lab(item, r):
            self.wall.append(r["seconds"])
            self.cpu.append(r["cpu_seconds"])
            return label(item, r) if label else ""

        return self.inner.map_tiles(fn, items, label=lab, **kw)


def _timed(fn):
    """(result, wall seconds, this process's CPU seconds) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--area", type=float, default=400.0)
    p.add_argument("--tile-deg", type=float, default=5.0)
    a = p.parse_args()
    print(f"load before: {_load()}")
    print_table(run(a.area, a.tile_deg), "dask")


if __name__ == "__main__":
    main()
