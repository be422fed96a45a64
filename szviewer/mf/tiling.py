"""Overlapping apodised tiles for filtering large maps, with NaN holes masked (never smeared silently).

A map of (ny, nx) pixels is cut into a grid of tiles. Each tile *owns* an interior block of the map; the
interiors partition the map, so every pixel belongs to exactly one tile. The tile array extends the interior
by a margin on each side (overlap with the neighbours; up to the next FFT-friendly size), which is apodised
with a cosine over ``apod_pix`` at the tile edges. A detection is kept only by the tile that owns its peak
pixel, so a cluster near a tile edge is neither lost nor doubled, as long as the margin exceeds the
apodisation plus the filter's reach (settings: margin 24', apodisation 8', largest truncated profile 15').

Pixels that are NaN (in any band), masked by the caller, or outside the map are *bad*: they are set to 0,
the weight is tapered to 0 over ``apod_pix`` around them, and no detection may lie within ``apod_pix`` of
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from szviewer.sky.spectra import cos_taper


@dataclass(frozen=True)
class FilterBlock:
    """One filter block of a map (not a sky tile, :class:`szviewer.sky.tiles.Tile`, which is a TAN image of its
    own): the array covers map rows ``y0 .. y0 + ny`` and columns ``x0 .. x0 + nx`` (may extend
    beyond the map) and owns map rows ``iy0 .. iy1`` and columns ``ix0 .. ix1`` (inside the map)."""

    index: int
    row: int
    col: int
    y0: int
    x0: int
    ny: int
    nx: int
    iy0: int
    iy1: int
    ix0: int
    ix1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    def owns(self, y_map: np.ndarray, x_map: np.ndarray) -> np.ndarray:
        """True where the map pixel holding position (y, x) [pixels, may be fractional] is in the interior."""
        yi = np.floor(np.asarray(y_map, dtype=float) + 0.5)
        xi = np.floor(np.asarray(x_map, dtype=float) + 0.5)
        return (yi >= self.iy0) & (yi < self.iy1) & (xi >= self.ix0) & (xi < self.ix1)


def _split(n: int, interior: int) -> list[tuple[int, int]]:
    """Cut [0, n) into near-equal blocks of at most ``interior`` pixels."""
    k = max(1, math.ceil(n / interior))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def plan_tiles(map_shape: tuple[int, int], interior_pix: int, margin_pix: int) -> list[FilterBlock]:
    """Tiles covering a map of ``map_shape`` = (ny, nx) pixels, owned interiors at most ``interior_pix``
    square, arrays padded by at least ``margin_pix`` on each side and sized for fast FFTs
    (``scipy.fft.next_fast_len``). All tiles share one shape so that one filter bank serves them all."""
    ny, nx = int(map_shape[0]), int(map_shape[1])
    if interior_pix < 1 or margin_pix < 0:
        raise ValueError("need interior_pix >= 1 and margin_pix >= 0")
    rows, cols = _split(ny, interior_pix), _split(nx, interior_pix)
    size_y = scipy.fft.next_fast_len(max(b - a for a, b in rows) + 2 * margin_pix, real=True)
    size_x = scipy.fft.next_fast_len(max(b - a for a, b in cols) + 2 * margin_pix, real=True)
    tiles = []
    for r, (a, b) in enumerate(rows):
        for c, (d, e) in enumerate(cols):
            # centre the interior in the tile array (the extra padding goes half to each side)
            y0 = a - (size_y - (b - a)) // 2
            x0 = d - (size_x - (e - d)) // 2
            tiles.append(FilterBlock(index=len(tiles), row=r, col=c, y0=y0, x0=x0, ny=size_y, nx=size_x,
                              iy0=a, iy1=b, ix0=d, ix1=e))
    return tiles


def extract_tile(maps, tile: FilterBlock, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Read a tile from ``maps`` (nband, ny, nx): any array supporting slicing (numpy, memmap, h5py dataset).

    Returns ``(data, bad)``: data float32 (nband, tile.ny, tile.nx) with bad pixels set to 0, and the boolean
    ``bad`` map (NaN or infinite in any band, ``mask`` True, or outside the map).
    ``mask`` (ny, nx), True = exclude (numpy.ma convention), optional.
    """
    nb, ny, nx = maps.shape
    data = np.zeros((nb, tile.ny, tile.nx), dtype=np.float32)
    bad = np.ones((tile.ny, tile.nx), dtype=bool)
    ya, yb = max(tile.y0, 0), min(tile.y0 + tile.ny, ny)
    xa, xb = max(tile.x0, 0), min(tile.x0 + tile.nx, nx)
    if ya < yb and xa < xb:
        ty, tx = slice(ya - tile.y0, yb - tile.y0), slice(xa - tile.x0, xb - tile.x0)
        block = np.asarray(maps[:, ya:yb, xa:xb], dtype=np.float32)
        good = np.isfinite(block).all(axis=0)
        if mask is not None:
            good &= ~np.asarray(mask[ya:yb, xa:xb], dtype=bool)
        data[:, ty, tx] = np.where(good[None], block, 0.0)
        bad[ty, tx] = ~good
    return data, bad


def apodise(bad: np.ndarray, apod_pix: int) -> tuple[np.ndarray, np.ndarray]:
    """Apodisation weight and detection mask of a tile.

    ``weight`` (float32) is a cosine taper over ``apod_pix`` at the tile edges times a cosine ramp from 0 at
    bad pixels to 1 at ``apod_pix`` from them. ``detect`` is True where the weight is exactly 1: the bad
    pixels grown by the apodisation, and the tile's apodised edges, are excluded from detection.
    """
    shape = bad.shape
    apod_pix = int(apod_pix)
    weight = cos_taper(shape, apod_pix).astype(np.float32)
    detect = np.zeros(shape, dtype=bool)
    detect[apod_pix:shape[0] - apod_pix, apod_pix:shape[1] - apod_pix] = True
    if bad.any():
        if bad.all():
            return np.zeros(shape, np.float32), np.zeros(shape, bool)
        dist = ndimage.distance_transform_edt(~bad)  # distance [pixels] to the nearest bad pixel
        if apod_pix > 0:
            t = np.clip((dist - 0.5) / apod_pix, 0.0, 1.0)
            ramp = 0.5 * (1.0 - np.cos(np.pi * t))
        else:
            ramp = (~bad).astype(float)
        weight *= ramp.astype(np.float32)
        detect &= dist > apod_pix + 0.5
    return weight, detect


def prepare_tile(data: np.ndarray, bad: np.ndarray,
                 apod_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean-subtract each band over its good pixels and apodise: returns ``(apodised, weight, detect)``."""
    weight, detect = apodise(bad, apod_pix)
    good = ~bad
    out = np.empty_like(data)
    ngood = int(good.sum())
    for i in range(data.shape[0]):
        mean = float(data[i][good].mean()) if ngood else 0.0
        np.subtract(data[i], mean, out=out[i])
        out[i] *= weight
    return out, weight, detect
