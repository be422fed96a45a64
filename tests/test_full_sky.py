"""Footprints up to the full sky (issue 16 part 3): the Dec-band TAN tiling covers every position exactly once, its
tiles are proper tangent-plane images at the poles and across RA 0/360, and the cutout grid spans any footprint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from szviewer.cutouts.grid import CutoutGrid, GridSettings
from szviewer.sky.tiles import Footprint, make_tiles

FULL = 4 * math.pi * (180 / math.pi) ** 2


def _random_sphere(n, seed=0):
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    return ra, dec


def test_square_areas_stay_and_large_ones_become_bands():
    assert Footprint.square(100.0) == Footprint(0.0, Footprint.square(100.0).ra_max, 0.0, 10.0)  # as before
    for area in (100.0, 5000.0, 8000.0, 12000.0, 30000.0, FULL):
        fp = Footprint.square(area)
        assert math.isclose(fp.area_deg2, area, rel_tol=1e-9), area
    band = Footprint.square(FULL / 2)
    assert band.box == (0.0, 360.0, -30.000000000000004, 30.000000000000004) or \
        np.allclose(band.box, (0, 360, -30, 30))  # sin 30 = 1/2
    assert Footprint.square(FULL) == Footprint.full_sky()
    with pytest.raises(ValueError, match="at most the full sky"):
        Footprint.square(FULL * 1.01)


def test_full_sky_tiles_own_every_position_exactly_once():
    tiles = make_tiles(Footprint.full_sky(), pixel_arcmin=0.5, tile_deg=10.0)
    owned = sum(t.owned.area_deg2 for t in tiles)
    assert math.isclose(owned, FULL, rel_tol=1e-9)
    ra, dec = _random_sphere(20000)
    ra = np.r_[ra, 0.0, 359.9999, 10.0, 200.0]
    dec = np.r_[dec, 0.0, 45.0, 89.9999, -89.9999]
    count = np.zeros(ra.size, int)
    for t in tiles:
        inside = t.owned.contains(ra, dec)
        count += inside
        if inside.any():  # each owned position lands inside its own tile's image, away from the edge
            x, y = t.world_to_pix(ra[inside], dec[inside])
            margin = 15.0 / t.pixel_arcmin - 1
            assert np.all(np.isfinite(x)) and np.all((x > margin) & (x < t.nx - 1 - margin))
            assert np.all((y > margin) & (y < t.ny - 1 - margin))
            r2, d2 = t.pix_to_world(x, y)  # and the projection inverts
            sep = np.degrees(np.arccos(np.clip(np.sin(np.radians(d2)) * np.sin(np.radians(dec[inside]))
                                               + np.cos(np.radians(d2)) * np.cos(np.radians(dec[inside]))
                                               * np.cos(np.radians(r2 - ra[inside])), -1, 1)))
            assert sep.max() * 3600 < 0.01  # arcsec (the arccos floor is ~2 mas)
    assert np.all(count == 1)
    # no tile is much larger than the tile size in true angle, even at the poles
    side_deg = np.array([max(t.nx, t.ny) * t.pixel_arcmin / 60 for t in tiles])
    assert side_deg.max() < 13.0 and len(tiles) < 600


def test_cutout_grid_over_the_full_sky():
    grid = CutoutGrid(Footprint.full_sky(), GridSettings())
    # about one 6' cell per 0.01 deg^2 of sky (less the two polar caps narrower than a cutout)
    assert 0.97 * FULL / 0.01 < grid.size < 1.01 * FULL / 0.01
    ra, dec = _random_sphere(5000, seed=1)
    keep = np.abs(dec) < 89.9
    cell = grid.cell_of(ra[keep], dec[keep])
    assert np.all(cell >= 0)  # every position away from the very poles is in a cell
    cra, cdec, _, _ = grid.centres()
    d = np.radians
    sep = np.degrees(np.arccos(np.clip(np.sin(d(cdec[cell])) * np.sin(d(dec[keep])) + np.cos(d(cdec[cell]))
                                       * np.cos(d(dec[keep])) * np.cos(d(cra[cell] - ra[keep])), -1, 1))) * 60
    assert sep.max() < 3 * math.sqrt(2) * 1.05  # within the half-diagonal of the 6' cell
    # rows are closed rings: a position just either side of RA 0 lands in the first and last cells of its row,
    # and those are neighbours
    first, last = grid.cell_of([0.001, 359.999], [10.0, 10.0])
    row = np.searchsorted(grid.row_start, first, side="right") - 1
    assert first == grid.row_start[row] and last == grid.row_start[row] + grid.row_n[row] - 1
    assert first in grid.neighbours(np.array([last]))[0] and last in grid.neighbours(np.array([first]))[0]


def test_box_grids_keep_their_cells():
    """A box footprint keeps the released behaviour: cutouts whole inside it, the ids of round one."""
    g = CutoutGrid(Footprint(0.0, 10.0, 0.0, 10.0), GridSettings())
    assert not g.ring and g.cell_of([0.001], [5.0])[0] == -1  # within half a cutout of the edge: no cell
    assert g.size == int(g.row_n.sum()) and np.isclose(g.row_ra0[0], 4 / 60 / np.cos(np.radians(g.row_dec[0])))


def test_a_tiles_projection_is_its_astropy_wcs():
    """One geometry: a tile's vectorised TAN (world_to_pix / pix_to_world, the fast path every step uses) is its
    astropy WCS (what FITS exports carry) to 1e-8 pixel, at the equator, across RA 0/360 and next to a pole."""
    tiles = make_tiles(Footprint.full_sky(), pixel_arcmin=0.5, tile_deg=10.0)
    equator = [t for t in tiles if abs(t.dec0) < 6][0]
    at_ra0 = [t for t in tiles if t.ra_min == 0.0][1]
    polar = max(tiles, key=lambda t: t.dec0)
    picks = [equator, at_ra0, polar]
    assert len(picks) == 3
    rng = np.random.default_rng(4)
    for tile in picks:
        x = rng.uniform(0, tile.nx - 1, 500)
        y = rng.uniform(0, tile.ny - 1, 500)
        ra, dec = tile.pix_to_world(x, y)
        ra_w, dec_w = tile.wcs().wcs_pix2world(x, y, 0)
        sep = np.hypot((((ra - ra_w) + 180) % 360 - 180) * np.cos(np.radians(dec)), dec - dec_w) * 60
        assert sep.max() < 1e-8 * tile.pixel_arcmin, tile.index
        xw, yw = tile.wcs().wcs_world2pix(ra, dec, 0)
        np.testing.assert_allclose(tile.world_to_pix(ra, dec), (xw, yw), atol=1e-8)
        np.testing.assert_allclose((xw, yw), (x, y), atol=1e-8)
