"""Job: the matched filter on a workspace, matched to halos and to cutouts (paper sections 2.1 and 2.3).

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
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky.bands import NOISE_UK_ARCMIN
from szviewer.workspace import Workspace

CATALOG = "mf_catalog.fits"
MATCH_RADIUS_ARCMIN = 1.0


def match_to_halos(ra, dec, halos: Table | None, radius_arcmin: float = MATCH_RADIUS_ARCMIN) -> np.ndarray:
    """Row of the most massive halo within ``radius_arcmin`` of each detection, -1 where none."""
    ra = np.asarray(ra, dtype=float)
    out = np.full(ra.size, -1, dtype=np.int64)
    if halos is None or len(halos) == 0 or ra.size == 0:
        return out
    from scipy.spatial import cKDTree

    from szviewer.sky.geometry import radec_to_vec

    tree = cKDTree(radec_to_vec(np.asarray(halos["ra"], float), np.asarray(halos["dec"], float)))
    chord = 2 * np.sin(np.deg2rad(radius_arcmin / 60.0) / 2)
    hits = tree.query_ball_point(radec_to_vec(ra, np.asarray(dec, dtype=float)), chord)
    mass = np.asarray(halos["m_vir"], dtype=float)
    for i, h in enumerate(hits):
        if h:
            out[i] = h[int(np.argmax(mass[h]))]
    return out


def assign_to_cutouts(catalog: Table, halos: Table | None, grid: CutoutGrid) -> tuple[np.ndarray, np.ndarray]:
    """(halo row, cutout grid id) of each detection, by the paper's rules (section 2.3)."""
    det_ra = np.asarray(catalog["ra"], float)
    det_dec = np.asarray(catalog["dec"], float)
    match = match_to_halos(det_ra, det_dec, halos)
    ra = det_ra.copy()
    dec = det_dec.copy()
    m = match >= 0
    if m.any():
        ra[m] = np.asarray(halos["ra"], float)[match[m]]
        dec[m] = np.asarray(halos["dec"], float)[match[m]]
    return match, grid.cell_of(ra, dec)


def cutout_snr(cells: np.ndarray, snr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Largest S/N assigned to each cutout id (NaN where none)."""
    ids = np.asarray(ids)
    best = np.full(ids.size, -np.inf)
    if ids.size:
        order = np.argsort(ids)
        k = order[np.minimum(np.searchsorted(ids[order], cells), ids.size - 1)]
        hit = ids[k] == np.asarray(cells)
        np.maximum.at(best, k[hit], np.asarray(snr, dtype=float)[hit])
    return np.where(np.isfinite(best), best, np.nan)


def tile_mask(ws: Workspace, sky, k: int, srcs: Table | None) -> np.ndarray | None:
    """Unusable pixels (True) of tile ``k``: where the instrument's footprint mask is 0 (None: no mask)."""
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
    m = footprint_mask(inst, tuple(ws.geometry["footprint"]), np.asarray(ra).reshape(tile.shape),
                       np.asarray(dec).reshape(tile.shape), srcs)
    return m <= 0


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


def run_mf_on_workspace(ws: Workspace, settings=None, progress: ProgressFn | None = None,
                        cancelled: CancelFn | None = None, overwrite: bool = False) -> dict:
    """Run the MF over the workspace, write ``mf_catalog.fits`` and the ``mf_snr`` score column."""
    from szviewer.mf.runner import Cancelled as MFCancelled
    from szviewer.mf.runner import run_mf
    from szviewer.mf.settings import MFSettings
    from szviewer.mf.sources import PointSources

    settings = settings or MFSettings()
    if not ws.has("cutouts"):
        raise InputError(ws.root, "workspace has no cutouts yet (run `szviewer cutouts WS`): the MF scores them")
    ws.check_replace("mf", overwrite)
    started = ws.generations("mf")
    t0 = time.perf_counter()
    noise = {int(b): float(v) for b, v in
             ws.products["sky"].get("settings", {}).get("noise_uk_arcmin", NOISE_UK_ARCMIN).items()}
    halos = ws.halos()
    sky = ws.sky()
    cats = []
    checks: list[dict] = []  # each run's S/N rms check (catalogue meta)
    if ws.kind == "synthetic":
        srcs = Table.read(ws.path("sources.fits")) if ws.has("sources") else None
        settings = instrument_settings(ws, settings)
        for k, tile in enumerate(sky.tiles):
            if cancelled is not None and cancelled():
                raise Cancelled("matched filter cancelled")
            maps = sky.tile_maps(k)
            ps = None
            if srcs is not None:
                x, y = tile.world_to_pix(np.asarray(srcs["ra"]), np.asarray(srcs["dec"]))
                ok = np.isfinite(x) & (x > -2) & (x < tile.nx + 1) & (y > -2) & (y < tile.ny + 1)
                flux = np.column_stack([np.asarray(srcs[f"flux_{b}"], float) for b in sky.bands])
                ps = PointSources(x[ok], y[ok], flux[ok])
            try:
                cat = run_mf(maps, tile.wcs(), tile.pixel_arcmin, settings,
                             noise_uk_arcmin=[noise[b] for b in sky.bands], sources=ps, cancel=cancelled,
                             mask=tile_mask(ws, sky, k, srcs), ivar=tile_ivar(ws, tile))
            except MFCancelled:
                raise Cancelled("matched filter cancelled") from None
            del maps
            checks.append(cat.meta)
            cat = cat[tile.owned.contains(np.asarray(cat["ra"]), np.asarray(cat["dec"]))]
            cat["tile"] = np.full(len(cat), tile.index, dtype=np.int32)
            cats.append(cat)
            if progress is not None:
                progress(k + 1, len(sky.tiles), f"tile {tile.index}: {len(cat)} detections")
    elif ws.kind == "fits":
        settings, depth = fits_settings(ws, sky, settings, noise)
        maps = sky.band_maps()
        ivars = [sky.ivar(b) for b in sky.bands] if hasattr(sky, "ivar") else []
        ivar = BandStack(ivars) if ivars and all(v is not None for v in ivars) else None
        try:
            cat = run_mf(maps, sky.wcs, float(np.mean(sky.pixel_arcmin)), settings,
                         noise_uk_arcmin=depth, cancel=cancelled, mask=~sky.usable, ivar=ivar,
                         progress=None if progress is None else (lambda d, t: progress(d, t, "tiles")))
        except MFCancelled:
            raise Cancelled("matched filter cancelled") from None
        checks.append(cat.meta)
        cats.append(cat)
    else:
        raise InputError(ws.root, f"the matched filter does not run on {ws.kind} workspaces yet "
                                  "(HEALPix maps need flat-sky tiles first)")
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
    with ws.writing("mf", overwrite=overwrite, started=started) as w:  # the catalogue and the scores: one commit
        catalog.write(w.path(CATALOG), format="fits")
        w.write_scores(np.asarray(table["id"]), {"mf_snr": snr, "mf_detected": np.isfinite(snr).astype(float)},
                       meta={"missing": "NaN: no detection assigned to this cutout", "match_radius_arcmin": 1.0})
        w.settings, w.summary = settings.to_dict(), summary
    return summary
