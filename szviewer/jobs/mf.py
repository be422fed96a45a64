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

from szviewer.atomic import atomic_path
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


def instrument_settings(ws: Workspace, settings):
    """``settings`` with the workspace instrument's effective frequencies and beams (Gaussian FWHM; a B_ell
    table enters as its equivalent FWHM), where the user did not set beams."""
    from szviewer.sky.instruments import Instrument

    inst = ws.products["sky"].get("settings", {}).get("instrument")
    if not isinstance(inst, dict):
        return settings
    inst = Instrument.from_dict(inst)
    changes = {}
    if tuple(settings.bands_ghz) != tuple(inst.freqs_ghz):
        changes["bands_ghz"] = tuple(inst.freqs_ghz)
    if not any(settings.beam_fwhm_arcmin):
        changes["beam_fwhm_arcmin"] = tuple(b.beam.fwhm_equivalent_arcmin() for b in inst.bands)
    return settings.replace(**changes) if changes else settings


def fits_settings(ws: Workspace, sky, settings, noise: dict) -> tuple:
    """The MF settings and white depths [uK-arcmin] for the user's FITS maps: the recorded effective frequencies,
    the recorded beams (FWHM, or a B_ell table's equivalent FWHM) unless the user gave beams, and the median depth
    of each band's ivar map (else the paper's depth for a paper band)."""
    bands = tuple(sky.bands)
    if len(bands) != settings.nband:
        raise InputError(ws.root, f"the matched filter takes {settings.nband} bands (like the paper's 90/148/219 GHz) "
                                  f"for now; this workspace has {len(bands)} ({', '.join(map(str, bands))} GHz)")
    freqs = tuple(float(sky.freqs_ghz[b]) for b in bands) if hasattr(sky, "freqs_ghz") else bands
    changes = {"bands_ghz": freqs}
    beams = getattr(sky, "beams", {}) or {}
    if not any(settings.beam_fwhm_arcmin) and any(beams.get(b) is not None for b in bands):
        changes["beam_fwhm_arcmin"] = tuple(0.0 if beams.get(b) is None else beams[b].fwhm_equivalent_arcmin()
                                            for b in bands)
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


def run_mf_on_workspace(ws: Workspace, settings=None, progress: ProgressFn | None = None,
                        cancelled: CancelFn | None = None) -> dict:
    """Run the MF over the workspace, write ``mf_catalog.fits`` and the ``mf_snr`` score column."""
    from szviewer.mf.runner import Cancelled as MFCancelled
    from szviewer.mf.runner import run_mf
    from szviewer.mf.settings import MFSettings
    from szviewer.mf.sources import PointSources

    settings = settings or MFSettings()
    if not ws.has("cutouts"):
        raise InputError(ws.root, "workspace has no cutouts yet (run `szviewer cutouts WS`): the MF scores them")
    t0 = time.perf_counter()
    noise = {int(b): float(v) for b, v in
             ws.products["sky"].get("settings", {}).get("noise_uk_arcmin", NOISE_UK_ARCMIN).items()}
    halos = ws.halos()
    sky = ws.sky()
    cats = []
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
                             mask=tile_mask(ws, sky, k, srcs))
            except MFCancelled:
                raise Cancelled("matched filter cancelled") from None
            del maps
            cat = cat[tile.owned.contains(np.asarray(cat["ra"]), np.asarray(cat["dec"]))]
            cat["tile"] = np.full(len(cat), tile.index, dtype=np.int32)
            cats.append(cat)
            if progress is not None:
                progress(k + 1, len(sky.tiles), f"tile {tile.index}: {len(cat)} detections")
    elif ws.kind == "fits":
        settings, depth = fits_settings(ws, sky, settings, noise)
        maps = sky.band_maps()
        try:
            cat = run_mf(maps, sky.wcs, float(np.mean(sky.pixel_arcmin)), settings,
                         noise_uk_arcmin=depth, cancel=cancelled, mask=~sky.usable,
                         progress=None if progress is None else (lambda d, t: progress(d, t, "tiles")))
        except MFCancelled:
            raise Cancelled("matched filter cancelled") from None
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
    catalog.meta = {"MATCHRAD": MATCH_RADIUS_ARCMIN, "MFSET": json.dumps(settings.to_dict())}
    with atomic_path(ws.path(CATALOG)) as tmp:
        catalog.write(tmp, format="fits")
    labels = np.asarray(table["label"], bool)
    summary = {"detections": len(catalog), "cutouts_with_detection": int(np.isfinite(snr).sum()),
               "positives_detected": int((np.isfinite(snr) & labels).sum()), "positives": int(labels.sum()),
               "seconds": round(time.perf_counter() - t0, 2)}
    ws.write_scores("mf", np.asarray(table["id"]), {"mf_snr": snr, "mf_detected": np.isfinite(snr).astype(float)},
                    meta={"missing": "NaN: no detection assigned to this cutout", "match_radius_arcmin": 1.0},
                    settings=settings.to_dict(), summary=summary, files=[CATALOG])
    return summary
