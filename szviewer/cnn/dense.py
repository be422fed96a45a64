"""Dense CNN scoring: overlapping cutouts on a fine grid, a probability map, and CNN candidates by peak finding.

The paper found that the CNN misses clusters near the edge of a cutout's central cell (section 3.4.2, Fig. 9c)
and suggested overlapping cutouts so that each cluster is near the centre of at least one (SCIENCE.md section 4).
Two ways to score every 32 x 32 window of a map whose origin lies on a grid:

- :func:`score_tile_fcn` (the default of ``dense_job``): the network applied fully convolutionally, once per
  map (:mod:`szviewer.cnn.fcn`), on a 1' grid by default; each window's convolutions see the map around it;
- :func:`score_tile` (the reference): each window scored on its own by the cutout scorer
  (:class:`szviewer.cnn.predict.Scorer`), zero-padded at its border as in training, on a ``stride_pix`` grid
  (8 pixels = 2' at the paper's 0.25' pixels).

Peaks of the probability map (local maxima within +-:data:`PEAK_RADIUS_ARCMIN` above ``threshold``) are CNN
candidates, placed at the centre of their probability plateau (:func:`subpixel_peaks`) with a position error
(:func:`position_error_arcmin`), so the CNN yields a positioned catalogue as the matched filter does. A cutout
of the DeepSZ grid can then take the largest dense probability among the windows centred inside its central
6' x 6' cell (:func:`cell_max`).

The input map of a tile is its observed map (the sky plus the instrument's one noise realisation), or for a
component level the level's components plus the same noise: the pixels the cutout store reads
(:func:`szviewer.jobs.dense.level_maps`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from szviewer.cnn.modelfile import CNNModel
from szviewer.cnn.predict import Scorer
from szviewer.progress import CancelFn, ProgressFn, check_cancel


def window_centres(shape: tuple[int, int], npix: int = 32, stride_pix: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Fractional pixel coordinates (x, y) of the centres of the scored windows along each axis."""
    ny, nx = shape
    ys = np.arange(0, ny - npix + 1, stride_pix) + (npix - 1) / 2.0
    xs = np.arange(0, nx - npix + 1, stride_pix) + (npix - 1) / 2.0
    return xs, ys


