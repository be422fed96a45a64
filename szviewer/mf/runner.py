"""Run the multi-frequency matched filter over a map, tile by tile, and return the candidate catalog.

Pipeline per tile (DeepSZ paper section 2.1; Melin et al. 2006): read the tile with its overlap margin (and its
inverse-variance maps) -> subtract point sources brighter than the flux cut -> mask NaN/holes/ivar = 0, subtract
the mean, apodise -> weight by sqrt(relative hits) -> noise covariance (analytic model with the instrument's
1/f, cached per tile shape, or the tile's own smoothed power, iterated with the bright candidates' templates
subtracted: szifi, Zubeldia et al.; nemo DR6, Hilton et al.) -> band-combined Fourier map -> for each core
radius, S/N map normalised locally by depth, and its groups above threshold -> merge across scales, sub-pixel
positions -> keep the candidates whose peak pixel the tile owns; and the S/N maps' robust rms away from
candidates, reported with a warning where it departs from 1 (:func:`rms_check`). See
:mod:`szviewer.mf.tilefilter`. Only one tile and one S/N map are held at a time, and ``maps`` may be a memory map
or an h5py dataset, read tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from astropy.table import Table, vstack

from szviewer.errors import Cancelled
from szviewer.mf.catalog import FLAG_NEAR_MASK, FLAG_NEAR_SOURCE, build_catalog, empty_catalog
from szviewer.mf.filter import MatchedFilterBank
from szviewer.mf.noise import data_noise_power, model_noise_power
from szviewer.mf.peaks import CANDIDATE_DTYPE
from szviewer.mf.settings import MFSettings
from szviewer.mf.sources import PointSources, find_sources, near_sources, paint_sources, subtract_sources
from szviewer.mf.tilefilter import TileResult, filter_prepared, relative_hits
from szviewer.mf.tiling import FilterBlock, extract_tile, plan_tiles, prepare_tile
from szviewer.sky.bands import NOISE_UK_ARCMIN


def tile_geometry(pixel_arcmin: float, settings: MFSettings) -> tuple[int, int, int]:
    """(interior, margin, apodisation) of the tiles in pixels."""
    interior = max(1, int(round(settings.tile_deg * 60.0 / pixel_arcmin)))
    margin = int(math.ceil(settings.tile_margin_arcmin / pixel_arcmin - 1e-9))
    apod = int(math.ceil(settings.apod_arcmin / pixel_arcmin - 1e-9))
    return interior, margin, apod


def _noise_tuple(settings: MFSettings, noise_uk_arcmin: Sequence[float] | None) -> tuple[float, ...] | None:
    """The model's white depth per band [uK-arcmin]: given, else the paper's for the paper's bands; None in data
    mode when neither is known (the data noise does not need it)."""
    if noise_uk_arcmin is None:
        known = [int(round(b)) in NOISE_UK_ARCMIN for b in settings.bands_ghz]
        if not all(known):
            if settings.noise_mode == "data":
                return None
            raise ValueError(f"no white-noise depth for band(s) {list(settings.bands_ghz)} GHz: give "
                             "noise_uk_arcmin (or an ivar map), or use noise_mode='data'")
        return tuple(float(NOISE_UK_ARCMIN[int(round(b))]) for b in settings.bands_ghz)
    nz = tuple(float(v) for v in noise_uk_arcmin)
    if len(nz) != settings.nband:
        raise ValueError(f"noise_uk_arcmin has {len(nz)} entries for {settings.nband} bands")
    return nz


def filter_tile(data: np.ndarray, bad: np.ndarray, pixel_arcmin: float, settings: MFSettings,
                noise_uk_arcmin: Sequence[float] | None = None, origin: tuple[int, int] = (0, 0),
                sources: PointSources | None = None, apod_pix: int | None = None,
                cancel: Callable[[], bool] | None = None, ivar: np.ndarray | None = None,
                ) -> tuple[np.ndarray, MatchedFilterBank, np.ndarray, PointSources | None]:
    """Filter one tile and find its candidates.

    ``data`` (nband, ny, nx) [uK] with bad pixels already zeroed and ``bad`` (ny, nx) marking them (from
    :func:`tiling.extract_tile`); ``origin`` = map (row, column) of the tile's pixel (0, 0); ``sources`` in
    map pixel coordinates; ``ivar`` (nband, ny, nx) the tile's inverse-variance maps [1/uK^2 per pixel] (depth
    weighting and local S/N normalisation, :mod:`szviewer.mf.tilefilter`). Returns ``(candidates, filter_bank,
    detect, found_sources)``: candidates (``peaks.CANDIDATE_DTYPE``) with positions in *map* pixels, all of them
    (not only those the tile owns), and the point sources found in the tile (map pixels) if
    ``settings.find_point_sources``, else None. :func:`filter_tile_result` also returns the S/N rms check.
    """
    res, found = filter_tile_result(data, bad, pixel_arcmin, settings, noise_uk_arcmin, origin, sources, apod_pix,
                                    cancel, ivar)
    return res.candidates, res.bank, res.detect, found


def filter_tile_result(data, bad, pixel_arcmin, settings, noise_uk_arcmin=None, origin=(0, 0), sources=None,
                       apod_pix=None, cancel=None, ivar=None) -> tuple[TileResult, PointSources | None]:
    """:func:`filter_tile` returning the whole :class:`~szviewer.mf.tilefilter.TileResult` (candidates in map
    pixels) and the sources found."""
    nz = _noise_tuple(settings, noise_uk_arcmin)
    if apod_pix is None:
        apod_pix = tile_geometry(pixel_arcmin, settings)[2]
    beams = settings.beam_fwhm_equivalent()
    if sources is not None and len(sources):
        data = subtract_sources(data, pixel_arcmin, sources, settings.bands_ghz, beams,
                                settings.point_source_flux_cut_mjy, origin)
        data[:, bad] = 0.0
    prepared, weight, detect = prepare_tile(data, bad, apod_pix)
    found = None
    if settings.find_point_sources and detect.any():
        found = _find_and_subtract(prepared, weight, pixel_arcmin, settings, nz)
    hits = None
    if ivar is not None and settings.use_ivar:
        hits = relative_hits(ivar, bad, settings, pixel_arcmin, nz)
    res = filter_prepared(prepared, weight, detect, pixel_arcmin, settings, nz, hits, cancel)
    cands = res.candidates
    for k, o in (("x", 1), ("x_cen", 1), ("x_peak", 1), ("y", 0), ("y_cen", 0), ("y_peak", 0)):
        cands[k] += origin[o]
    if found is not None:
        found = PointSources(found.x + origin[1], found.y + origin[0], found.flux_mjy)
    return res, found


@lru_cache(maxsize=2)
def _model_power(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                 nz: tuple[float, ...] | None) -> np.ndarray:
    power = model_noise_power(shape, pixel_arcmin, settings, nz)
    power.setflags(write=False)
    return power


def _find_and_subtract(prepared: np.ndarray, weight: np.ndarray, pixel_arcmin: float, settings: MFSettings,
                       nz: tuple[float, ...] | None) -> PointSources:
    """Find sources above the flux cut in an apodised tile and subtract them in place (tile pixels)."""
    if settings.noise_mode == "data" or nz is None:
        power = data_noise_power(prepared, pixel_arcmin, weight, settings.data_noise_smooth_ell,
                                 settings.fft_workers, weight_applied=True,
                                 min_smooth_pix=settings.data_noise_min_smooth_pix)
    else:
        power = _model_power(prepared.shape[1:], float(pixel_arcmin), settings, nz)
    found = find_sources(prepared, pixel_arcmin, settings, power, settings.point_source_snr,
                         detect=weight > 0.2)
    if len(found):
        w = weight[np.clip(np.round(found.y).astype(int), 0, weight.shape[0] - 1),
                   np.clip(np.round(found.x).astype(int), 0, weight.shape[1] - 1)]
        found = PointSources(found.x, found.y, found.flux_mjy / w[:, None])  # undo the apodisation
        prepared -= paint_sources(prepared.shape[1:], pixel_arcmin, found, settings.bands_ghz,
                                  settings.beam_fwhm_equivalent()) * weight[None]
    return found


def rms_check(rms_per_tile: np.ndarray, settings: MFSettings) -> dict:
    """Summary of the S/N maps' robust rms away from candidates (should be 1): per scale the median over tiles,
    the overall median, and a warning naming the better option where it departs from 1 by more than
    ``settings.rms_warn_frac``."""
    rms = np.asarray(rms_per_tile, dtype=float)
    if rms.ndim != 2 or rms.size == 0 or not np.isfinite(rms).any():
        return {"snr_rms": [], "snr_rms_median": None, "snr_rms_ok": None, "warning": None}
    with np.errstate(all="ignore"):
        per_scale = np.nanmedian(rms, axis=0)
    overall = float(np.nanmedian(per_scale))
    worst = float(per_scale[np.nanargmax(np.abs(per_scale - 1.0))])
    lo, hi = float(np.nanmin(per_scale)), float(np.nanmax(per_scale))
    ok = bool(np.nanmax(np.abs(per_scale - 1.0)) <= settings.rms_warn_frac)
    warning = None
    if not ok:
        if settings.noise_mode == "model":
            better = ("the noise model does not describe these maps (the S/N values are off by a factor of about "
                      f"{worst:.2f}); rerun with --noise data (the maps' own noise), or give the maps' true depths, "
                      "beams and 1/f noise")
        else:
            better = ("the data noise estimate does not normalise these maps (very non-Gaussian or strongly "
                      "varying noise?); check the maps, the masks and the ivar maps")
        warning = (f"S/N maps have a robust rms of {lo:.2f}-{hi:.2f} away from candidates (should be 1.00 within "
                   f"{settings.rms_warn_frac:.0%}) with {settings.noise_mode} noise: {better}")
    return {"snr_rms": [None if not np.isfinite(v) else round(float(v), 4) for v in per_scale],
            "snr_rms_median": round(overall, 4), "snr_rms_ok": ok, "warning": warning}


def run_mf(maps, wcs, pixel_arcmin: float, settings: MFSettings | None = None,
           noise_uk_arcmin: Sequence[float] | None = None, sources: PointSources | None = None,
           progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
           mask: np.ndarray | None = None, ivar=None) -> Table:
    """Find SZ cluster candidates in multi-band maps with the multi-frequency matched filter.

    Parameters
    ----------
    maps : array-like (nband, ny, nx)
        Flat-sky maps in uK_CMB, bands as ``settings.bands_ghz``; NaN marks missing pixels. Any object that
        supports slicing (numpy array, memmap, h5py dataset): it is read one tile at a time.
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the maps (CAR, TAN, ...), for ra/dec and names; None leaves them empty.
    pixel_arcmin : float
        Pixel side [arcmin] (0.25 in the DeepSZ setup).
    settings : MFSettings
        Filter settings (paper defaults).
    noise_uk_arcmin : sequence of float
        White-noise depth per band [uK-arcmin] for the noise model (default: the paper's 2.8, 2.6, 6.6); with
        ``ivar`` the depth at relative hits 1.
    sources : PointSources
        Known point sources (map pixel positions, mJy per band); those above the flux cut are subtracted and
        candidates near them flagged.
    progress : callable(done, total)
        Called with the number of tiles done.
    cancel : callable() -> bool
        Polled between tiles and scales; True raises :class:`Cancelled`.
    mask : bool array (ny, nx)
        True marks pixels to exclude, in addition to NaNs.
    ivar : array-like (nband, ny, nx) or None
        Inverse-variance maps [1/uK^2 per pixel] (0 = no data, excluded): the maps are weighted by depth and the
        S/N normalised locally (:mod:`szviewer.mf.tilefilter`).

    Returns
    -------
    astropy.table.Table
        See :mod:`szviewer.mf.catalog`; sorted by decreasing S/N; settings, the S/N rms check
        (``snr_rms``, ``snr_rms_ok``, ``warning``) and the noise iterations in ``meta``.
    """
    settings = settings or MFSettings()
    if len(maps.shape) != 3 or maps.shape[0] != settings.nband:
        raise ValueError(f"maps must be (nband={settings.nband}, ny, nx), got {maps.shape}")
    if ivar is not None and tuple(ivar.shape) != tuple(maps.shape):
        raise ValueError(f"ivar must have the maps' shape {tuple(maps.shape)}, got {tuple(ivar.shape)}")
    interior, margin, apod = tile_geometry(pixel_arcmin, settings)
    tiles = plan_tiles(maps.shape[1:], interior, margin)
    nz = _noise_tuple(settings, noise_uk_arcmin)
    total = len(tiles)
    if progress is not None:
        progress(0, total)
    parts: list[np.ndarray] = []
    found_parts: list[PointSources] = []
    owners: list[np.ndarray] = []
    rms_rows: list[np.ndarray] = []
    iterations: list[int] = []
    for k, tile in enumerate(tiles):
        if cancel is not None and cancel():
            raise Cancelled("matched-filter run cancelled")
        data, bad = extract_tile(maps, tile, mask)
        ivar_tile = None
        if ivar is not None:
            ivar_tile, ivar_bad = extract_tile(ivar, tile, None)
            bad |= ivar_bad | ~(ivar_tile > 0).all(axis=0)
            data[:, bad] = 0.0
        tile_sources = _sources_near(sources, tile, settings, pixel_arcmin)
        try:
            res, found = filter_tile_result(data, bad, pixel_arcmin, settings, nz, (tile.y0, tile.x0),
                                            tile_sources, apod, cancel, ivar_tile)
        except Cancelled:
            raise Cancelled("matched-filter run cancelled") from None
        cands = res.candidates
        own = cands[_owned(tile, cands)]
        if found is not None and len(found):
            found_parts.append(found.select(tile.owns(found.y, found.x)))
        parts.append(own)
        owners.append(np.full(len(own), tile.index, dtype=np.int32))
        if res.detect.any():
            rms_rows.append(res.snr_rms)
        iterations.append(res.iterations)
        if progress is not None:
            progress(k + 1, total)
    cands = np.concatenate(parts) if parts else np.zeros(0, dtype=CANDIDATE_DTYPE)
    tile_ids = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int32)
    flags = np.where(cands["touches_mask"], FLAG_NEAR_MASK, 0).astype(np.int32)
    near = near_sources(cands["x"], cands["y"], sources, settings.source_flag_radius_arcmin / pixel_arcmin,
                        settings.source_flag_flux_mjy)
    flags |= np.where(near, FLAG_NEAR_SOURCE, 0).astype(np.int32)
    if found_parts:
        found_all = PointSources(np.concatenate([f.x for f in found_parts]),
                                 np.concatenate([f.y for f in found_parts]),
                                 np.concatenate([f.flux_mjy for f in found_parts]))
        near = near_sources(cands["x"], cands["y"], found_all,
                            settings.source_flag_radius_arcmin / pixel_arcmin, settings.source_flag_flux_mjy)
        flags |= np.where(near, FLAG_NEAR_SOURCE, 0).astype(np.int32)
    check = rms_check(np.array(rms_rows) if rms_rows else np.zeros((0, settings.nband)), settings)
    meta = {"pixel_arcmin": float(pixel_arcmin), "noise_uk_arcmin": None if nz is None else list(nz),
            "n_tiles": total, "n_sources_found": int(sum(len(f) for f in found_parts)),
            "tile_shape": list(tiles[0].shape) if tiles else [], "map_shape": list(maps.shape[1:]),
            "depth_weighted": bool(ivar is not None and settings.use_ivar),
            "noise_iterations": iterations, **check}
    return build_catalog(cands, wcs, settings, tile_ids, flags, meta, pixel_arcmin)


def _owned(tile: FilterBlock, cands: np.ndarray) -> np.ndarray:
    """Ownership by the peak pixel, which (unlike the centroid) does not move when a group is clipped."""
    return tile.owns(cands["y_peak"].astype(float), cands["x_peak"].astype(float))


def _sources_near(sources: PointSources | None, tile: FilterBlock, settings: MFSettings,
                  pixel_arcmin: float) -> PointSources | None:
    if sources is None or len(sources) == 0:
        return None
    pad = 6.0 * max(settings.beam_fwhm_equivalent()) / pixel_arcmin + 2.0
    keep = ((sources.x >= tile.x0 - pad) & (sources.x < tile.x0 + tile.nx + pad)
            & (sources.y >= tile.y0 - pad) & (sources.y < tile.y0 + tile.ny + pad))
    return sources.select(keep) if keep.any() else None


def concat_catalogs(tables: Sequence[Table]) -> Table:
    """Stack catalogs of several runs (e.g. several maps), keeping the first one's meta, sorted by S/N."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_catalog()
    out = vstack(tables, metadata_conflicts="silent")
    out.sort("snr", reverse=True)
    return out
