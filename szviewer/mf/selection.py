"""The selection function of a matched-filter run by injection: clusters of known profile added to the observed maps.

As nemo's source-injection runs do for ACT (Hilton et al. 2021, sec. 2.4; the ACT DR6 run took ~1,730 core-hours),
clusters of known central Compton y0 and core radius theta_c (projected beta model, the filter's own profile) and,
a fraction ``arnaud_frac`` of them, of known M500 and z (Arnaud et al. 2010 pressure profile through its
scaling relations, :mod:`szviewer.sky.pressure`) are added to the maps, noise included (the observed maps), the
filter is run again, and each injection is matched to the candidates within ``match_arcmin`` (1'). The maps are
never modified: injections are painted into in-memory copies of each filter tile.

How it is made fast (minutes per 100 deg^2, not core-hours):

* The filter is linear and its noise covariance is that of the observed maps (with the iterative data noise, the
  bright clusters are subtracted from the estimate anyway; injections add a few per deg^2), so each filter tile is
  filtered once, and each round of injections costs one forward FFT and one inverse FFT per filter scale: the
  injected Compton-y map, weighted pixel by pixel as the tile's maps are (apodisation times sqrt(relative hits)),
  goes through ``Z = sum_i u_i g_i Y`` (:class:`szviewer.mf.filter.MatchedFilterBank`; the weighting is smooth on
  a beam's scale, so it commutes with the beams to better than 1e-3) and its S/N maps are added to the tile's.
* Injections are placed on a grid of ``spacing_arcmin`` (90': beta = 1 clusters bias each other's y0 through the
  filter's large-scale modes, -6% at 60' and -1.3% at 90' for theta_c = 3', measured with the true noise), with a
  random offset per round; as many rounds as needed. They avoid the filtered profiles of real candidates (S/N >=
  ``avoid_snr`` in the observed maps), the detection mask and other sky tiles' areas. A real cluster next to an
  injection (closer than the groups above threshold reach) can still merge with it: confusion, as in a survey.
* Candidates are looked for only in a patch of ``patch_arcmin`` around each injection.

Each injection reports its injected parameters, ``snr_true`` (the noise-free S/N of the injected cluster at its
true position, best scale: what the filter reads on average; for beta clusters ~ y0 / sigma(theta_c)), and what
was recovered: S/N, core radius, position offset. :func:`szviewer.mf.selection_tables.selection_tables` bins
the recovered fraction against (y0, theta_c) (beta injections), (M500, z) (Arnaud injections) and snr_true, and
summarises the S/N ratio (recovered / true) and offsets.

This module runs the injections (:func:`run_injection`); what is injected and where (:class:`InjectionSettings`,
the parameters, the positions, the painted Compton-y maps) is :mod:`szviewer.mf.selection_plan`, the binned
recovered fractions :mod:`szviewer.mf.selection_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft
from astropy.table import Table

from szviewer.errors import Cancelled
from szviewer.mf.peaks import PeakFinder
from szviewer.mf.profiles import settings_spectral_beams
from szviewer.mf.selection_plan import InjectionSettings, draw_parameters, paint_y, plan_positions
from szviewer.mf.settings import MFSettings

#: filter results of the first pass kept in memory for the second (beyond it, tiles are filtered again)
CACHE_BYTES = 1.5 * 2**30


def _bilinear(img: np.ndarray, x: float, y: float) -> float:
    ny, nx = img.shape
    x0 = int(np.clip(math.floor(x), 0, nx - 2))
    y0 = int(np.clip(math.floor(y), 0, ny - 2))
    fx, fy = x - x0, y - y0
    return float((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x0 + 1])
                 + fy * ((1 - fx) * img[y0 + 1, x0] + fx * img[y0 + 1, x0 + 1]))


RESULT_COLUMNS = (("snr_true", "f8"), ("theta_c_true_arcmin", "f8"), ("snr", "f8"), ("theta_c_found_arcmin", "f8"),
                  ("y0_found", "f8"), ("offset_arcmin", "f8"), ("recovered", "?"), ("tile", "i4"))


def run_injection(maps, wcs, pixel_arcmin: float, settings: MFSettings, inj: InjectionSettings, n: int,
                  rng: np.random.Generator, noise_uk_arcmin: Sequence[float] | None = None, sources=None,
                  mask: np.ndarray | None = None, ivar=None,
                  owned: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> Table:
    """Inject ``n`` clusters into ``maps`` (as :func:`szviewer.mf.runner.run_mf` reads them; never modified) and
    return one row per injection (:data:`INJECTION_DTYPE` and :data:`RESULT_COLUMNS`, plus ra, dec with a
    ``wcs``). ``owned(x, y)`` limits the positions (e.g. to a sky tile's own area). Two passes over the filter
    tiles: the first finds the real candidates (to avoid) and the detection masks (to place injections), the
    second filters each tile once and then every round of injections in it."""
    from scipy.spatial import cKDTree

    from szviewer.mf.runner import _noise_tuple, _sources_near, filter_tile_result, tile_geometry
    from szviewer.mf.tiling import extract_tile, plan_tiles

    interior, margin, apod = tile_geometry(pixel_arcmin, settings)
    tiles = plan_tiles(maps.shape[1:], interior, margin)
    nz = _noise_tuple(settings, noise_uk_arcmin)
    total_steps = 2 * len(tiles)

    def tile_result(tile):
        data, bad = extract_tile(maps, tile, mask)
        ivar_tile = None
        if ivar is not None:
            ivar_tile, ivar_bad = extract_tile(ivar, tile, None)
            bad |= ivar_bad | ~(ivar_tile > 0).all(axis=0)
            data[:, bad] = 0.0
        res, _ = filter_tile_result(data, bad, pixel_arcmin, settings, nz, (tile.y0, tile.x0),
                                    _sources_near(sources, tile, settings, pixel_arcmin), apod, cancel, ivar_tile)
        return res

    # pass 1: real candidates and where injections may go; the tiles' filter results kept for pass 2 while they fit
    # in ``CACHE_BYTES`` (else filtered again)
    real, real_r, detects, faint = [], [], [], []
    cache: dict[int, object] = {}
    cached_bytes = 0
    fwhm = max(settings.beam_fwhm_equivalent())
    for k, tile in enumerate(tiles):
        if cancel is not None and cancel():
            raise Cancelled("injection run cancelled")
        res = tile_result(tile)
        c = res.candidates
        faint.append(np.c_[c["x"], c["y"]][c["snr"] >= settings.snr_threshold])  # every real candidate
        c = c[c["snr"] >= inj.avoid_snr]
        real.append(np.c_[c["x"], c["y"]])
        # its filtered profile, or its group above the S/N threshold where wider (groups that touch merge)
        group = np.sqrt(c["npix"] / np.pi) * pixel_arcmin
        real_r.append(inj.avoid_arcmin + np.maximum(inj.avoid_core_radii * c["theta_c_fit_arcmin"] + fwhm, group))
        detects.append(res.detect)
        size = _result_bytes(res)
        if cached_bytes + size <= CACHE_BYTES:
            cache[k] = res
            cached_bytes += size
        if progress is not None:
            progress(k + 1, total_steps)
    real_xy = np.concatenate(real) if real else np.zeros((0, 2))
    real_r = np.concatenate(real_r) if real_r else np.zeros(0)

    edge = inj.patch_arcmin / pixel_arcmin  # keep the candidate patch inside the tile's detection area

    def usable(x, y):
        ok = np.zeros(x.size, dtype=bool)
        for tile, det in zip(tiles, detects, strict=True):
            mine = tile.owns(y, x)
            if not mine.any():
                continue
            yi = np.floor(y[mine] + 0.5).astype(int) - tile.y0
            xi = np.floor(x[mine] + 0.5).astype(int) - tile.x0
            inside = (yi >= edge) & (yi < tile.ny - edge) & (xi >= edge) & (xi < tile.nx - edge)
            good = np.zeros(yi.size, dtype=bool)
            good[inside] = det[yi[inside], xi[inside]]
            ok[np.flatnonzero(mine)] = good
        if owned is not None and ok.any():
            ok[ok] = owned(x[ok], y[ok])
        return ok

    xs, ys, rounds = plan_positions(rng, n, maps.shape[1:], pixel_arcmin, usable, real_xy, inj, real_r)
    table = draw_parameters(rng, xs.size, inj, settings)
    table["x"], table["y"], table["round"] = xs, ys, rounds
    res_cols = {name: np.full(xs.size, np.nan if dt == "f8" else (False if dt == "?" else -1), dtype=dt)
                for name, dt in RESULT_COLUMNS}

    # pass 2: each tile filtered once, then every round of the injections it owns
    half = int(math.ceil(inj.patch_arcmin / pixel_arcmin))
    match_pix = inj.match_arcmin / pixel_arcmin
    tcs = np.asarray(settings.theta_c_arcmin)
    for k, tile in enumerate(tiles):
        if cancel is not None and cancel():
            raise Cancelled("injection run cancelled")
        mine = np.flatnonzero(tile.owns(table["y"], table["x"]))
        res = cache.pop(k, None)
        if mine.size:
            res = res if res is not None else tile_result(tile)
            _inject_tile(res, tile, table, mine, half, match_pix, tcs, settings, pixel_arcmin, res_cols, k,
                         cancel)
        if progress is not None:
            progress(len(tiles) + k + 1, total_steps)
    out = Table(table)
    for name, _ in RESULT_COLUMNS:
        out[name] = res_cols[name]
    if wcs is not None and len(out):
        from szviewer.mf.catalog import pixel_to_radec

        ra, dec = pixel_to_radec(wcs, np.asarray(out["x"]), np.asarray(out["y"]))
        out["ra"], out["dec"] = ra, dec
    # a real candidate (S/N >= the threshold) already within the match radius before anything was injected: the
    # injection can be "recovered" by it (confusion with faint real clusters, significant on deep skies)
    faint_xy = np.concatenate(faint) if faint else np.zeros((0, 2))
    out["pre_matched"] = np.zeros(len(out), bool)
    if len(faint_xy) and len(out):
        d, _ = cKDTree(faint_xy).query(np.c_[out["x"], out["y"]])
        out["pre_matched"] = d <= inj.match_arcmin / pixel_arcmin
    if len(real_xy):  # nearest real candidate, for the record (always > avoid_arcmin)
        d, _ = cKDTree(real_xy).query(np.c_[out["x"], out["y"]]) if len(out) else (np.zeros(0), None)
        out["real_dist_arcmin"] = d * pixel_arcmin
    out.meta.update({"pixel_arcmin": float(pixel_arcmin), "n_real_avoided": int(len(real_xy)),
                     "rounds": int(rounds.max() + 1) if rounds.size else 0, "snr_threshold": settings.snr_threshold})
    return out


def _inject_tile(res, tile, table, mine, half, match_pix, tcs, settings, pixel_arcmin, res_cols, k,
                 cancel) -> None:
    """All rounds of injections owned by one filter tile (``mine``: their rows): filter, find, match."""
    bank = res.bank
    shape = bank.shape
    g = settings_spectral_beams(shape, pixel_arcmin, settings)
    q = np.einsum("iyx,iyx->yx", bank.u, g).astype(np.complex64)  # Z = q Y for a Compton-y map Y
    wsh = res.weight if res.hits is None else res.weight * np.sqrt(res.hits)
    base = np.stack([m for _, m in res.snr_maps()])  # (nscale, ny, nx) S/N of the observed maps
    sigmas = [res.sigma_map(s) for s in range(bank.nscale)]
    sd = None
    if res.hits is not None and res.norm.shape[0] == bank.nscale:
        sd = [np.sqrt(np.float32(res.norm[s, 0]) + np.float32(res.norm[s, 1]) * res.hits) for s in range(bank.nscale)]
    tx, ty = table["x"] - tile.x0, table["y"] - tile.y0
    for r in np.unique(table["round"][mine]):
        if cancel is not None and cancel():
            raise Cancelled("injection run cancelled")
        own = mine[table["round"][mine] == r]
        beta = table["kind"][own] == "beta"
        if beta.any():  # y0 of beta clusters: the S/N asked for, times the filter's noise there
            for j in own[beta]:
                s_lo = int(np.clip(np.searchsorted(tcs, table["theta_c_arcmin"][j]) - 1, 0, len(tcs) - 1))
                s_hi = min(s_lo + 1, len(tcs) - 1)
                sig = [_sig_at(sigmas[s], tx[j], ty[j]) for s in (s_lo, s_hi)]
                t = 0.0 if s_hi == s_lo else float(np.clip(
                    np.log(table["theta_c_arcmin"][j] / tcs[s_lo]) / np.log(tcs[s_hi] / tcs[s_lo]), 0.0, 1.0))
                table["y0"][j] = table["snr_target"][j] * (sig[0] * (1 - t) + sig[1] * t)
        sel = own  # injections are >= spacing apart: those owned by other tiles do not reach these
        ymap = paint_y(shape, table[sel], tx[sel], ty[sel], pixel_arcmin, settings)
        z = q * scipy.fft.rfft2((ymap * wsh).astype(np.float32), workers=settings.fft_workers)
        patches, truths = [], np.zeros((own.size, bank.nscale))
        boxes = []
        for j in own:
            xc, yc = int(round(tx[j])), int(round(ty[j]))
            boxes.append((max(yc - half, 0), min(yc + half + 1, shape[0]), max(xc - half, 0),
                          min(xc + half + 1, shape[1])))
        for s in range(bank.nscale):
            inj_s = bank.snr_map(z, s)
            if sd is not None:
                inj_s /= sd[s]
            for i, (j, (y0, y1, x0, x1)) in enumerate(zip(own, boxes, strict=True)):
                truths[i, s] = _peak_value(inj_s, tx[j], ty[j])
                if s == 0:
                    patches.append(np.empty((bank.nscale, y1 - y0, x1 - x0), dtype=np.float32))
                patches[i][s] = base[s, y0:y1, x0:x1] + inj_s[y0:y1, x0:x1]
        for i, (j, (y0, y1, x0, x1)) in enumerate(zip(own, boxes, strict=True)):
            best = int(np.argmax(truths[i]))
            res_cols["snr_true"][j] = truths[i, best]
            res_cols["theta_c_true_arcmin"][j] = tcs[best]
            res_cols["tile"][j] = k
            finder = PeakFinder(patches[i].shape[1:], settings.snr_threshold, settings.theta_c_arcmin,
                                res.detect[y0:y1, x0:x1], settings.centroid_core_frac, settings.position,
                                (bank.curv_x, bank.curv_y))
            for s in range(bank.nscale):
                sg = sigmas[s] if np.ndim(sigmas[s]) == 0 else sigmas[s][y0:y1, x0:x1]
                finder.add(s, patches[i][s], sg)
            cands = finder.candidates()
            if not len(cands):
                continue
            d = np.hypot(cands["x"] + x0 - tx[j], cands["y"] + y0 - ty[j])
            near_c = np.flatnonzero(d <= match_pix)
            if not near_c.size:
                continue
            c = near_c[int(np.argmax(cands["snr"][near_c]))]
            res_cols["snr"][j] = cands["snr"][c]
            res_cols["theta_c_found_arcmin"][j] = cands["theta_c_fit_arcmin"][c]
            res_cols["y0_found"][j] = cands["y0"][c]
            res_cols["offset_arcmin"][j] = d[c] * pixel_arcmin
            res_cols["recovered"][j] = True


def _result_bytes(res) -> int:
    b = res.bank
    return int(sum(a.nbytes for a in (b.u, b.h, res.maps_w, res.weight, res.detect)
                   + ((res.hits,) if res.hits is not None else ())))


def _peak_value(img: np.ndarray, x: float, y: float) -> float:
    """The noise-free S/N of an injection at its true position: the vertex value of the quadratic through the 3 x 3
    pixels around it (as the peak finder reads a peak; bilinear interpolation would read a peak ~2% low)."""
    from szviewer.mf.peaks import quadratic_vertex

    ny, nx = img.shape
    xc = int(np.clip(round(x), 1, nx - 2))
    yc = int(np.clip(round(y), 1, ny - 2))
    _, _, v = quadratic_vertex(img[None, yc - 1:yc + 2, xc - 1:xc + 2].astype(np.float64))
    return float(max(v[0], img[yc, xc]))


def _sig_at(sigma, x: float, y: float) -> float:
    return float(sigma) if np.ndim(sigma) == 0 else _bilinear(sigma, x, y)


__all__ = ["RESULT_COLUMNS", "run_injection"]