def dense_raw_map(maps: np.ndarray, scorer: Scorer, npix: int = 32, stride_pix: int = 8, rows_per_batch: int = 8,
                  progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> np.ndarray:
    """Raw CNN scores of every window of ``maps`` (nband, ny, nx) uK on a ``stride_pix`` grid: (my, mx)."""
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    win = sliding_window_view(maps, (npix, npix), axis=(1, 2))[:, ::stride_pix, ::stride_pix]  # (nb, my, mx, n, n)
    my, mx = win.shape[1:3]
    out = np.empty((my, mx), dtype=np.float32)
    for a in range(0, my, rows_per_batch):
        check_cancel(cancelled, "dense CNN scoring")
        block = np.ascontiguousarray(win[:, a:a + rows_per_batch].transpose(1, 2, 0, 3, 4))
        nrow = block.shape[0]
        out[a:a + nrow] = scorer.raw(block.reshape(-1, *block.shape[2:])).reshape(nrow, mx)
        if progress is not None:
            progress(min(a + rows_per_batch, my), my, "dense CNN scoring")
    return out


def find_peaks(prob: np.ndarray, threshold: float = 0.5, peak_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices (iy, ix) of local maxima of ``prob`` over ``peak_size`` x ``peak_size`` that are >= threshold.

    Plateaus (equal neighbours) keep one peak: the first in row-major order.
    """
    from scipy.ndimage import label, maximum_filter

    if prob.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    mx = maximum_filter(prob, size=peak_size, mode="constant", cval=-np.inf)
    is_peak = (prob == mx) & (prob >= threshold)
    lab, n = label(is_peak, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(0, int), np.zeros(0, int)
    flat = lab.ravel()
    idx = np.nonzero(flat)[0]
    _, first = np.unique(flat[idx], return_index=True)
    keep = idx[first]
    return np.unravel_index(keep, prob.shape)


def cell_max(prob: np.ndarray, xs: np.ndarray, ys: np.ndarray, cx: np.ndarray, cy: np.ndarray,
             half_cell_pix: float) -> np.ndarray:
    """Largest value of ``prob`` among the windows centred within +-half_cell_pix of each (cx, cy); NaN if none."""
    out = np.full(np.shape(cx), np.nan)
    for k, (x, y) in enumerate(zip(np.atleast_1d(cx), np.atleast_1d(cy), strict=True)):
        jx = np.nonzero(np.abs(xs - x) <= half_cell_pix + 1e-9)[0]
        jy = np.nonzero(np.abs(ys - y) <= half_cell_pix + 1e-9)[0]
        if jx.size and jy.size:
            out[k] = float(prob[np.ix_(jy, jx)].max())
    return out


def subpixel_peaks(prob: np.ndarray, logit: np.ndarray, iy: np.ndarray, ix: np.ndarray, step_pix: float,
                   method: str = "centroid", radius_pix: float = 24.0) -> tuple[np.ndarray, np.ndarray]:
    """Fractional grid offsets (dy, dx) of each peak (iy, ix) of a probability map on a ``step_pix`` grid.

    - ``'centroid'``: the centroid of ``prob - prob_peak / 2`` over the connected region where the probability
      is at least half the peak's, within ``radius_pix`` of the peak (24 pixels = 6', one cell). A window is
      positive when the cluster lies in its central 6' cell, so the probability map of an isolated cluster is a
      plateau about one cell wide centred on the cluster: its centre, not its highest point, estimates the
      cluster's position; the half-maximum region keeps the plateau whole and a neighbouring peak out.
    - ``'quadratic'``: the vertex of a parabola through the peak and its two neighbours along each axis of the
      calibrated logit map, clipped to +-1/2 cell.
    """
    from scipy.ndimage import label

    iy, ix = np.asarray(iy, int), np.asarray(ix, int)
    dy, dx = np.zeros(iy.size), np.zeros(ix.size)
    ny, nx = prob.shape
    if method == "quadratic":
        for k, (y, x) in enumerate(zip(iy, ix, strict=True)):
            for axis, (d, lo, hi) in enumerate(((dy, y > 0, y < ny - 1), (dx, x > 0, x < nx - 1))):
                if not (lo and hi):
                    continue
                f = logit[y - 1:y + 2, x] if axis == 0 else logit[y, x - 1:x + 2]
                den = f[0] - 2 * f[1] + f[2]
                d[k] = float(np.clip(0.5 * (f[0] - f[2]) / den, -0.5, 0.5)) if den < 0 else 0.0
        return dy, dx
    if method != "centroid":
        raise ValueError(f"subpixel method must be 'centroid' or 'quadratic', not {method!r}")
    r = max(1, int(np.floor(radius_pix / step_pix)))
    for k, (y, x) in enumerate(zip(iy, ix, strict=True)):
        y0, y1, x0, x1 = max(0, y - r), min(ny, y + r + 1), max(0, x - r), min(nx, x + r + 1)
        box = prob[y0:y1, x0:x1].astype(float)
        oy, ox = np.mgrid[y0 - y:y1 - y, x0 - x:x1 - x]
        w = box - 0.5 * prob[y, x]
        lab, _ = label((w >= 0) & ((oy**2 + ox**2) <= r * r))
        w = np.where(lab == lab[y - y0, x - x0], w, 0.0)
        if w.sum() > 0:
            dy[k] = float(np.sum(w * oy) / w.sum())
            dx[k] = float(np.sum(w * ox) / w.sum())
    return dy, dx


#: Position error of a CNN candidate, 1 sigma per coordinate [arcmin]: ``hypot(FLOOR, PER_GRID * grid_arcmin)``,
#: fitted to the rms offsets (per coordinate) of the centroid positions from their positive halos, measured with
#: the shipped model on an independent 25 deg^2 synthetic sky (seed 2; 49 of 67 positive halos matched within
#: 3'; benchmarks/RESULTS.md, issue 13 part 2): 0.42' on the 1' grid, 0.50' on 2', 0.66' on 4' (the 2'
#: windowed reference: 0.63'). No dependence on the peak probability was resolved at that sample size.
POS_ERR_FLOOR_ARCMIN = 0.38
POS_ERR_PER_GRID = 0.15
#: Peaks are local maxima over +-PEAK_RADIUS_ARCMIN: one peak per cluster (a positive window's cluster lies
#: anywhere in its 6' cell, so a cluster's plateau is ~6' wide; on the 1' grid a +-1' neighbourhood gave 4.8
#: peaks per found cluster, +-4' gave 1.04, measured on the same sky).
PEAK_RADIUS_ARCMIN = 4.0


def position_error_arcmin(grid_arcmin: float, n: int = 1) -> np.ndarray:
    """1-sigma position error per coordinate [arcmin] of ``n`` candidates found on a ``grid_arcmin`` grid
    (:data:`POS_ERR_FLOOR_ARCMIN`, :data:`POS_ERR_PER_GRID`; measured, see there)."""
    return np.full(int(n), float(np.hypot(POS_ERR_FLOOR_ARCMIN, POS_ERR_PER_GRID * grid_arcmin)))


def _with_peaks(raw: np.ndarray, model: CNNModel, xs: np.ndarray, ys: np.ndarray, step_pix: float,
                pixel_arcmin: float, threshold: float, subpixel: str) -> dict:
    prob = model.calibrate(raw).astype(np.float32)
    logit = (model.platt.a * raw.astype(np.float64) + model.platt.b)
    size = 2 * int(np.ceil(PEAK_RADIUS_ARCMIN / (step_pix * pixel_arcmin) - 1e-9)) + 1
    iy, ix = find_peaks(prob, threshold, peak_size=size)
    dy, dx = subpixel_peaks(prob, logit, iy, ix, step_pix, subpixel)
    return {"prob": prob, "raw": raw, "xs": xs, "ys": ys, "step_pix": step_pix,
            "peaks_x": xs[ix] + dx * step_pix, "peaks_y": ys[iy] + dy * step_pix, "peaks_prob": prob[iy, ix],
            "peaks_logit": logit[iy, ix], "peaks_grid": (iy, ix),
            "peaks_err_arcmin": position_error_arcmin(step_pix * pixel_arcmin, iy.size)}


def score_tile(maps: np.ndarray, model: CNNModel, stride_pix: int = 8, fast: bool = True, batch: int = 128,
               threshold: float = 0.5, precision: str = "auto", device: str = "cpu", pixel_arcmin: float = 0.25,
               subpixel: str = "centroid", progress: ProgressFn | None = None,
               cancelled: CancelFn | None = None) -> dict:
    """Windowed dense scoring (the reference): probability map of one map and its peaks.

    Returns {'prob', 'raw', 'xs', 'ys' (window centres, pixels), 'peaks_x', 'peaks_y' (sub-pixel, pixels),
    'peaks_prob', 'peaks_logit' (Platt logit a z + b), 'peaks_err_arcmin'}.
    ``precision``: see :class:`szviewer.cnn.predict.Scorer` ('auto': bf16 checked against fp32 where bf16 is
    native, so probabilities are within 0.01 of fp32).
    """
    scorer = Scorer(model.net, fast=fast, batch=batch, precision=precision, platt=model.platt, device=device)
    npix = model.config.npix
    raw = dense_raw_map(maps, scorer, npix=npix, stride_pix=stride_pix, progress=progress, cancelled=cancelled)
    xs, ys = window_centres(maps.shape[1:], npix, stride_pix)
    return _with_peaks(raw, model, xs, ys, stride_pix, pixel_arcmin, threshold, subpixel)


def score_tile_fcn(maps: np.ndarray, model: CNNModel, stride_pix: int = 4, threshold: float = 0.5,
                   device: str = "cpu", pixel_arcmin: float = 0.25, subpixel: str = "centroid",
                   plan=None, progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Fully convolutional scoring (:class:`szviewer.cnn.fcn.FCNPlan`, fp32): the same dict as :func:`score_tile`
    on a ``stride_pix`` grid of window origins (4 = 1' at 0.25' pixels). ``plan``: a prepared plan to reuse."""
    from szviewer.cnn.fcn import FCNPlan

    plan = plan or FCNPlan(model.net, stride_pix, device=device)
    raw = plan.raw_map(maps, progress=progress, cancelled=cancelled)
    xs, ys = window_centres(maps.shape[1:], model.config.npix, plan.stride_pix)
    return _with_peaks(raw, model, xs, ys, plan.stride_pix, pixel_arcmin, threshold, subpixel)
