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
from dataclasses import dataclass

import numpy as np
from astropy.table import Table, vstack

from szviewer.cutouts.grid import CutoutGrid, GridSettings
from szviewer.errors import Cancelled, InputError
from szviewer.mf.halo_match import MATCH_RADIUS_ARCMIN, assign_to_cutouts, cutout_snr
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import NOISE_UK_ARCMIN
from szviewer.workspace import Workspace

CATALOG = "mf_catalog.fits"


def tile_mask(ws: Workspace, sky, k: int, srcs: Table | None) -> np.ndarray | None:
    """Unusable pixels (True) of tile ``k``: where the instrument's footprint mask is 0 (None: no mask)."""
    m = tile_footprint(ws, sky, k, srcs)
    return None if m is None else m <= 0


def tile_footprint(ws: Workspace, sky, k: int, srcs: Table | None) -> np.ndarray | None:
    """The instrument's footprint mask of tile ``k`` in [0, 1] (apodised edges, holes around bright sources;
    :func:`szviewer.sky.noise_maps.footprint_mask`), or None where the instrument has no mask."""
    from szviewer.sky.instruments import Instrument
    from szviewer.sky.noise_maps import footprint_mask

    inst = ws.products["sky"].get("settings", {}).get("instrument")
    if not isinstance(inst, dict):
        return None
    inst = Instrument.from_dict(inst)
    if inst.edge_apod_arcmin <= 0 and inst.hole_flux_mjy <= 0:
        return None
    tile = sky.tiles[k]
    yy, xx = np.mgrid[0:tile.ny, 0:tile.nx]
    ra, dec = tile.pix_to_world(xx.ravel(), yy.ravel())
    return footprint_mask(inst, tuple(ws.geometry["footprint"]), np.asarray(ra).reshape(tile.shape),
                          np.asarray(dec).reshape(tile.shape), srcs)


def _user_beams(settings) -> bool:
    """True when the settings carry beams the user gave (``--beam-fwhm``), which the workspace's must not replace."""
    return any(settings.beam_fwhm_arcmin) or any(settings.beam_tables)


def _beam_settings(beams: list) -> dict:
    """MFSettings fields for per-band beams (:class:`szviewer.sky.beams.Beam` or None): Gaussian FWHMs, and
    B_ell tables (resampled compactly, :func:`szviewer.mf.settings.resample_beam_table`) where a band has one."""
    from szviewer.mf.settings import resample_beam_table

    fwhm = tuple(0.0 if b is None else float(b.fwhm_equivalent_arcmin()) for b in beams)
    if not any(b is not None and b.is_table for b in beams):
        return {"beam_fwhm_arcmin": fwhm, "beam_tables": ()}
    tables = tuple(resample_beam_table(b) if (b is not None and b.is_table) else () for b in beams)
    return {"beam_fwhm_arcmin": fwhm, "beam_tables": tables}


def instrument_settings(ws: Workspace, settings):
    """``settings`` with the workspace instrument's bands (effective frequencies, any number), beams (Gaussian FWHM
    or B_ell tables; unless the user gave beams) and noise model (atmospheric 1/f knees, slopes, correlation and
    anisotropy: the model noise is the instrument's own)."""
    from szviewer.sky.instruments import Instrument

    inst = ws.products["sky"].get("settings", {}).get("instrument")
    if not isinstance(inst, dict):
        return settings
    inst = Instrument.from_dict(inst)
    changes = {"bands_ghz": tuple(inst.freqs_ghz),
               "noise_ell_knee": tuple(b.ell_knee for b in inst.bands),
               "noise_alpha_knee": tuple(b.alpha_knee for b in inst.bands),
               "noise_atm_correlation": inst.atmosphere_correlation, "noise_anisotropy": inst.anisotropy}
    if len(settings.ps_dl3000_uk2) not in (0, len(inst.bands)):
        changes["ps_dl3000_uk2"] = ()
    if _user_beams(settings) and len(settings.beam_fwhm_arcmin) == len(inst.bands):
        pass
    else:
        changes.update(_beam_settings([b.beam for b in inst.bands]))
    return settings.replace(**changes)


