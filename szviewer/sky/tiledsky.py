"""Cutting square images out of a set of flat-sky tiles (the synthetic sky's storage)."""

from __future__ import annotations

import os

import numpy as np

from szviewer.errors import InputError
from szviewer.sky.tilestore import TileReader


class TiledSky:
    """Tiles on disk, read one at a time; cutouts are pixel blocks of the tile that owns their centre.

    A cutout is the ``npix x npix`` block whose centre is the pixel corner nearest the requested
    centre (at most half a pixel, 0.125', away), so every map pixel is kept as it is: no resampling
    drops or duplicates a point source.
    """

    def __init__(self, paths: list[str | os.PathLike]):
        if not paths:
            raise InputError(None, "the workspace lists no tiles")
        self.paths = list(paths)
        self.tiles = []
        for p in self.paths:
            with TileReader(p) as r:
                self.tiles.append(r.tile)
                self.bands = r.bands
                self.components = r.components
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def owner(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Index of the tile owning each position (-1 if none)."""
        out = np.full(np.shape(ra), -1, dtype=np.int64)
        for k, t in enumerate(self.tiles):
            out[(out < 0) & t.owned.contains(ra, dec)] = k
        return out

    def _load(self, k: int, components: tuple[str, ...]) -> dict[str, np.ndarray]:
        if self._cache is not None and self._cache[0] == k and all(c in self._cache[1] for c in components):
            return self._cache[1]
        with TileReader(self.paths[k]) as r:
            maps = {c: r.component(c) for c in components}
        self._cache = (k, maps)
        return maps

    def describe(self) -> dict:
        return {"tiles": [os.fspath(p) for p in self.paths]}

    def cut(self, ra, dec, npix: int = 32, pixel_arcmin: float = 0.25, components=None) -> dict[str, np.ndarray]:
        """Images of the given centres: {component: (N, nband, npix, npix) float32 uK_CMB}."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        comps = tuple(components or self.components)
        if abs(pixel_arcmin - self.tiles[0].pixel_arcmin) > 1e-6:
            raise InputError(self.paths[0], f"tiles have {self.tiles[0].pixel_arcmin}' pixels, "
                                            f"cutouts asked for {pixel_arcmin}'")
        nb = len(self.bands)
        out = {c: np.empty((ra.size, nb, npix, npix), dtype=np.float32) for c in comps}
        own = self.owner(ra, dec)
        if np.any(own < 0):
            i = int(np.nonzero(own < 0)[0][0])
            raise ValueError(f"cutout centre ({ra[i]:.4f}, {dec[i]:.4f}) is outside every tile")
        off = np.arange(npix)
        for k in np.unique(own):
            sel = np.nonzero(own == k)[0]
            tile = self.tiles[k]
            maps = self._load(int(k), comps)
            x, y = tile.world_to_pix(ra[sel], dec[sel])
            x0 = np.rint(x - (npix - 1) / 2.0).astype(np.int64)
            y0 = np.rint(y - (npix - 1) / 2.0).astype(np.int64)
            if x0.min() < 0 or y0.min() < 0 or x0.max() + npix > tile.nx or y0.max() + npix > tile.ny:
                raise ValueError(f"a cutout leaves tile {tile.index}: its margin is too small")
            rows = (y0[:, None] + off[None, :])[:, :, None]
            cols = (x0[:, None] + off[None, :])[:, None, :]
            for c in comps:
                m = maps[c]
                for b in range(nb):
                    out[c][sel, b] = m[b][rows, cols]
        return out
