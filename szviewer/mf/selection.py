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
was recovered: S/N, core radius, position offset. :func:`selection_tables` bins the recovered fraction against
(y0, theta_c) (beta injections), (M500, z) (Arnaud injections) and snr_true, and summarises the S/N ratio
(recovered / true) and offsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft
from astropy.table import Table

from szviewer.errors import Cancelled
from szviewer.mf.peaks import PeakFinder
from szviewer.mf.profiles import beta_profile, settings_spectral_beams
from szviewer.mf.settings import MFSettings

#: recovered-fraction bins: snr_true edges, and numbers of bins in log y0, theta_c, log M500, z
SNR_TRUE_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0, 1e9)
N_Y0_BINS, N_THETA_BINS, N_M_BINS, N_Z_BINS = 8, 6, 6, 5
#: filter results of the first pass kept in memory for the second (beyond it, tiles are filtered again)
CACHE_BYTES = 1.5 * 2**30


@dataclass(frozen=True)
class InjectionSettings:
    """An injection run: ``n`` clusters with seed ``seed``; a fraction ``arnaud_frac`` Arnaud profiles
    (M500 log-uniform in ``m500_range_msun``, z uniform in ``z_range``), the rest beta models (theta_c uniform in
    ``theta_c_range_arcmin``, default the filter's range; y0 = S/N x sigma(theta_c) with the S/N log-uniform in
    ``snr_range``). Placement: ``spacing_arcmin`` apart, and outside ``avoid_arcmin`` + max(``avoid_core_radii``
    theta_c + the widest beam's FWHM, the radius of its group above threshold) of every real candidate of S/N >=
    ``avoid_snr`` (its filtered profile, and where groups would merge: a deep
    survey holds tens of real clusters per deg^2 (spt3g-paper depths, synthetic sky: 38 per deg^2 at S/N >= 5), so
    a fixed wide radius would leave no room); matching within ``match_arcmin``; candidates searched in
    ``patch_arcmin`` around each."""

    n: int = 1000
    seed: int = 0
    arnaud_frac: float = 0.3
    spacing_arcmin: float = 90.0
    avoid_arcmin: float = 2.0
    avoid_core_radii: float = 4.0
    avoid_snr: float = 5.0
    snr_range: tuple[float, float] = (1.5, 40.0)
    theta_c_range_arcmin: tuple[float, float] | None = None
    m500_range_msun: tuple[float, float] = (1e14, 1.2e15)
    z_range: tuple[float, float] = (0.1, 1.5)
    match_arcmin: float = 1.0
    patch_arcmin: float = 12.0

    def __post_init__(self) -> None:
        for name in ("snr_range", "m500_range_msun", "z_range", "theta_c_range_arcmin"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        if self.n < 1:
            raise ValueError("inject at least one cluster")
        if not 0.0 <= self.arnaud_frac <= 1.0:
            raise ValueError("arnaud_frac must lie in [0, 1]")
        if self.spacing_arcmin <= 2 * self.match_arcmin or self.patch_arcmin <= self.match_arcmin:
            raise ValueError("need spacing_arcmin > 2 match_arcmin and patch_arcmin > match_arcmin")
        for name in ("snr_range", "m500_range_msun", "z_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


INJECTION_DTYPE = np.dtype([
    ("x", "f8"), ("y", "f8"),                 # position in the map [pixel] (column, row)
    ("round", "i4"), ("kind", "U6"),          # injection round; 'beta' or 'arnaud'
    ("y0", "f8"),                             # central Compton y injected
    ("theta_c_arcmin", "f8"),                 # beta core radius (NaN for Arnaud)
    ("m500_msun", "f8"), ("z", "f8"),         # Arnaud mass and redshift (NaN for beta)
    ("theta500_arcmin", "f8"),                # Arnaud angular R500 (NaN for beta)
    ("snr_target", "f8"),                     # beta: the S/N asked for (y0 = snr_target x sigma)
])


def _r500_mpc(m500_msun: np.ndarray, z: np.ndarray) -> np.ndarray:
    """R500 [Mpc] of M500 [Msun] at z: M500 = (4 pi / 3) 500 rho_c(z) R500^3."""
    from astropy import units as u

    from szviewer.sky.cosmology import astropy_cosmology

    rho = astropy_cosmology().critical_density(np.asarray(z, dtype=float)).to_value(u.Msun / u.Mpc**3)
    return (3.0 * np.asarray(m500_msun, dtype=float) / (4.0 * np.pi * 500.0 * rho)) ** (1.0 / 3.0)


def arnaud_parameters(m500_msun, z) -> tuple[np.ndarray, np.ndarray]:
    """(central y0, theta500 [arcmin]) of Arnaud et al. 2010 clusters (no scatter), truncated at 5 R500."""
    from szviewer.sky import pressure

    m500 = np.asarray(m500_msun, dtype=float)
    z = np.asarray(z, dtype=float)
    r500 = _r500_mpc(m500, z)
    _, i_tab = pressure.projected_table(pressure.ArnaudProfile())
    return pressure.y_central_scale(m500, r500, z) * i_tab[0], pressure.theta500_arcmin(r500, z)


def draw_parameters(rng: np.random.Generator, n: int, inj: InjectionSettings,
                    settings: MFSettings) -> np.ndarray:
    """Kinds and parameters of ``n`` injections (positions and rounds left 0; y0 of beta clusters set later from
    the filter's noise at their position)."""
    out = np.zeros(n, dtype=INJECTION_DTYPE)
    arn = rng.random(n) < inj.arnaud_frac
    out["kind"] = np.where(arn, "arnaud", "beta")
    lo, hi = inj.theta_c_range_arcmin or (min(settings.theta_c_arcmin), max(settings.theta_c_arcmin))
    out["theta_c_arcmin"] = np.where(arn, np.nan, rng.uniform(lo, hi, n))
    out["snr_target"] = np.where(arn, np.nan, np.exp(rng.uniform(*np.log(inj.snr_range), n)))
    m = np.exp(rng.uniform(*np.log(inj.m500_range_msun), n))
    z = rng.uniform(*inj.z_range, n)
    out["m500_msun"] = np.where(arn, m, np.nan)
    out["z"] = np.where(arn, z, np.nan)
    out["y0"] = np.nan
    out["theta500_arcmin"] = np.nan
    if arn.any():
        y0, th = arnaud_parameters(m[arn], z[arn])
        out["y0"][arn] = y0
        out["theta500_arcmin"][arn] = th
    return out


def plan_positions(rng: np.random.Generator, n: int, map_shape: tuple[int, int], pixel_arcmin: float,
                   usable: Callable[[np.ndarray, np.ndarray], np.ndarray], avoid_xy: np.ndarray,
                   inj: InjectionSettings, avoid_radius_arcmin: np.ndarray | None = None,
                   max_empty_rounds: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, round) of ``n`` injection positions [map pixels]: per round a square grid of ``spacing_arcmin`` with a
    random offset, keeping the points where ``usable(x, y)`` and outside ``avoid_radius_arcmin`` (default
    ``avoid_arcmin``) of every ``avoid_xy`` (k, 2) point; rounds until ``n`` (the last round's points at random)."""
    from scipy.spatial import cKDTree

    ny, nx = map_shape
    step = inj.spacing_arcmin / pixel_arcmin
    avoid_xy = np.asarray(avoid_xy, dtype=float).reshape(-1, 2)
    radius = (np.full(len(avoid_xy), inj.avoid_arcmin) if avoid_radius_arcmin is None
              else np.asarray(avoid_radius_arcmin, dtype=float)) / pixel_arcmin
    tree = cKDTree(avoid_xy) if len(avoid_xy) else None
    rmax = float(radius.max()) if len(radius) else 0.0
    xs, ys, rs = [], [], []
    total, r, empty = 0, 0, 0
    while total < n:
        ox, oy = rng.uniform(0.0, step, 2)
        gy, gx = np.meshgrid(np.arange(oy, ny, step), np.arange(ox, nx, step), indexing="ij")
        gx, gy = gx.ravel(), gy.ravel()
        keep = usable(gx, gy)
        if tree is not None and keep.any():
            for i, hits in enumerate(tree.query_ball_point(np.c_[gx, gy], rmax)):
                if hits and keep[i]:
                    h = np.asarray(hits)
                    keep[i] = bool(np.all(np.hypot(*(avoid_xy[h] - (gx[i], gy[i])).T) > radius[h]))
        gx, gy = gx[keep], gy[keep]
        if not gx.size:
            empty += 1
            if empty >= max_empty_rounds:
                break
            continue
        if total + gx.size > n:
            pick = np.sort(rng.choice(gx.size, n - total, replace=False))
            gx, gy = gx[pick], gy[pick]
        xs.append(gx)
        ys.append(gy)
        rs.append(np.full(gx.size, r, dtype=np.int32))
        total += gx.size
        r += 1
    if not xs:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int32)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(rs)


def paint_y(shape: tuple[int, int], inj: np.ndarray, x: np.ndarray, y: np.ndarray, pixel_arcmin: float,
            settings: MFSettings) -> np.ndarray:
    """Compton-y map (ny, nx) float64 of injections at tile pixel positions (x, y): beta models truncated at the
    filter's ``truncate_theta_c`` core radii, Arnaud profiles at 5 R500, sampled at pixel centres (as the filter's
    templates are)."""
    from szviewer.sky import painting, pressure

    out = np.zeros(shape)
    beta = inj["kind"] == "beta"
    if beta.any():
        t = np.linspace(0.0, settings.truncate_theta_c, 2001)
        tab = beta_profile(t, 1.0, settings.beta, settings.truncate_theta_c + 1e-9)
        sc = inj["theta_c_arcmin"][beta] / pixel_arcmin
        out += painting.paint_radial(shape, x[beta], y[beta], settings.truncate_theta_c * sc, t, tab, sc,
                                     [inj["y0"][beta]])[0]
    arn = ~beta
    if arn.any():
        x_tab, i_tab = pressure.projected_table(pressure.ArnaudProfile())
        sc = inj["theta500_arcmin"][arn] / pixel_arcmin
        out += painting.paint_radial(shape, x[arn], y[arn], 5.0 * sc, x_tab, i_tab / i_tab[0], sc,
                                     [inj["y0"][arn]])[0]
    return out


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


def _binned(values_x, values_y, rec, edges_x, edges_y) -> list[dict]:
    rows = []
    for a in range(len(edges_x) - 1):
        for b in range(len(edges_y) - 1):
            m = ((values_x >= edges_x[a]) & (values_x < edges_x[a + 1]) & (values_y >= edges_y[b])
                 & (values_y < edges_y[b + 1]))
            n = int(m.sum())
            k = int(rec[m].sum())
            rows.append({"x_lo": float(edges_x[a]), "x_hi": float(edges_x[a + 1]), "y_lo": float(edges_y[b]),
                         "y_hi": float(edges_y[b + 1]), "n_injected": n, "n_recovered": k,
                         "fraction": (k / n) if n else float("nan")})
    return rows


def _edges(v: np.ndarray, nbin: int, log: bool) -> np.ndarray:
    v = v[np.isfinite(v)]
    if not v.size:
        return np.array([0.0, 1.0])
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo * 1.001 + 1e-12
    e = np.geomspace(lo, hi, nbin + 1) if log and lo > 0 else np.linspace(lo, hi, nbin + 1)
    e[-1] = np.nextafter(e[-1], np.inf)
    return e


def selection_tables(table: Table, snr_cut: float) -> tuple[dict[str, Table], dict]:
    """Recovered fraction (recovered within the match radius at S/N >= ``snr_cut``) binned against (y0, theta_c)
    of the beta injections, (M500, z) of the Arnaud ones, and snr_true of all; and a summary: counts, the S/N ratio
    (recovered / true) and offset distributions of the recovered clusters with snr_true >= 5."""
    rec = np.asarray(table["recovered"], bool) & (np.nan_to_num(np.asarray(table["snr"], float)) >= snr_cut)
    kind = np.asarray(table["kind"])
    beta, arn = kind == "beta", kind == "arnaud"
    y0 = np.asarray(table["y0"], float)
    tc = np.asarray(table["theta_c_arcmin"], float)
    m = np.asarray(table["m500_msun"], float)
    z = np.asarray(table["z"], float)
    st = np.asarray(table["snr_true"], float)
    out = {}
    t = Table(rows=_binned(y0[beta], tc[beta], rec[beta], _edges(y0[beta], N_Y0_BINS, True),
                           _edges(tc[beta], N_THETA_BINS, False))) if beta.any() else Table()
    if len(t):
        t.rename_columns(["x_lo", "x_hi", "y_lo", "y_hi"], ["y0_lo", "y0_hi", "theta_c_lo_arcmin", "theta_c_hi_arcmin"])
    out["y0_theta_c"] = t
    t = Table(rows=_binned(m[arn], z[arn], rec[arn], _edges(m[arn], N_M_BINS, True),
                           _edges(z[arn], N_Z_BINS, False))) if arn.any() else Table()
    if len(t):
        t.rename_columns(["x_lo", "x_hi", "y_lo", "y_hi"], ["m500_lo_msun", "m500_hi_msun", "z_lo", "z_hi"])
    out["m500_z"] = t
    rows = []
    for a in range(len(SNR_TRUE_EDGES) - 1):
        sel = (st >= SNR_TRUE_EDGES[a]) & (st < SNR_TRUE_EDGES[a + 1])
        n = int(sel.sum())
        rows.append({"snr_true_lo": SNR_TRUE_EDGES[a], "snr_true_hi": SNR_TRUE_EDGES[a + 1], "n_injected": n,
                     "n_recovered": int(rec[sel].sum()), "fraction": float(rec[sel].mean()) if n else float("nan")})
    out["snr_true"] = Table(rows=rows)
    near_real = np.asarray(table["real_dist_arcmin"], float) if "real_dist_arcmin" in table.colnames else None
    good = rec & (st >= 5.0)
    ratio = np.asarray(table["snr"], float)[good] / st[good]
    off = np.asarray(table["offset_arcmin"], float)[good]

    def q(v, p):
        return None if not v.size else round(float(np.percentile(v, p)), 4)

    summary = {
        "n_injected": len(table), "n_beta": int(beta.sum()), "n_arnaud": int(arn.sum()),
        "n_recovered": int(rec.sum()), "snr_cut": float(snr_cut),
        "completeness_snr_true_ge_5": None if not (st >= 5).any() else round(float(rec[st >= 5].mean()), 4),
        "completeness_snr_true_ge_7": None if not (st >= 7).any() else round(float(rec[st >= 7].mean()), 4),
        # lost although bright, within 30' of a real candidate: blending (the finder merges touching groups)
        "n_lost_bright_near_real": None if near_real is None else int(np.sum(~rec & (st >= 7) & (near_real < 30))),
        "n_lost_bright": int(np.sum(~rec & (st >= 7))),
        # the chance that a real candidate sits within the match radius of an injection before injecting: the
        # floor of the recovered fraction at low noise-free S/N (confusion with faint real clusters)
        "chance_match_fraction": None if "pre_matched" not in table.colnames or not len(table)
        else round(float(np.mean(np.asarray(table["pre_matched"], bool))), 4),
        "snr_ratio_median": q(ratio, 50), "snr_ratio_p16": q(ratio, 16), "snr_ratio_p84": q(ratio, 84),
        "offset_median_arcmin": q(off, 50), "offset_p90_arcmin": q(off, 90), "offset_max_arcmin": q(off, 100),
        "snr_ratio_hist": np.histogram(ratio, bins=np.linspace(0.5, 1.5, 21))[0].tolist(),
        "snr_ratio_hist_edges": [round(float(v), 3) for v in np.linspace(0.5, 1.5, 21)],
        "offset_hist": np.histogram(off, bins=np.linspace(0.0, 1.0, 11))[0].tolist(),
        "offset_hist_edges_arcmin": [round(float(v), 2) for v in np.linspace(0.0, 1.0, 11)],
    }
    return out, summary


__all__ = ["INJECTION_DTYPE", "InjectionSettings", "arnaud_parameters", "draw_parameters", "paint_y",
           "plan_positions", "run_injection", "selection_tables"]

