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


@dataclass(frozen=True)
class SkyBackground:
    """A low-resolution band map on the sky view's RA/Dec axes: ``image[i, j]`` is the mean sky [uK_CMB] over
    Dec row ``i`` (from ``dec_min`` up) and RA column ``j`` (from ``ra_min`` up); NaN outside every tile."""

    image: np.ndarray  # (ny, nx) float32
    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float
    band: int

    def levels(self, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
        ok = np.isfinite(self.image)
        if not ok.any():
            return (0.0, 1.0)
        a, b = (float(v) for v in np.percentile(self.image[ok], [lo, hi]))
        return (a, b if b > a else a + 1.0)

    def at(self, ra: float, dec: float) -> float:
        """The value of the pixel holding (ra, dec) (NaN outside)."""
        ny, nx = self.image.shape
        i = int(np.floor((dec - self.dec_min) / (self.dec_max - self.dec_min) * ny))
        j = int(np.floor((ra - self.ra_min) / (self.ra_max - self.ra_min) * nx))
        if not (0 <= i < ny and 0 <= j < nx):
            return float("nan")
        return float(self.image[i, j])


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the last two axes (the ragged edge is dropped)."""
    if f <= 1:
        return a
    *lead, ny, nx = a.shape
    ny, nx = ny // f * f, nx // f * f
    return a[..., :ny, :nx].reshape(*lead, ny // f, f, nx // f, f).mean(axis=(-3, -1))


def band_backgrounds(tile_paths, pixel_arcmin: float = 1.5) -> dict[int, SkyBackground]:
    """Band maps of tiled-sky files (each tile's observed map: every component plus the instrument's noise, the
    pixels the finders read), block-averaged onto a
    RA/Dec grid of about ``pixel_arcmin`` (Dec; RA steps are that over cos of the middle Dec), one per band.

    Each tile is first averaged over blocks of about half an output pixel; each block centre that its tile owns
    is then binned into the output pixel it falls in, and an output pixel is the mean of its blocks. Output
    pixels that no block centre reached (narrow RA pixels at high Dec) take the nearest block of their owner.
    """
    from szviewer.sky.tiledsky import map_path_for
    from szviewer.sky.tilestore import TileReader

    readers = [TileReader(p) for p in tile_paths]
    try:
        tiles = [r.tile for r in readers]
        if not tiles:
            return {}
        bands = readers[0].bands
        ra_min = min(t.ra_min for t in tiles)
        ra_max = max(t.ra_max for t in tiles)
        dec_min = min(t.dec_min for t in tiles)
        dec_max = max(t.dec_max for t in tiles)
        step = pixel_arcmin / 60.0
        cos_mid = max(np.cos(np.radians(0.5 * (dec_min + dec_max))), 0.05)
        ny = max(1, int(round((dec_max - dec_min) / step)))
        nx = max(1, int(round((ra_max - ra_min) * cos_mid / step)))
        dra = (ra_max - ra_min) / nx
        ddec = (dec_max - dec_min) / ny
        sums = np.zeros((len(bands), ny * nx), np.float64)
        counts = np.zeros(ny * nx, np.float64)
        owner = np.full(ny * nx, -1, np.int64)
        centres_ra = ra_min + (np.arange(nx) + 0.5) * dra
        centres_dec = dec_min + (np.arange(ny) + 0.5) * ddec
        gra, gdec = np.meshgrid(centres_ra, centres_dec)
        gra, gdec = gra.ravel(), gdec.ravel()
        coarse_maps = []
        for k, (r, t) in enumerate(zip(readers, tiles, strict=True)):
            owner[(owner < 0) & t.owned.contains(gra, gdec)] = k
            f = max(1, int(round(pixel_arcmin / 2 / t.pixel_arcmin)))
            total = np.load(map_path_for(r.path), mmap_mode="r")  # the observed map: sky + the instrument noise
            coarse = _block_mean(np.asarray(total), f).astype(np.float32)  # (nband, cy, cx)
            del total
            coarse_maps.append((coarse, f))
            cy, cx = coarse.shape[1:]
            yy, xx = np.mgrid[0:cy, 0:cx]
            bra, bdec = t.pix_to_world(xx.ravel() * f + (f - 1) / 2.0, yy.ravel() * f + (f - 1) / 2.0)
            bra = np.asarray(bra, float)
            bdec = np.asarray(bdec, float)
            own = t.owned.contains(bra, bdec)
            j = np.floor(((bra - ra_min) % 360.0) / dra).astype(np.int64)
            i = np.floor((bdec - dec_min) / ddec).astype(np.int64)
            keep = own & (i >= 0) & (i < ny) & (j >= 0) & (j < nx)
            pix = i[keep] * nx + j[keep]
            counts += np.bincount(pix, minlength=ny * nx)
            flat = coarse.reshape(len(bands), -1)[:, keep]
            for b in range(len(bands)):
                sums[b] += np.bincount(pix, weights=flat[b], minlength=ny * nx)
        out = np.full((len(bands), ny * nx), np.nan, np.float32)
        hit = counts > 0
        out[:, hit] = (sums[:, hit] / counts[hit]).astype(np.float32)
        for k, (coarse, f) in enumerate(coarse_maps):
            fill = np.nonzero(~hit & (owner == k))[0]
            if fill.size == 0:
                continue
            x, y = tiles[k].world_to_pix(gra[fill], gdec[fill])
            cx = np.clip(np.rint((np.asarray(x) - (f - 1) / 2.0) / f), 0, coarse.shape[2] - 1).astype(np.int64)
            cy = np.clip(np.rint((np.asarray(y) - (f - 1) / 2.0) / f), 0, coarse.shape[1] - 1).astype(np.int64)
            out[:, fill] = coarse[:, cy, cx]
    finally:
        for r in readers:
            r.close()
    return {int(b): SkyBackground(out[n].reshape(ny, nx), float(ra_min), float(ra_max), float(dec_min),
                                  float(dec_max), int(b)) for n, b in enumerate(bands)}
