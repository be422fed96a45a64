"""Flat-sky tangent-plane (TAN) tiles covering an RA/Dec footprint (SCIENCE.md section 6).

The footprint is cut into RA/Dec boxes of at most ``tile_deg`` a side (in true angle); each box is
*owned* by one tile, whose image is a gnomonic projection about the box centre that covers the box
plus a margin, so anything near a box edge (cutouts, halo profiles, filters) is whole in its tile.
Pixels are square, ``pixel_arcmin`` on a side; columns run east to west (RA decreasing), rows south
to north, as in a FITS image with CDELT1 < 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from szviewer.sky import geometry
from szviewer.sky.halos import region_solid_angle_sr


@dataclass(frozen=True)
class Footprint:
    """An RA/Dec box in degrees (RA may run past 360 only as ra_max < ra_min + 360)."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def __post_init__(self):
        if not (self.ra_max > self.ra_min and self.dec_max > self.dec_min):
            raise ValueError(f"empty footprint {self}")
        if not (-90 <= self.dec_min and self.dec_max <= 90):
            raise ValueError(f"declinations out of range in {self}")

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.ra_min, self.ra_max, self.dec_min, self.dec_max)

    @property
    def area_deg2(self) -> float:
        return region_solid_angle_sr(*self.box) * (180 / np.pi) ** 2

    def contains(self, ra, dec) -> np.ndarray:
        dra = (np.asarray(ra) - self.ra_min) % 360.0
        dec = np.asarray(dec)
        return (dra < self.ra_max - self.ra_min) & (dec >= self.dec_min) & (dec < self.dec_max)

    def expanded(self, margin_deg: float) -> Footprint:
        cosd = max(math.cos(math.radians(max(abs(self.dec_min), abs(self.dec_max)))), 0.05)
        dra = min(margin_deg / cosd, 30.0)
        return Footprint(self.ra_min - dra, self.ra_max + dra,
                         max(self.dec_min - margin_deg, -90.0), min(self.dec_max + margin_deg, 90.0))

    @classmethod
    def octant(cls) -> Footprint:
        """RA 0-90, Dec 0-90: where Sehgal's halos are unique (SCIENCE.md section 1)."""
        return cls(0.0, 90.0, 0.0, 90.0)

    @classmethod
    def square(cls, area_deg2: float, ra0: float = 0.0, dec0: float = 0.0) -> Footprint:
        """A box of the given area [deg^2] from (ra0, dec0): Dec side sqrt(area), RA width to match the area.

        Where such a box would pass the pole or wrap in RA (from ~8,100 deg^2 at dec0 = 0), the footprint is instead
        the band of every RA between Dec -d and +d with sin d = area / 41,253 deg^2: up to the full sky (d = 90)."""
        full = 4 * math.pi * (180 / math.pi) ** 2
        if not 0 < area_deg2 <= full * (1 + 1e-9):
            raise ValueError(f"area {area_deg2:g} deg^2: must be positive and at most the full sky ({full:,.0f})")
        side = math.sqrt(area_deg2)
        dec1 = dec0 + side
        if dec1 < 90.0:
            sin_span = math.sin(math.radians(dec1)) - math.sin(math.radians(dec0))
            width = area_deg2 / ((180 / math.pi) * sin_span)
            if width <= 360.0:
                return cls(ra0, ra0 + width, dec0, dec1)
        d = math.degrees(math.asin(min(area_deg2 / full, 1.0)))
        return cls(ra0, ra0 + 360.0, -d, d)

    @classmethod
    def full_sky(cls) -> Footprint:
        """Every RA, Dec -90 to 90 (41,253 deg^2): tiled in Dec bands of TAN tiles (:func:`make_tiles`)."""
        return cls(0.0, 360.0, -90.0, 90.0)


