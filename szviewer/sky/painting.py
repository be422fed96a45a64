"""Painting halo profiles and point sources onto a flat tile, vectorised with ``np.bincount``."""

from __future__ import annotations

import numpy as np


def paint_radial(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, radius_pix: np.ndarray,
                 profile_x: np.ndarray, profile_v: np.ndarray, scale_pix: np.ndarray,
                 amplitudes: list[np.ndarray], chunk_elems: int = 4_000_000) -> list[np.ndarray]:
    """Sum radial profiles onto maps: map_k += amp_k[i] * V(r_i / scale_i) within ``radius_pix[i]``.

    ``x, y`` are fractional pixel positions (column, row); ``V`` is tabulated as (profile_x,
    profile_v) in units of ``scale_pix`` and is evaluated at each pixel centre. Halos are grouped by
    stamp size so the work is a few large array operations. Returns one float64 map per amplitude set.
    """
    ny, nx = shape
    npix = ny * nx
    out = [np.zeros(npix) for _ in amplitudes]
    if len(x) == 0:
        return [o.reshape(shape) for o in out]
    rad = np.maximum(np.ceil(radius_pix).astype(int), 1)
    # group by stamp half-width rounded up to a multiple of 4 pixels
    group = ((rad + 3) // 4) * 4
    for g in np.unique(group):
        members = np.nonzero(group == g)[0]
        off = np.arange(-g, g + 1)
        dy, dx = np.meshgrid(off, off, indexing="ij")
        dy, dx = dy.ravel(), dx.ravel()
        per = dx.size
        step = max(1, chunk_elems // per)
        for s in range(0, members.size, step):
            idx = members[s:s + step]
            cx = np.rint(x[idx]).astype(np.int64)
            cy = np.rint(y[idx]).astype(np.int64)
            px = cx[:, None] + dx[None, :]
            py = cy[:, None] + dy[None, :]
            r = np.hypot(px - x[idx, None], py - y[idx, None])
            ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny) & (r <= radius_pix[idx, None])
            u = (r / scale_pix[idx, None])[ok]
            shape_val = np.interp(u, profile_x, profile_v, right=0.0)
            flat = (py * nx + px)[ok]
            rows = np.nonzero(ok)[0]
            for k, amp in enumerate(amplitudes):
                out[k] += np.bincount(flat, weights=shape_val * amp[idx][rows], minlength=npix)
    return [o.reshape(shape) for o in out]


def paint_points(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Delta functions: add ``values`` (N, nband) at the nearest pixel; returns (nband, ny, nx) float32."""
    ny, nx = shape
    nb = values.shape[1]
    out = np.zeros((nb, ny * nx), dtype=np.float64)
    ix = np.rint(x).astype(np.int64)
    iy = np.rint(y).astype(np.int64)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    flat = iy[ok] * nx + ix[ok]
    for b in range(nb):
        out[b] = np.bincount(flat, weights=values[ok, b], minlength=ny * nx)
    return out.reshape(nb, ny, nx).astype(np.float32)