def fits_settings(ws: Workspace, sky, settings, noise: dict) -> tuple:
    """The MF settings and white depths [uK-arcmin] for the user's FITS maps: the recorded effective frequencies
    (any number of bands), the recorded beams (FWHM or B_ell tables) unless the user gave beams, and the median
    depth of each band's ivar map (else the paper's depth for a paper band)."""
    bands = tuple(sky.bands)
    freqs = tuple(float(sky.freqs_ghz[b]) for b in bands) if hasattr(sky, "freqs_ghz") else tuple(map(float, bands))
    changes = {"bands_ghz": freqs}
    if len(settings.ps_dl3000_uk2) not in (0, len(bands)):
        changes["ps_dl3000_uk2"] = ()
    beams = getattr(sky, "beams", {}) or {}
    if not (_user_beams(settings) and len(settings.beam_fwhm_arcmin) == len(bands)):
        changes.update(_beam_settings([beams.get(b) for b in bands]))
    summary = ws.products["sky"].get("summary", {}).get("bands", {})
    depth = []
    for b in bands:
        d = (summary.get(str(b)) or {}).get("depth_uk_arcmin")
        if d:
            depth.append(float(d["median"]))
        elif b in noise:
            depth.append(noise[b])
        elif settings.noise_mode == "model":
            raise InputError(ws.root, f"band {b} GHz has no ivar map, so the noise model has no depth: import it with "
                                      f"--ivar {b}=FILE, or run `szviewer mf WS --noise data`")
        else:
            depth.append(0.0)
    return settings.replace(**changes), depth


class BandStack:
    """Per-band 2-D arrays (e.g. memory-mapped ivar maps) seen as one (nband, ny, nx) array for slicing."""

    def __init__(self, arrays: list):
        self.arrays = arrays
        self.shape = (len(arrays),) + tuple(arrays[0].shape)

    def __getitem__(self, key):
        if not isinstance(key, tuple) or key[0] != slice(None):
            raise IndexError("BandStack supports [:, rows, cols] only")
        return np.stack([np.asarray(a[key[1:]], dtype=np.float32) for a in self.arrays])


def tile_ivar(ws: Workspace, tile) -> np.ndarray | None:
    """The inverse-variance maps (nband, ny, nx) [1/uK^2 per pixel] of a synthetic tile from the sky's depth pattern
    (the hits it was simulated with, :func:`szviewer.sky.synthetic.tile_hits`); None for uniform depth."""
    from szviewer.sky.noise_maps import ivar_map
    from szviewer.sky.synthetic import SimulationSettings, tile_hits

    st = ws.products["sky"].get("settings", {})
    if not isinstance(st.get("instrument"), dict):
        return None
    sim = SimulationSettings.from_dict(st)
    hits = tile_hits(sim, tile)
    if hits is None:
        return None
    return ivar_map(sim.instrument, hits, sim.pixel_arcmin)


def combined_rms_check(metas: list[dict], settings) -> dict:
    """The S/N rms check (:func:`szviewer.mf.runner.rms_check`) over every run of a workspace (one per tile)."""
    from szviewer.mf.runner import rms_check

    rows = [m["snr_rms"] for m in metas if m.get("snr_rms")]
    rows = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    return rms_check(rows if rows.size else np.zeros((0, len(settings.theta_c_arcmin))), settings)


@dataclass
class MapRun:
    """One map of a workspace as the filter reads it: a synthetic sky tile (``tile`` set: keep what it owns) or the
    FITS maps; ``index`` of ``count`` runs."""

    maps: object
    wcs: object
    pixel_arcmin: float
    noise_uk_arcmin: list
    sources: object
    mask: object
    ivar: object
    tile: object
    index: int
    count: int


def tile_run(ws: Workspace, sky, srcs: Table | None, noise: dict, k: int) -> MapRun:
    """The :class:`MapRun` of synthetic tile ``k``: its observed map (memory-mapped), the sources near it in tile
    pixels, its mask and ivar."""
    from szviewer.mf.sources import PointSources

    tile = sky.tiles[k]
    ps = None
    if srcs is not None:
        x, y = tile.world_to_pix(np.asarray(srcs["ra"]), np.asarray(srcs["dec"]))
        ok = np.isfinite(x) & (x > -2) & (x < tile.nx + 1) & (y > -2) & (y < tile.ny + 1)
        flux = np.column_stack([np.asarray(srcs[f"flux_{b}"], float) for b in sky.bands])
        ps = PointSources(x[ok], y[ok], flux[ok])
    return MapRun(sky.tile_maps(k), tile.wcs(), tile.pixel_arcmin, [noise[b] for b in sky.bands], ps,
                  tile_mask(ws, sky, k, srcs), tile_ivar(ws, tile), tile, k, len(sky.tiles))