@dataclass(frozen=True)
class Tile:
    """One tile: the RA/Dec box it owns and its TAN image (centre, shape, pixel size)."""

    index: int
    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float
    ra0: float
    dec0: float
    ny: int
    nx: int
    pixel_arcmin: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    @property
    def owned(self) -> Footprint:
        return Footprint(self.ra_min, self.ra_max, self.dec_min, self.dec_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Tile:
        return cls(**d)

    def world_to_pix(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """Fractional pixel coordinates (x column, y row) of sky positions (deg); NaN behind the plane."""
        xi, eta = geometry.radec_to_tangent(self.ra0, self.dec0, ra, dec)
        scale = self.pixel_arcmin * geometry.ARCMIN
        x = (self.nx - 1) / 2.0 - xi / scale
        y = (self.ny - 1) / 2.0 + eta / scale
        return x, y

    def pix_to_world(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        scale = self.pixel_arcmin * geometry.ARCMIN
        xi = ((self.nx - 1) / 2.0 - np.asarray(x, dtype=float)) * scale
        eta = (np.asarray(y, dtype=float) - (self.ny - 1) / 2.0) * scale
        v = geometry.tangent_to_vec(np.atleast_1d(self.ra0), np.atleast_1d(self.dec0), xi, eta)[0]
        return geometry.vec_to_radec(v)

    def wcs(self):
        """The tile's astropy WCS (RA---TAN / DEC--TAN, CDELT1 < 0)."""
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra0, self.dec0]
        w.wcs.crpix = [(self.nx + 1) / 2.0, (self.ny + 1) / 2.0]
        w.wcs.cdelt = [-self.pixel_arcmin / 60.0, self.pixel_arcmin / 60.0]
        w.wcs.cunit = ["deg", "deg"]
        return w


def make_tiles(footprint: Footprint, pixel_arcmin: float = 0.25, tile_deg: float = 10.0,
               margin_arcmin: float = 15.0) -> list[Tile]:
    """Cover a footprint with tiles of at most ``tile_deg`` on a side in true angle."""
    n_dec = max(1, math.ceil((footprint.dec_max - footprint.dec_min) / tile_deg - 0.05))
    dec_edges = np.linspace(footprint.dec_min, footprint.dec_max, n_dec + 1)
    tiles: list[Tile] = []
    for d0, d1 in zip(dec_edges[:-1], dec_edges[1:], strict=True):
        widest = math.cos(math.radians(min(abs(d0), abs(d1)) if d0 * d1 > 0 else 0.0))
        n_ra = max(1, math.ceil((footprint.ra_max - footprint.ra_min) * widest / tile_deg - 0.05))
        ra_edges = np.linspace(footprint.ra_min, footprint.ra_max, n_ra + 1)
        for r0, r1 in zip(ra_edges[:-1], ra_edges[1:], strict=True):
            tiles.append(_tile_for_box(len(tiles), r0, r1, d0, d1, pixel_arcmin, margin_arcmin))
    return tiles


def _tile_for_box(index, r0, r1, d0, d1, pixel_arcmin, margin_arcmin) -> Tile:
    ra0, dec0 = 0.5 * (r0 + r1), 0.5 * (d0 + d1)
    # the box boundary, densely sampled, projected about the centre
    t = np.linspace(0, 1, 200)
    ra_b = np.concatenate([r0 + (r1 - r0) * t, np.full_like(t, r1), r0 + (r1 - r0) * t, np.full_like(t, r0)])
    dec_b = np.concatenate([np.full_like(t, d0), d0 + (d1 - d0) * t, np.full_like(t, d1), d0 + (d1 - d0) * t])
    xi, eta = geometry.radec_to_tangent(ra0, dec0, ra_b, dec_b)
    scale = pixel_arcmin * geometry.ARCMIN
    pad = margin_arcmin / pixel_arcmin
    half_x = np.max(np.abs(xi)) / scale + pad
    half_y = np.max(np.abs(eta)) / scale + pad
    nx = int(2 * math.ceil(half_x / 2) * 2)  # even, and a multiple of 4 for fast FFTs
    ny = int(2 * math.ceil(half_y / 2) * 2)
    return Tile(index, float(r0), float(r1), float(d0), float(d1), float(ra0), float(dec0), ny, nx,
                float(pixel_arcmin))
