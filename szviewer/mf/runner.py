"""Run the multi-frequency matched filter over a map, tile by tile, and return the candidate catalog.

Pipeline per tile (DeepSZ paper section 2.1; Melin et al. 2006): read the tile with its overlap margin ->
subtract point sources brighter than the flux cut -> mask NaN/holes, subtract the mean, apodise -> noise
covariance (analytic model, cached per tile shape, or the tile's own smoothed power) -> band-combined
Fourier map -> for each core radius, S/N map and its groups above threshold -> merge across scales -> keep the
candidates whose peak pixel the tile owns. Only one tile and one S/N map are held at a time, and ``maps`` may
be a memory map or an h5py dataset, read tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from astropy.table import Table, vstack

from szviewer.errors import Cancelled as _ProjectCancelled
from szviewer.mf.catalog import FLAG_NEAR_MASK, FLAG_NEAR_SOURCE, build_catalog, empty_catalog
from szviewer.mf.filter import MatchedFilterBank, data_filter_bank, model_filter_bank
from szviewer.mf.noise import data_noise_power, model_noise_power
from szviewer.mf.peaks import CANDIDATE_DTYPE, PeakFinder
from szviewer.mf.settings import MFSettings
from szviewer.mf.sources import PointSources, find_sources, near_sources, paint_sources, subtract_sources
from szviewer.mf.tiling import Tile, extract_tile, plan_tiles, prepare_tile
from szviewer.sky.bands import NOISE_UK_ARCMIN


class Cancelled(_ProjectCancelled):
    """Raised by :func:`run_mf` when its ``cancel`` callable returns True (a szviewer.errors.Cancelled)."""


def tile_geometry(pixel_arcmin: float, settings: MFSettings) -> tuple[int, int, int]:
    """(interior, margin, apodisation) of the tiles in pixels."""
    interior = max(1, int(round(settings.tile_deg * 60.0 / pixel_arcmin)))
    margin = int(math.ceil(settings.tile_margin_arcmin / pixel_arcmin - 1e-9))
    apod = int(math.ceil(settings.apod_arcmin / pixel_arcmin - 1e-9))
    return interior, margin, apod


def _noise_tuple(settings: MFSettings, noise_uk_arcmin: Sequence[float] | None) -> tuple[float, ...]:
    if noise_uk_arcmin is None:
        return tuple(float(NOISE_UK_ARCMIN[int(b)]) for b in settings.bands_ghz)
    nz = tuple(float(v) for v in noise_uk_arcmin)
    if len(nz) != settings.nband:
        raise ValueError(f"noise_uk_arcmin has {len(nz)} entries for {settings.nband} bands")
    return nz


def filter_tile(data: np.ndarray, bad: np.ndarray, pixel_arcmin: float, settings: MFSettings,
                noise_uk_arcmin: Sequence[float] | None = None, origin: tuple[int, int] = (0, 0),
                sources: PointSources | None = None, apod_pix: int | None = None,
                cancel: Callable[[], bool] | None = None,
                ) -> tuple[np.ndarray, MatchedFilterBank, np.ndarray, PointSources | None]:
    """Filter one tile and find its candidates.

    ``data`` (nband, ny, nx) [uK] with bad pixels already zeroed and ``bad`` (ny, nx) marking them (from
    :func:`tiling.extract_tile`); ``origin`` = map (row, column) of the tile's pixel (0, 0); ``sources`` in
    map pixel coordinates. Returns ``(candidates, filter_bank, detect, found_sources)``: candidates
    (``peaks.CANDIDATE_DTYPE``) with positions in *map* pixels, all of them (not only those the tile owns),
    and the point sources found in the tile (map pixels) if ``settings.find_point_sources``, else None.
    """
    nz = _noise_tuple(settings, noise_uk_arcmin)
    if apod_pix is None:
        apod_pix = tile_geometry(pixel_arcmin, settings)[2]
    shape = data.shape[1:]
    if sources is not None and len(sources):
        data = subtract_sources(data, pixel_arcmin, sources, settings.bands_ghz, settings.beam_fwhm_arcmin,
                                settings.point_source_flux_cut_mjy, origin)
        data[:, bad] = 0.0
    prepared, weight, detect = prepare_tile(data, bad, apod_pix)
    found = None
    if settings.find_point_sources and detect.any():
        found = _find_and_subtract(prepared, weight, pixel_arcmin, settings, nz)
    if settings.noise_mode == "data":
        bank = data_filter_bank(prepared, pixel_arcmin, settings, weight, weight_applied=True, detect=detect)
    else:
        bank = model_filter_bank(shape, float(pixel_arcmin), settings, nz)
    finder = PeakFinder(shape, settings.snr_threshold, settings.theta_c_arcmin, detect,
                        settings.centroid_core_frac)
    if detect.any():
        z = bank.combine(prepared)
        for s in range(bank.nscale):
            if cancel is not None and cancel():
                raise Cancelled("matched-filter run cancelled")
            finder.add(s, bank.snr_map(z, s), bank.sigma[s])
    cands = finder.candidates()
    cands["x"] += origin[1]
    cands["y"] += origin[0]
    cands["x_peak"] += origin[1]
    cands["y_peak"] += origin[0]
    if found is not None:
        found = PointSources(found.x + origin[1], found.y + origin[0], found.flux_mjy)
    return cands, bank, detect, found


@lru_cache(maxsize=2)
def _model_power(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                 nz: tuple[float, ...]) -> np.ndarray:
    power = model_noise_power(shape, pixel_arcmin, settings, nz)
    power.setflags(write=False)
    return power


def _find_and_subtract(prepared: np.ndarray, weight: np.ndarray, pixel_arcmin: float, settings: MFSettings,
                       nz: tuple[float, ...]) -> PointSources:
    """Find sources above the flux cut in an apodised tile and subtract them in place (tile pixels)."""
    if settings.noise_mode == "data":
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
                                  settings.beam_fwhm_arcmin) * weight[None]
    return found


def run_mf(maps, wcs, pixel_arcmin: float, settings: MFSettings | None = None,
           noise_uk_arcmin: Sequence[float] | None = None, sources: PointSources | None = None,
           progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
           mask: np.ndarray | None = None) -> Table:
    """Find SZ cluster candidates in three-band maps with the multi-frequency matched filter.

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
        White-noise depth per band [uK-arcmin] for the noise model (default: the paper's 2.8, 2.6, 6.6).
    sources : PointSources
        Known point sources (map pixel positions, mJy per band); those above the flux cut are subtracted and
        candidates near them flagged.
    progress : callable(done, total)
        Called with the number of tiles done.
    cancel : callable() -> bool
        Polled between tiles and scales; True raises :class:`Cancelled`.
    mask : bool array (ny, nx)
        True marks pixels to exclude, in addition to NaNs.

    Returns
    -------
    astropy.table.Table
        See :mod:`szviewer.mf.catalog`; sorted by decreasing S/N, settings in ``meta``.
    """
    settings = settings or MFSettings()
    if len(maps.shape) != 3 or maps.shape[0] != settings.nband:
        raise ValueError(f"maps must be (nband={settings.nband}, ny, nx), got {maps.shape}")
    interior, margin, apod = tile_geometry(pixel_arcmin, settings)
    tiles = plan_tiles(maps.shape[1:], interior, margin)
    nz = _noise_tuple(settings, noise_uk_arcmin)
    total = len(tiles)
    if progress is not None:
        progress(0, total)
    parts: list[np.ndarray] = []
    found_parts: list[PointSources] = []
    owners: list[np.ndarray] = []
    for k, tile in enumerate(tiles):
        if cancel is not None and cancel():
            raise Cancelled("matched-filter run cancelled")
        data, bad = extract_tile(maps, tile, mask)
        tile_sources = _sources_near(sources, tile, settings, pixel_arcmin)
        cands, _, _, found = filter_tile(data, bad, pixel_arcmin, settings, nz, (tile.y0, tile.x0),
                                         tile_sources, apod, cancel)
        own = cands[_owned(tile, cands)]
        if found is not None and len(found):
            found_parts.append(found.select(tile.owns(found.y, found.x)))
        parts.append(own)
        owners.append(np.full(len(own), tile.index, dtype=np.int32))
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
    meta = {"pixel_arcmin": float(pixel_arcmin), "noise_uk_arcmin": list(nz), "n_tiles": total,
            "n_sources_found": int(sum(len(f) for f in found_parts)),
            "tile_shape": list(tiles[0].shape) if tiles else [], "map_shape": list(maps.shape[1:])}
    return build_catalog(cands, wcs, settings, tile_ids, flags, meta)


def _owned(tile: Tile, cands: np.ndarray) -> np.ndarray:
    """Ownership by the peak pixel, which (unlike the centroid) does not move when a group is clipped."""
    return tile.owns(cands["y_peak"].astype(float), cands["x_peak"].astype(float))


def _sources_near(sources: PointSources | None, tile: Tile, settings: MFSettings,
                  pixel_arcmin: float) -> PointSources | None:
    if sources is None or len(sources) == 0:
        return None
    pad = 6.0 * max(settings.beam_fwhm_arcmin) / pixel_arcmin + 2.0
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
