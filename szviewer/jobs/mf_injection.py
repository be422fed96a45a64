"""Job: the selection function of the matched filter on a workspace by injection (issue 12 part 6; the method:
:mod:`szviewer.mf.selection`), product ``mf_injection``."""

from __future__ import annotations

import time

import numpy as np
from astropy.table import Table, vstack

from szviewer.errors import Cancelled, InputError
from szviewer.jobs.mf_inputs import instrument_settings, sources_table, workspace_runs
from szviewer.jobs.mf_tiles import InjectionTileTask, read_tile_table, run_tiles, tile_checkpoints
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import NOISE_UK_ARCMIN
from szviewer.workspace import Workspace

INJECTIONS = "mf_injections.fits"


def _owned_fraction(tile, step: int = 16) -> float:
    """Fraction of a sky tile's pixels (every ``step``-th) inside the area it owns."""
    yy, xx = np.mgrid[0:tile.ny:step, 0:tile.nx:step]
    ra, dec = tile.pix_to_world(xx.ravel(), yy.ravel())
    return float(np.mean(tile.owned.contains(np.asarray(ra), np.asarray(dec))))


def run_injection_on_workspace(ws: Workspace, settings=None, injection=None, progress: ProgressFn | None = None,
                               cancelled: CancelFn | None = None, overwrite: bool = False, executor=None) -> dict:
    """The selection function of the matched filter on a workspace (issue 12 part 6; :mod:`szviewer.mf.selection`):
    ``injection.n`` clusters injected into the observed maps (in memory), the filter rerun, matched within 1'.

    Writes the product ``mf_injection``: ``mf_injections.fits`` (one row per injection: position, kind, y0,
    theta_c or M500, z, theta500, the noise-free S/N ``snr_true``, what was recovered), the recovered-fraction
    tables ``mf_selection_y0_theta_c.ecsv``, ``mf_selection_m500_z.ecsv``, ``mf_selection_snr_true.ecsv``, and a
    summary (completeness, S/N ratio and offset distributions, timing). A synthetic sky's tiles are tasks of
    ``executor`` (:mod:`szviewer.parallel`), checkpointed like the MF's; the same table on any executor."""
    from szviewer.mf.selection import run_injection
    from szviewer.mf.selection_plan import InjectionSettings
    from szviewer.mf.selection_tables import selection_tables
    from szviewer.mf.settings import MFSettings
    from szviewer.parallel import InProcessExecutor

    settings = settings or MFSettings()
    injection = injection or InjectionSettings()
    ws.check_replace("mf_injection", overwrite)
    started = ws.generations("mf_injection", ("sky",))
    t0 = time.perf_counter()
    noise = {int(b): float(v) for b, v in
             ws.products["sky"].get("settings", {}).get("noise_uk_arcmin", NOISE_UK_ARCMIN).items()}
    sky = ws.sky()
    ckpt = None
    if ws.kind == "synthetic":
        settings = instrument_settings(ws, settings)
        frac = np.array([_owned_fraction(t) * t.ny * t.nx for t in sky.tiles])
        share = np.floor(injection.n * frac / frac.sum()).astype(int)
        share[np.argsort(-(injection.n * frac / frac.sum() - share))[:injection.n - share.sum()]] += 1
        ckpt = tile_checkpoints(ws, "mf_injection", settings, noise, {"injection": injection.to_dict()})
        task = InjectionTileTask(ws.root, ws.products["sky"].get("generation", 0), settings, noise, ckpt.folder)
        task.injection, task.share = injection, [int(v) for v in share]
        if executor is None or isinstance(executor, InProcessExecutor):
            task._ctx = (ws, sky, sources_table(ws))
        run_tiles(len(sky.tiles), task, ckpt, executor, progress, cancelled, "injection tiles",
                   lambda k, r: f"tile {r['tile']}: {r['injected']} injected")
        parts = [read_tile_table(ckpt.path(k)) for k in range(len(sky.tiles)) if share[k] > 0]
    else:
        runs = workspace_runs(ws, settings, noise)
        settings = next(runs)
        parts = []
        for run in runs:
            check_cancel(cancelled, "injection run")
            rng = np.random.default_rng(np.random.SeedSequence(injection.seed, spawn_key=(run.index,)))

            def tick(d, t, run=run):
                if progress is not None:
                    progress(run.index * t + d, run.count * t, f"map {run.index + 1}/{run.count}: tile pass {d}/{t}")

            try:
                part = run_injection(run.maps, run.wcs, run.pixel_arcmin, settings, injection, injection.n, rng,
                                     noise_uk_arcmin=run.noise_uk_arcmin, sources=run.sources, mask=run.mask,
                                     ivar=run.ivar, owned=None, progress=tick, cancel=cancelled)
            except Cancelled:
                raise Cancelled("injection run cancelled") from None
            part["map"] = np.full(len(part), run.index, dtype=np.int32)
            parts.append(part)
    table = vstack(parts, metadata_conflicts="silent") if parts else Table()
    if not len(table):
        raise InputError(ws.root, "no room for any injection: the maps' usable area is smaller than the injection "
                                  f"spacing ({injection.spacing_arcmin:g}')")
    tables, summary = selection_tables(table, settings.snr_threshold)
    area = float(ws.geometry.get("area_deg2") or 0.0)
    summary.update({"seconds": round(time.perf_counter() - t0, 2), "noise_mode": settings.noise_mode,
                    "rounds": int(sum(p.meta.get("rounds", 0) for p in parts)),
                    "n_requested": int(injection.n), "area_deg2": area or None,
                    "spacing_arcmin": injection.spacing_arcmin, "avoid_arcmin": injection.avoid_arcmin,
                    "match_arcmin": injection.match_arcmin})
    table.meta = {"NOISE": settings.noise_mode, "MATCHRAD": injection.match_arcmin, "SNRCUT": settings.snr_threshold}
    with ws.writing("mf_injection", inputs=("sky",), overwrite=overwrite, started=started) as w:
        table.write(w.path(INJECTIONS), format="fits")
        for name, t in tables.items():
            t.write(w.path(f"mf_selection_{name}.ecsv"), format="ascii.ecsv")
        w.settings = {"mf": settings.to_dict(), "injection": injection.to_dict()}
        w.summary = summary
    if ckpt is not None:
        ckpt.clear_all()
    return summary
