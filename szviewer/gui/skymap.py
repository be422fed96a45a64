"""A raster of the cutout grid for the sky view (pure numpy): each pixel holds the index of the cutout there.

Rows of the raster are the grid's Dec rows (one per 6' step); columns are RA pixels of one grid step at the
equator. At higher Dec the grid's RA step grows as 1/cos(Dec), so a cutout covers several pixels of its row:
each pixel takes the cutout whose centre is nearest in RA, within half that row's step. Colouring the map by
a score or an outcome is then one ``take`` over the raster, a few milliseconds even for the whole octant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_COLUMNS = 2400


@dataclass(frozen=True)
class SkyRaster:
    index: np.ndarray  # (nrow, ncol) int64 cutout row or -1
    ra_min: float  # edges of the raster [deg]
    ra_max: float
    dec_min: float
    dec_max: float

    def colour(self, rgba_per_cutout: np.ndarray, empty=(0, 0, 0, 0)) -> np.ndarray:
        """(nrow, ncol, 4) uint8 image: each cutout's colour, ``empty`` where there is none (one ``take``)."""
        n = rgba_per_cutout.shape[0]
        table = np.empty((n + 1, 4), np.uint8)
        table[:n] = rgba_per_cutout
        table[n] = empty
        flat = self.index.ravel()
        idx = np.where(flat >= 0, flat, n)
        out = table.view(np.uint32).ravel().take(idx)
        return out.view(np.uint8).reshape(self.index.shape + (4,))

    def at(self, ra: float, dec: float) -> int | None:
        """The cutout shown at (ra, dec), or None."""
        ny, nx = self.index.shape
        if not (self.ra_min <= ra < self.ra_max and self.dec_min <= dec < self.dec_max):
            return None
        i = int((dec - self.dec_min) / (self.dec_max - self.dec_min) * ny)
        j = int((ra - self.ra_min) / (self.ra_max - self.ra_min) * nx)
        k = int(self.index[min(i, ny - 1), min(j, nx - 1)])
        return None if k < 0 else k


def sky_raster(ra: np.ndarray, dec: np.ndarray, grid_row: np.ndarray | None = None,
               step_deg: float | None = None) -> SkyRaster:
    """The raster of cutout centres ``ra``, ``dec`` [deg] on grid rows ``grid_row`` (from the cutout table)."""
    ra = np.asarray(ra, float)
    dec = np.asarray(dec, float)
    n = ra.size
    if n == 0:
        return SkyRaster(np.full((1, 1), -1, np.int64), 0.0, 1.0, 0.0, 1.0)
    if grid_row is None:
        _, grid_row = np.unique(np.round(dec, 6), return_inverse=True)
    grid_row = np.asarray(grid_row, np.int64)
    by_row = np.argsort(grid_row, kind="stable")
    sorted_rows = grid_row[by_row]
    rows = np.unique(sorted_rows)
    starts = np.searchsorted(sorted_rows, rows, "left")
    stops = np.searchsorted(sorted_rows, rows, "right")
    row_dec = np.array([float(np.median(dec[by_row[a:b]])) for a, b in zip(starts, stops, strict=True)])
    order = np.argsort(row_dec)
    rows, row_dec, starts, stops = rows[order], row_dec[order], starts[order], stops[order]
    if step_deg is None:
        step_deg = float(np.median(np.diff(row_dec))) if rows.size > 1 else 0.1
        if not step_deg > 0:
            step_deg = 0.1
    ra_min = float(ra.min()) - step_deg / 2
    ra_max = float(ra.max()) + step_deg / 2
    px = step_deg
    ncol = int(np.ceil((ra_max - ra_min) / px))
    if ncol > MAX_COLUMNS:
        px = (ra_max - ra_min) / MAX_COLUMNS
        ncol = MAX_COLUMNS
    ra_max = ra_min + ncol * px
    centres = ra_min + (np.arange(ncol) + 0.5) * px
    raster_row = np.rint((row_dec - row_dec[0]) / step_deg).astype(np.int64)
    nrow = int(raster_row[-1]) + 1
    index = np.full((nrow, ncol), -1, np.int64)
    for i in range(rows.size):
        members = by_row[starts[i]:stops[i]]
        members = members[np.argsort(ra[members])]
        r = ra[members]
        if r.size == 1:
            half = step_deg / 2 / max(np.cos(np.radians(row_dec[i])), 1e-3)
            near = members[np.zeros(ncol, np.int64)]
            dist = np.abs(centres - r[0])
        else:
            half = float(np.median(np.diff(r))) / 2
            k = np.clip(np.searchsorted(r, centres), 1, r.size - 1)
            left_closer = (centres - r[k - 1]) < (r[k] - centres)
            k = np.where(left_closer, k - 1, k)
            near = members[k]
            dist = np.abs(centres - r[k])
        index[raster_row[i]] = np.where(dist <= half * 1.001 + 1e-9, near, -1)
    dec_min = float(row_dec[0]) - step_deg / 2
    dec_max = dec_min + nrow * step_deg
    return SkyRaster(index, ra_min, ra_max, dec_min, dec_max)
