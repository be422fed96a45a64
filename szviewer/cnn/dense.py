"""Dense CNN scoring: overlapping cutouts on a fine grid, a probability map, and CNN candidates by peak finding.

The paper found that the CNN misses clusters near the edge of a cutout's central cell (section 3.4.2, Fig. 9c)
and suggested overlapping cutouts so that each cluster is near the centre of at least one (SCIENCE.md section 4).
Here every 32 x 32 window of a map whose centre lies on a grid of ``stride_pix`` pixels (8 pixels = 2' at the
paper's 0.25' pixels) is scored, giving a probability map on that grid. Peaks of the map (local maxima over
a ``peak_size`` x ``peak_size`` neighbourhood above ``threshold``) are CNN candidates with a position, so the
CNN yields a catalogue as the matched filter does. A cutout of the DeepSZ grid can then take the largest dense
probability among the windows centred inside its central 6' x 6' cell (:func:`cell_max`).

The input map of a tile is its observed map (the sky plus the instrument's one noise realisation), or for a
component level the level's components plus the same noise: the pixels the cutout store reads
(:func:`szviewer.jobs.cnn.level_maps`).
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


def score_tile(maps: np.ndarray, model: CNNModel, stride_pix: int = 8, fast: bool = True, batch: int = 128,
               threshold: float = 0.5, precision: str = "auto", device: str = "cpu",
               progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Dense probability map of one map and its peaks: {'prob', 'xs', 'ys', 'peaks_x', 'peaks_y', 'peaks_prob'}.

    ``precision``: see :class:`szviewer.cnn.predict.Scorer` ('auto': bf16 checked against fp32 where bf16 is
    native, so probabilities are within 0.01 of fp32).
    """
    scorer = Scorer(model.net, fast=fast, batch=batch, precision=precision, platt=model.platt, device=device)
    npix = model.config.npix
    raw = dense_raw_map(maps, scorer, npix=npix, stride_pix=stride_pix, progress=progress, cancelled=cancelled)
    prob = model.calibrate(raw).astype(np.float32)
    xs, ys = window_centres(maps.shape[1:], npix, stride_pix)
    iy, ix = find_peaks(prob, threshold)
    return {"prob": prob, "raw": raw, "xs": xs, "ys": ys, "peaks_x": xs[ix], "peaks_y": ys[iy],
            "peaks_prob": prob[iy, ix]}