def sources_table(ws: Workspace) -> Table | None:
    """The sky's point-source table (ra, dec, flux_<band> [mJy]), or None."""
    return Table.read(ws.path("sources.fits")) if ws.has("sources") else None


def workspace_runs(ws: Workspace, settings, noise: dict):
    """Generator: first the settings completed from the workspace (instrument bands, beams, 1/f; FITS effective
    frequencies, beams, depths), then one :class:`MapRun` per map to filter (maps read lazily)."""
    sky = ws.sky()
    if ws.kind == "synthetic":
        srcs = sources_table(ws)
        settings = instrument_settings(ws, settings)
        yield settings
        for k in range(len(sky.tiles)):
            yield tile_run(ws, sky, srcs, noise, k)
    elif ws.kind == "fits":
        settings, depth = fits_settings(ws, sky, settings, noise)
        yield settings
        ivars = [sky.ivar(b) for b in sky.bands] if hasattr(sky, "ivar") else []
        ivar = BandStack(ivars) if ivars and all(v is not None for v in ivars) else None
        yield MapRun(sky.band_maps(), sky.wcs, float(np.mean(sky.pixel_arcmin)), depth, None, ~sky.usable, ivar,
                     None, 0, 1)
    else:
        raise InputError(ws.root, f"the matched filter does not run on {ws.kind} workspaces yet "
                                  "(HEALPix maps need flat-sky tiles first)")


# --------------------------------------------------------------------------- tile tasks (any executor, issue 16)

#: The workspace a worker process opened last (root, sky generation) -> (ws, sky, sources): a worker runs many
#: tiles of one sky, so it opens the manifest, the tile headers and the source table once.
_OPENED: dict = {}


def _open_synthetic(root: str, sky_generation: int):
    key = (str(root), int(sky_generation))
    if key not in _OPENED:
        _OPENED.clear()
        ws = Workspace(root)
        _OPENED[key] = (ws, ws.sky(), sources_table(ws))
    return _OPENED[key]


def write_tile_table(table: Table, path) -> None:
    """A tile's result table as HDF5 (units, descriptions and meta kept exactly), written atomically."""
    from szviewer.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.write(tmp, format="hdf5", path="table", serialize_meta=True)


def read_tile_table(path) -> Table:
    try:
        return Table.read(path, format="hdf5", path="table")
    except (OSError, KeyError) as exc:
        raise InputError(path, f"damaged tile checkpoint ({exc}); delete it and run again") from None


class _TileTask:
    """A picklable per-tile job on a synthetic workspace: opens the workspace lazily in the worker (the driver hands
    its own open workspace to the in-process backend), runs, writes the tile's result to its checkpoint file
    (:mod:`szviewer.parallel.resume`) and returns a small summary."""

    def __init__(self, root, sky_generation: int, settings, noise: dict, folder):
        self.root, self.sky_generation = str(root), int(sky_generation)
        self.settings, self.noise, self.folder = settings, dict(noise), str(folder)
        self._ctx = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ctx"] = None
        return d

    def context(self):
        return self._ctx if self._ctx is not None else _open_synthetic(self.root, self.sky_generation)

    def task_settings(self):
        """The settings with this process's FFT threads (1 in a Dask worker); threads never change a result."""
        from szviewer.parallel import task_threads

        return self.settings.replace(fft_workers=task_threads(self.settings.fft_workers))

    def path(self, k: int):
        from pathlib import Path

        return Path(self.folder) / f"tile_{int(k):04d}.h5"


