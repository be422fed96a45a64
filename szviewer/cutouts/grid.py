"""The DeepSZ cutout grid, stepped in true angle (paper section 1.2; SCIENCE.md section 2).

Cutouts are 8' x 8' (32 x 32 pixels of 0.25') with centres every 6' so neighbours share 2'. Rows
are 6' apart in Dec; within a row the RA step is 6' / cos(Dec), so the grid is uniform on the sky.
(The released DeepSZ code stepped 6' in RA at every Dec, with no cos(Dec), so its cutouts crowd
toward the pole: 808,201 over the octant where a true-angle grid has about 515,000.)

Each cutout owns the central 6' x 6' cell around its centre; every position in the grid's area
falls in exactly one cell. A footprint of every RA (a band, or the full sky) makes each row a closed ring of equal
cells (the RA step rounded so that a whole number of cells fills 360 deg), with neighbours across RA 0/360.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from szviewer.sky.tiles import Footprint


@dataclass(frozen=True)
class GridSettings:
    """Cutout geometry (paper section 1.2)."""

    npix: int = 32
    pixel_arcmin: float = 0.25
    stride_arcmin: float = 6.0

    @property
    def size_arcmin(self) -> float:
        return self.npix * self.pixel_arcmin


class CutoutGrid:
    """Centres and cell lookup for a footprint. Cell ids run row by row from the south-east corner."""

    def __init__(self, footprint: Footprint, settings: GridSettings = GridSettings()):
        self.footprint = footprint
        self.settings = settings
        half = settings.size_arcmin / 2.0 / 60.0
        step = settings.stride_arcmin / 60.0
        self.step_deg = step
        n_rows = int(math.floor((footprint.dec_max - footprint.dec_min - 2 * half) / step + 1e-9)) + 1
        if n_rows < 1:
            raise ValueError(f"footprint {footprint} is smaller than one cutout")
        self.row_dec = footprint.dec_min + half + step * np.arange(n_rows)
        cosd = np.cos(np.deg2rad(self.row_dec))
        width = footprint.ra_max - footprint.ra_min
        #: every RA (a band or the full sky): each row is a closed ring of n equal cells, none lost at RA 0/360
        self.ring = width >= 360.0 - 1e-9
        if self.ring:
            n = np.maximum(np.floor(360.0 * np.maximum(cosd, 1e-6) / step + 1e-9).astype(np.int64), 1)
            self.row_step = 360.0 / n
            self.row_ra0 = footprint.ra_min + self.row_step / 2.0
        else:
            self.row_step = step / np.maximum(cosd, 1e-6)
            self.row_ra0 = footprint.ra_min + half / np.maximum(cosd, 1e-6)
            n = np.floor((width - 2 * half / np.maximum(cosd, 1e-6)) / self.row_step + 1e-9).astype(np.int64) + 1
        self.row_n = np.maximum(n, 0)
        self.row_start = np.concatenate([[0], np.cumsum(self.row_n)[:-1]])
        self.size = int(self.row_n.sum())

    def centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ra, dec, row, col) of every cutout, in id order."""
        row = np.repeat(np.arange(self.row_dec.size), self.row_n)
        col = np.arange(self.size) - self.row_start[row]
        ra = (self.row_ra0[row] + col * self.row_step[row]) % 360.0
        return ra, self.row_dec[row], row, col

    def cell_of(self, ra, dec) -> np.ndarray:
        """Id of the cutout whose central cell holds each position, or -1 outside the grid."""
        ra = np.asarray(ra, dtype=float)
        dec = np.asarray(dec, dtype=float)
        row = np.rint((dec - self.row_dec[0]) / self.step_deg).astype(np.int64)
        ok = (row >= 0) & (row < self.row_dec.size)
        rr = np.where(ok, row, 0)
        dra = (ra - self.row_ra0[rr] + 180.0) % 360.0 - 180.0
        col = np.rint(dra / self.row_step[rr]).astype(np.int64)
        if self.ring:
            col %= self.row_n[rr]
        ok &= (col >= 0) & (col < self.row_n[rr])
        return np.where(ok, self.row_start[rr] + col, -1)

    def neighbours(self, ids: np.ndarray) -> np.ndarray:
        """The (up to) 8 neighbours of each cell, shape (N, 8), -1 where there is none.

        Same row: the cells left and right. Rows above and below: the cell nearest in RA and the
        ones either side of it (rows have different RA steps, so "nearest" is by RA).
        """
        ids = np.asarray(ids, dtype=np.int64)
        ra, _, row, col = (a[ids] for a in self.centres())
        out = np.full((ids.size, 8), -1, dtype=np.int64)
        k = 0
        for dc in (-1, 1):
            c = col + dc
            if self.ring:  # the ring closes at RA 0/360
                c %= np.maximum(self.row_n[row], 1)
            ok = (c >= 0) & (c < self.row_n[row]) & (self.row_start[row] + c != ids)
            out[:, k] = np.where(ok, self.row_start[row] + c, -1)
            k += 1
        for dr in (-1, 1):
            r = row + dr
            valid = (r >= 0) & (r < self.row_dec.size)
            rr = np.where(valid, r, 0)
            dra = (ra - self.row_ra0[rr] + 180.0) % 360.0 - 180.0
            c0 = np.rint(dra / self.row_step[rr]).astype(np.int64)
            for dc in (-1, 0, 1):
                c = c0 + dc
                if self.ring:
                    c %= np.maximum(self.row_n[rr], 1)
                ok = valid & (c >= 0) & (c < self.row_n[rr])
                out[:, k] = np.where(ok, self.row_start[rr] + c, -1)
                k += 1
        return out
