"""Injection maps with known truth, and the ideal matched filter they are judged against.

Two uses:

* Correctness tests and benchmarks (:func:`make_test_sky`): flat maps of lensed CMB (beamed), the instrument
  noise of :mod:`szviewer.sky.noise_maps` (white, atmospheric 1/f, inhomogeneous depth: the project's own noise
  code, as a synthetic sky gets it) and beta-model clusters integrated over their pixels in real space and
  beamed, independently of the filter's Fourier templates; with the *ideal* S/N of every cluster
  (:func:`ideal_sigma`): the analytic matched filter with the TRUE noise power at the cluster's depth and the
  cluster's true template (the FFT of the painted cluster itself), computed here without the filter code.
* The selection function of a run (:func:`injection_plan`, :func:`paint_injections`): beta-model clusters of
  known y0 and theta_c, and Arnaud et al. (2010) profiles of known M500 and z, added to the observed maps
  (noise included) before the run is repeated, as nemo's source-injection runs do for ACT (Hilton et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from szviewer.sky.bands import tsz_uk_per_y
from szviewer.sky.spectra import ARCMIN_RAD, cmb_lensed_dl, dl_to_cl, ell_grid

SUBSAMPLE = 5


def _paint_real(shape: tuple[int, int], pixel_arcmin: float, x, y, y0, scale_arcmin, reach: float, profile,
                subsample: int) -> np.ndarray:
    """Compton-y map (ny, nx) float64 of round clusters at pixel positions (x column, y row; not periodic) with
    central y ``y0``, each integrated over every pixel (``subsample``^2 points). ``profile(dy, dx, k)`` gives the
    unit-peak profile at offsets dy (column vector), dx (row vector) [pixel] with ``k`` = pixel / scale; a cluster
    reaches ``reach`` scales from its centre."""
    ny, nx = shape
    out = np.zeros(shape)
    sub = (np.arange(subsample) + 0.5) / subsample - 0.5
    for xc, yc, amp, sc in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(y0), np.atleast_1d(scale_arcmin),
                               strict=True):
        r = reach * sc / pixel_arcmin + 1.5
        ya, yb = max(int(math.floor(yc - r)), 0), min(int(math.ceil(yc + r)) + 1, ny)
        xa, xb = max(int(math.floor(xc - r)), 0), min(int(math.ceil(xc + r)) + 1, nx)
        if ya >= yb or xa >= xb:
            continue
        py = (np.arange(ya, yb)[:, None] + sub[None, :]).ravel()  # (npy * ss)
        px = (np.arange(xa, xb)[:, None] + sub[None, :]).ravel()
        prof = profile(py[:, None] - yc, px[None, :] - xc, pixel_arcmin / sc)
        prof = prof.reshape(yb - ya, subsample, xb - xa, subsample).mean(axis=(1, 3))
        out[ya:yb, xa:xb] += amp * prof
    return out


def paint_beta_real(shape: tuple[int, int], pixel_arcmin: float, x, y, y0, theta_c_arcmin, beta: float = 1.0,
                    truncate: float = 5.0, subsample: int = SUBSAMPLE) -> np.ndarray:
    """Compton-y map (ny, nx) float64 of projected beta-model clusters integrated over each pixel (``subsample``^2
    points per pixel), truncated at ``truncate`` core radii; positions in pixels (x column, y row), not periodic."""
    def beta_model(dy, dx, k):
        t2 = (dy ** 2 + dx ** 2) * k ** 2
        return np.where(t2 <= truncate**2, (1.0 + t2) ** ((1.0 - 3.0 * beta) / 2.0), 0.0)

    return _paint_real(shape, pixel_arcmin, x, y, y0, theta_c_arcmin, truncate, beta_model, subsample)


def beam_transfers(beams, shape: tuple[int, int], pixel_arcmin: float) -> np.ndarray:
    """B_ell of each beam (:class:`szviewer.sky.beams.Beam`) on the rfft2 grid, (nband, ny, nx//2+1)."""
    ell = ell_grid(shape[0], shape[1], pixel_arcmin)
    return np.stack([b(ell) for b in beams])


@dataclass
class TestSky:
    """Maps with known truth: ``maps`` (nband, ny, nx) float32 uK, ``ivar`` (nband, ny, nx) or None, ``hits``
    (ny, nx) or None, ``truth`` (dict of arrays: x, y [pixel], y0, theta_c_arcmin, snr_ideal, hits), the
    instrument and the pixel size."""

    maps: np.ndarray
    ivar: np.ndarray | None
    hits: np.ndarray | None
    truth: dict
    instrument: object
    pixel_arcmin: float


def true_power(instrument, shape: tuple[int, int], pixel_arcmin: float, hits: float = 1.0,
               cmb: bool = True) -> np.ndarray:
    """The TRUE noise covariance of a test sky at relative hits ``hits``, (nb, nb, ny, nx//2+1) uK^2 per pixel:
    the instrument's own noise power (white + 1/f, correlated, anisotropic; ``Instrument.noise_power``) / hits
    plus the beamed lensed CMB, fully correlated between bands."""
    p = instrument.noise_power(shape, pixel_arcmin) / hits
    if cmb:
        ell = ell_grid(shape[0], shape[1], pixel_arcmin)
        cl = dl_to_cl(ell, cmb_lensed_dl(ell)) / (pixel_arcmin * ARCMIN_RAD) ** 2
        b = beam_transfers([band.beam for band in instrument.bands], shape, pixel_arcmin)
        p = p + cl[None, None] * b[:, None] * b[None, :]
    return p


def paint_arnaud_real(shape: tuple[int, int], pixel_arcmin: float, x, y, y0, theta500_arcmin,
                      truncate_r500: float = 5.0, subsample: int = SUBSAMPLE) -> np.ndarray:
    """Compton-y map (ny, nx) float64 of Arnaud et al. (2010) clusters (projected GNFW, central y ``y0``, angular R500
    ``theta500_arcmin``, truncated at ``truncate_r500`` R500) integrated over each pixel (``subsample``^2 points);
    positions in pixels (x column, y row), not periodic."""
    from szviewer.sky import pressure

    x_tab, i_tab = pressure.projected_table(pressure.ArnaudProfile(truncate_r500=truncate_r500))

    def arnaud(dy, dx, k):
        return np.interp(np.hypot(dy, dx) * k, x_tab, i_tab / i_tab[0], right=0.0)

    return _paint_real(shape, pixel_arcmin, x, y, y0, theta500_arcmin, truncate_r500, arnaud, subsample)


def ideal_sigma_of(instrument, pixel_arcmin: float, profile: np.ndarray, hits: float = 1.0,
                   cmb: bool = True) -> float:
    """Noise of the ideal y0 estimate [Compton y] of a cluster whose unit-y0 map ``profile`` (a periodic square
    grid, cluster anywhere) is given: the analytic multi-frequency matched filter with the TRUE noise power
    (:func:`true_power`) and that very template, beamed, times the tSZ spectrum (Melin et al. 2006)."""
    grid = profile.shape[0]
    shape = profile.shape
    pk = scipy.fft.rfft2(profile)
    b = beam_transfers([band.beam for band in instrument.bands], shape, pixel_arcmin)
    f = np.array([float(tsz_uk_per_y(band.freq_ghz)) for band in instrument.bands])
    tau = f[:, None, None] * b * pk[None]
    p = true_power(instrument, shape, pixel_arcmin, hits, cmb)
    sol = np.linalg.solve(np.moveaxis(p, (0, 1), (-2, -1)), np.moveaxis(tau, 0, -1)[..., None])[..., 0]
    val = np.real(np.sum(np.conj(np.moveaxis(tau, 0, -1)) * sol, axis=-1))
    w = np.full(shape[1] // 2 + 1, 2.0)
    w[0] = 1.0
    if shape[1] % 2 == 0:
        w[-1] = 1.0
    val[0, 0] = 0.0
    return float(1.0 / math.sqrt(np.sum(val * w[None, :]) / (grid * shape[1])))


def ideal_sigma(instrument, pixel_arcmin: float, theta_c_arcmin: float, hits: float = 1.0, cmb: bool = True,
                grid: int = 1024, beta: float = 1.0, truncate: float = 5.0) -> float:
    """Noise of the ideal y0 estimate of a cluster of core radius ``theta_c_arcmin`` [Compton y]: the analytic
    multi-frequency matched filter ``sigma^-2 = (1/N) sum_k tau^H P^-1 tau`` (Melin et al. 2006) with the TRUE
    noise power :func:`true_power` at relative hits ``hits`` and the true template (the FFT of the pixel-integrated
    cluster, beamed, times the tSZ spectrum at each band's effective frequency), on a periodic ``grid`` x ``grid``
    map (DC mode excluded). Written without the filter code, so it can judge it."""
    shape = (grid, grid)
    prof = paint_beta_real(shape, pixel_arcmin, [grid / 2], [grid / 2], [1.0], [theta_c_arcmin], beta, truncate)
    pk = scipy.fft.rfft2(prof)
    b = beam_transfers([band.beam for band in instrument.bands], shape, pixel_arcmin)
    f = np.array([float(tsz_uk_per_y(band.freq_ghz)) for band in instrument.bands])
    tau = f[:, None, None] * b * pk[None]  # (nb, ny, nxh) complex
    p = true_power(instrument, shape, pixel_arcmin, hits, cmb)
    a = np.moveaxis(p, (0, 1), (-2, -1))
    t = np.moveaxis(tau, 0, -1)[..., None]
    sol = np.linalg.solve(a, t)[..., 0]
    val = np.real(np.sum(np.conj(np.moveaxis(tau, 0, -1)) * sol, axis=-1))
    w = np.full(grid // 2 + 1, 2.0)
    w[0] = 1.0
    w[-1] = 1.0
    val[0, 0] = 0.0
    return float(1.0 / math.sqrt(np.sum(val * w[None, :]) / (grid * grid)))


def make_test_sky(instrument, shape: tuple[int, int], seed: int, n_clusters: int = 25,
                  snr_range: tuple[float, float] = (6.0, 35.0), theta_c_range: tuple[float, float] = (0.5, 3.0),
                  hits: np.ndarray | None = None, cmb: bool = True, spacing_arcmin: float | None = None,
                  edge_arcmin: float = 20.0, sigma_cache: dict | None = None) -> TestSky:
    """A test sky through ``instrument`` (:class:`szviewer.sky.instruments.Instrument`): CMB + the instrument's
    noise (one realisation from :func:`szviewer.sky.noise_maps.realise_noise`, scaled by 1/sqrt(hits)) +
    ``n_clusters`` beta-model clusters on a jittered grid (step ``spacing_arcmin``, or spread over the map; no
    two closer than 0.8 steps, none within ``edge_arcmin`` of the edge; beta = 1 clusters truncated at 5 theta_c
    bias each other's y0 through the filter's large-scale modes: -6% at 60', -1.3% at 90' for theta_c = 3',
    measured with the true noise, so tests against the isolated-cluster ideal keep them ~90' apart), theta_c
    uniform in ``theta_c_range`` and y0 set so that the ideal S/N
    (at the cluster's own depth) is log-uniform in ``snr_range`` (tSZ decrements, as real clusters).
    ``sigma_cache`` (a dict filled here) speeds up repeated skies."""
    from szviewer.sky.noise_maps import ivar_map, realise_noise

    rng = np.random.default_rng(seed)
    pix = float(instrument.pixel_arcmin)
    ny, nx = shape
    # cluster positions: a jittered grid over the interior
    edge = edge_arcmin / pix
    if spacing_arcmin is None:
        side = int(math.ceil(math.sqrt(n_clusters)))
        gy = np.linspace(edge, ny - 1 - edge, side)
        gx = np.linspace(edge, nx - 1 - edge, side)
    else:  # a grid of this step from the corner, as far as the map reaches
        gy = np.arange(edge, ny - edge, spacing_arcmin / pix)
        gx = np.arange(edge, nx - edge, spacing_arcmin / pix)
    step = min(gy[1] - gy[0] if len(gy) > 1 else ny, gx[1] - gx[0] if len(gx) > 1 else nx)
    cells = [(a, b) for a in gy for b in gx]
    if n_clusters > len(cells):
        raise ValueError(f"{n_clusters} clusters do not fit {len(cells)} grid cells")
    pick = rng.choice(len(cells), n_clusters, replace=False)
    jit = 0.1 * step
    ys = np.array([cells[i][0] for i in pick]) + rng.uniform(-jit, jit, n_clusters)
    xs = np.array([cells[i][1] for i in pick]) + rng.uniform(-jit, jit, n_clusters)
    tcs = rng.uniform(*theta_c_range, n_clusters)
    target = np.exp(rng.uniform(math.log(snr_range[0]), math.log(snr_range[1]), n_clusters))
    h_at = np.ones(n_clusters) if hits is None else hits[np.round(ys).astype(int), np.round(xs).astype(int)]
    cache = {} if sigma_cache is None else sigma_cache
    sig = np.empty(n_clusters)
    for k in range(n_clusters):
        key = (instrument.name, round(float(tcs[k]), 2), round(float(h_at[k]), 3), cmb)
        if key not in cache:
            cache[key] = ideal_sigma(instrument, pix, round(float(tcs[k]), 2), float(round(h_at[k], 3)), cmb)
        sig[k] = cache[key]
    tcs = np.round(tcs, 2)
    h_at = np.round(h_at, 3) if hits is not None else h_at
    y0 = target * sig
    ymap = paint_beta_real(shape, pix, xs, ys, y0, tcs)
    noise = realise_noise(instrument, shape, pix, rng, hits)
    maps = noise
    # sky: CMB (same in every band) + clusters (tSZ spectrum), beamed per band, in one Fourier step per band
    cmb_k = 0.0
    if cmb:
        ell = ell_grid(ny, nx, pix)
        amp = np.sqrt(dl_to_cl(ell, cmb_lensed_dl(ell))) / (pix * ARCMIN_RAD)
        cmb_k = scipy.fft.rfft2(rng.standard_normal(shape)) * amp
    yk = scipy.fft.rfft2(ymap)
    b = beam_transfers([band.beam for band in instrument.bands], shape, pix)
    for i, band in enumerate(instrument.bands):
        sky = scipy.fft.irfft2((cmb_k + float(tsz_uk_per_y(band.freq_ghz)) * yk) * b[i], s=shape)
        maps[i] += sky.astype(np.float32)
    ivar = None if hits is None else ivar_map(instrument, hits, pix)
    truth = {"x": xs, "y": ys, "y0": y0, "theta_c_arcmin": tcs, "snr_ideal": y0 / sig, "hits": h_at,
             "sigma_ideal": sig}
    return TestSky(maps.astype(np.float32), ivar, hits, truth, instrument, pix)


def match_truth(cat_x, cat_y, cat_snr, truth: dict, pixel_arcmin: float,
                radius_arcmin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """For each true cluster, the row of the highest-S/N detection within ``radius_arcmin`` (-1 if none) and
    its distance [arcmin] (NaN if none)."""
    from scipy.spatial import cKDTree

    n = len(truth["x"])
    row = np.full(n, -1, dtype=int)
    dist = np.full(n, np.nan)
    if len(cat_x) == 0:
        return row, dist
    tree = cKDTree(np.c_[cat_x, cat_y])
    for k, hits in enumerate(tree.query_ball_point(np.c_[truth["x"], truth["y"]], radius_arcmin / pixel_arcmin)):
        if hits:
            j = hits[int(np.argmax(np.asarray(cat_snr)[hits]))]
            row[k] = j
            dist[k] = math.hypot(cat_x[j] - truth["x"][k], cat_y[j] - truth["y"][k]) * pixel_arcmin
    return row, dist