class _MFTileTask(_TileTask):
    def __call__(self, k: int, cancelled: CancelFn | None = None) -> dict:
        from szviewer.mf.runner import run_mf

        if self.path(k).is_file():  # done already: a task re-run because its worker died holding the result
            return {"tile": int(k), "detections": len(read_tile_table(self.path(k))), "seconds": 0.0,
                    "cpu_seconds": 0.0, "reused": True}
        ws, sky, srcs = self.context()
        run = tile_run(ws, sky, srcs, self.noise, k)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            cat = run_mf(run.maps, run.wcs, run.pixel_arcmin, self.task_settings(),
                         noise_uk_arcmin=run.noise_uk_arcmin, sources=run.sources, cancel=cancelled, mask=run.mask,
                         ivar=run.ivar)
        except Cancelled:
            raise Cancelled("matched filter cancelled") from None
        tile = run.tile
        cat = cat[tile.owned.contains(np.asarray(cat["ra"]), np.asarray(cat["dec"]))]
        cat["tile"] = np.full(len(cat), tile.index, dtype=np.int32)
        write_tile_table(cat, self.path(k))
        return {"tile": int(tile.index), "detections": len(cat), "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0}


class _InjectionTileTask(_TileTask):
    """Injections into one tile (issue 12 part 6): the tile's share of ``injection.n``, its own seed stream."""

    injection = None
    share: list = []

    def __call__(self, k: int, cancelled: CancelFn | None = None) -> dict:
        from szviewer.mf.selection import run_injection

        n_k = int(self.share[k])
        if self.path(k).is_file():  # done already: a task re-run because its worker died holding the result
            return {"tile": int(k), "injected": len(read_tile_table(self.path(k))), "seconds": 0.0, "reused": True}
        if n_k <= 0:
            write_tile_table(Table(), self.path(k))
            return {"tile": k, "injected": 0, "seconds": 0.0}
        ws, sky, srcs = self.context()
        run = tile_run(ws, sky, srcs, self.noise, k)
        tile = run.tile
        rng = np.random.default_rng(np.random.SeedSequence(self.injection.seed, spawn_key=(run.index,)))

        def owned(x, y, tile=tile):
            ra, dec = tile.pix_to_world(x, y)
            return tile.owned.contains(np.asarray(ra), np.asarray(dec))

        t0 = time.perf_counter()
        try:
            part = run_injection(run.maps, run.wcs, run.pixel_arcmin, self.task_settings(), self.injection, n_k, rng,
                                 noise_uk_arcmin=run.noise_uk_arcmin, sources=run.sources, mask=run.mask,
                                 ivar=run.ivar, owned=owned, progress=None, cancel=cancelled)
        except Cancelled:
            raise Cancelled("injection run cancelled") from None
        part["map"] = np.full(len(part), tile.index, dtype=np.int32)
        write_tile_table(part, self.path(k))
        return {"tile": int(tile.index), "injected": len(part), "seconds": time.perf_counter() - t0}


def _checkpoints(ws: Workspace, product: str, settings, noise: dict, extra: dict | None = None):
    from szviewer import __version__
    from szviewer.parallel.resume import TileCheckpoints

    st = settings.to_dict()
    st.pop("fft_workers", None)  # threads never change a result
    what = {"product": product, "version": __version__, "settings": st, "noise": noise,
            "sky": ws.products["sky"].get("generation"), "sources": ws.products.get("sources", {}).get("generation"),
            **(extra or {})}
    return TileCheckpoints(ws.root / product, what)


def _run_tiles(ntiles: int, task: _TileTask, ckpt, executor, progress, cancelled, what: str, label) -> list:
    """Run ``task`` on every tile not yet checkpointed, on ``executor``; returns the tiles' summaries (None for
    those done by an earlier run)."""
    from szviewer.parallel import InProcessExecutor

    executor = executor if executor is not None else InProcessExecutor()
    ckpt.make()
    done = ckpt.done()
    todo = [k for k in range(ntiles) if k not in done]
    if progress is not None:
        progress(len(done), ntiles, f"{len(done)} tiles done before (resumed)" if done else what)
    results = executor.map_tiles(task, todo, progress=progress, cancelled=cancelled, what=what, total=ntiles,
                                 done=len(done), label=label, pass_cancel=isinstance(executor, InProcessExecutor))
    out: list = [None] * ntiles
    for k, r in zip(todo, results, strict=True):
        out[k] = r
    return out


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
            ckpt = _checkpoints(ws, "mf", settings, noise)
            task = _MFTileTask(ws.root, ws.products["sky"].get("generation", 0), settings, noise, ckpt.folder)
            if executor is None or isinstance(executor, InProcessExecutor):
                task._ctx = (ws, sky, sources_table(ws))
            done = _run_tiles(len(sky.tiles), task, ckpt, executor, progress, cancelled, "mf tiles",
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
    from szviewer.mf.selection import InjectionSettings, run_injection, selection_tables
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
        ckpt = _checkpoints(ws, "mf_injection", settings, noise, {"injection": injection.to_dict()})
        task = _InjectionTileTask(ws.root, ws.products["sky"].get("generation", 0), settings, noise, ckpt.folder)
        task.injection, task.share = injection, [int(v) for v in share]
        if executor is None or isinstance(executor, InProcessExecutor):
            task._ctx = (ws, sky, sources_table(ws))
        _run_tiles(len(sky.tiles), task, ckpt, executor, progress, cancelled, "injection tiles",
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
