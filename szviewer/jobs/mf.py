"""Job: the matched filter on a workspace, matched to halos and to cutouts (paper sections 2.1 and 2.3;
the matching rules: :mod:`szviewer.mf.halo_match`).

For a synthetic workspace the filter runs on each tile's observed map (the sum of its components plus the
instrument's one noise realisation: the very pixels the cutouts and the CNN read), with the instrument's white
depths and beams, the instrument's mask (apodised footprint edges, holes around bright sources) marking unusable
pixels, and the sources brighter than the flux cut in the sky's source catalogue subtracted; detections are kept
by the tile that owns them. Then (paper section 2.3):

1. each detection is matched to the most massive halo within 1' (when truth exists);
2. a matched detection is assigned to the cutout holding the true halo centre, an unmatched one to the
   cutout holding the detection;
3. each cutout's ``mf_snr`` is the largest S/N assigned to it; a cutout with none gets NaN (the
   evaluation treats NaN as never positive and ranks it lowest, as DeepSZ's fill value 2.0 did).
"""

from __future__ import annotations

import json
import time

import numpy as np
from astropy.table import Table, vstack

from szviewer.cutouts.grid import CutoutGrid, GridSettings
from szviewer.errors import Cancelled, InputError
from szviewer.jobs.mf_inputs import instrument_settings, sources_table, workspace_runs
from szviewer.jobs.mf_tiles import MFTileTask, read_tile_table, run_tiles, tile_checkpoints
from szviewer.mf.halo_match import MATCH_RADIUS_ARCMIN, assign_to_cutouts, cutout_snr
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky.bands import NOISE_UK_ARCMIN
from szviewer.workspace import Workspace

CATALOG = "mf_catalog.fits"


def combined_rms_check(metas: list[dict], settings) -> dict:
    """The S/N rms check (:func:`szviewer.mf.runner.rms_check`) over every run of a workspace (one per tile)."""
    from szviewer.mf.runner import rms_check

    rows = [m["snr_rms"] for m in metas if m.get("snr_rms")]
    rows = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    return rms_check(rows if rows.size else np.zeros((0, len(settings.theta_c_arcmin))), settings)


def run_mf_on_workspace(ws: Workspace, settings=None, progress: ProgressFn | None = None,
                        cancelled: CancelFn | None = None, overwrite: bool = False, executor=None) -> dict:
    """Run the MF over the workspace, write ``mf_catalog.fits`` and the ``mf_snr`` score column.

    A synthetic sky's tiles are filtered as tasks of ``executor`` (:mod:`szviewer.parallel`; default in process),
    each checkpointed, so a re-run after a cancel skips the tiles done (:mod:`szviewer.parallel.resume`); the
    catalogue is the same bit for bit on any executor."""
    from szviewer.mf.runner import run_mf
    from szviewer.mf.settings import MFSettings
    from szviewer.parallel import InProcessExecutor

    settings = settings or MFSettings()
    if not ws.has("cutouts"):
        raise InputError(ws.root, "workspace has no cutouts yet (run `szviewer cutouts WS`): the MF scores them")
    ws.check_replace("mf", overwrite)
    started = ws.generations("mf")
    t0 = time.perf_counter()
    noise = {int(b): float(v) for b, v in
             ws.products["sky"].get("settings", {}).get("noise_uk_arcmin", NOISE_UK_ARCMIN).items()}
    halos = ws.halos()
    cats = []
    checks: list[dict] = []  # each run's S/N rms check (catalogue meta)
    ckpt = None
    resumed = 0
    with ws.writing("mf", overwrite=overwrite, started=started) as w:  # the product lock, for the whole job
        if ws.kind == "synthetic":
            sky = ws.sky()
            settings = instrument_settings(ws, settings)
            ckpt = tile_checkpoints(ws, "mf", settings, noise)
            task = MFTileTask(ws.root, ws.products["sky"].get("generation", 0), settings, noise, ckpt.folder)
            if executor is None or isinstance(executor, InProcessExecutor):
                task._ctx = (ws, sky, sources_table(ws))
            done = run_tiles(len(sky.tiles), task, ckpt, executor, progress, cancelled, "mf tiles",
                              lambda k, r: f"tile {r['tile']}: {r['detections']} detections")
            resumed = sum(r is None for r in done)
            for k in range(len(sky.tiles)):
                cats.append(read_tile_table(ckpt.path(k)))
                checks.append(cats[-1].meta)
        else:
            runs = workspace_runs(ws, settings, noise)
            settings = next(runs)
            for run in runs:
                if cancelled is not None and cancelled():
                    raise Cancelled("matched filter cancelled")
                try:
                    cat = run_mf(run.maps, run.wcs, run.pixel_arcmin, settings, noise_uk_arcmin=run.noise_uk_arcmin,
                                 sources=run.sources, cancel=cancelled, mask=run.mask, ivar=run.ivar,
                                 progress=None if progress is None else (lambda d, t: progress(d, t, "tiles")))
                except Cancelled:
                    raise Cancelled("matched filter cancelled") from None
                checks.append(cat.meta)
                cats.append(cat)
        _commit_mf(ws, w, cats, checks, halos, settings, t0, resumed)
    if ckpt is not None:
        ckpt.clear_all()
    return w.summary


def _commit_mf(ws: Workspace, w, cats: list, checks: list, halos, settings, t0: float, resumed: int) -> None:
    """Match the catalogue to halos and cutouts (paper section 2.3) and write the product's files into ``w``."""
    catalog = vstack(cats, metadata_conflicts="silent") if cats else Table()
    with ws.cutout_store() as st:
        table = st.table
        attrs = st.attrs()
    from szviewer.sky.tiles import Footprint

    grid = CutoutGrid(Footprint(*attrs["footprint"]), GridSettings(npix=attrs["npix"],
                                                                   pixel_arcmin=attrs["pixel_arcmin"],
                                                                   stride_arcmin=attrs["stride_arcmin"]))
    if len(catalog):
        match, cells = assign_to_cutouts(catalog, halos, grid)
        catalog["halo_row"] = match
        catalog["halo_id"] = np.where(match >= 0, np.asarray(halos["halo_id"])[np.maximum(match, 0)], -1) \
            if halos is not None and "halo_id" in halos.colnames else match
        catalog["cutout_id"] = cells
        snr = cutout_snr(cells, np.asarray(catalog["snr"], float), np.asarray(table["id"]))
    else:
        snr = np.full(len(table), np.nan)
    # FITS headers take short keys; the settings travel as one JSON string (astropy writes CONTINUE cards)
    check = combined_rms_check(checks, settings)
    catalog.meta = {"MATCHRAD": MATCH_RADIUS_ARCMIN, "MFSET": json.dumps(settings.to_dict(compact=True)),
                    "NOISE": settings.noise_mode, "SNRRMS": json.dumps(check["snr_rms"]),
                    "RMSOK": bool(check["snr_rms_ok"]) if check["snr_rms_ok"] is not None else True}
    if check["warning"]:
        catalog.meta["MFWARN"] = check["warning"]
    labels = np.asarray(table["label"], bool)
    summary = {"detections": len(catalog), "cutouts_with_detection": int(np.isfinite(snr).sum()),
               "positives_detected": int((np.isfinite(snr) & labels).sum()), "positives": int(labels.sum()),
               "seconds": round(time.perf_counter() - t0, 2), "noise_mode": settings.noise_mode,
               "bands_ghz": list(settings.bands_ghz), "depth_weighted": any(c.get("depth_weighted") for c in checks),
               "snr_rms": check["snr_rms"], "snr_rms_median": check["snr_rms_median"],
               "snr_rms_ok": check["snr_rms_ok"], "warning": check["warning"]}
    if resumed:
        summary["tiles_resumed"] = resumed
    catalog.write(w.path(CATALOG), format="fits")  # the catalogue and the scores: one commit
    w.write_scores(np.asarray(table["id"]), {"mf_snr": snr, "mf_detected": np.isfinite(snr).astype(float)},
                   meta={"missing": "NaN: no detection assigned to this cutout", "match_radius_arcmin": 1.0})
    w.settings, w.summary = settings.to_dict(), summary
