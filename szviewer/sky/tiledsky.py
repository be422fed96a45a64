"""A tiled synthetic sky: per tile its noiseless components (HDF5) and its observed map (sky + noise, .npy).

Each tile owns an RA/Dec box (``Tile.owned``) and stores, in the workspace,

- ``tiles/tile_NNNN.h5``: every sky component separately, beamed, noiseless (:mod:`szviewer.sky.tilestore`);
- ``maps/tile_NNNN.npy``: the *observed* map, (nband, ny, nx) float32 uK_CMB: the sum of all components plus
  the instrument's one noise realisation of that tile, written once by ``szviewer simulate``.

The observed map is what a survey delivers and what every consumer reads: the cutout windows, the matched
filter, dense CNN scoring and the app's band maps; so the same sky position gives the same pixel value to all of
them (within a tile: tiles are independent flat projections, like the CMB they hold). It is memory-mapped, so a
cutout window is a few kB read. A component level (paper Fig. 8) is the sum of its components plus the noise,
and the noise of a pixel is ``observed - sum of all components`` (float32, summed in the store's component order),
so every level shares the observed map's noise pixel for pixel.

A cutout is the ``npix x npix`` block of the tile that owns its centre whose centre is the pixel corner nearest
the requested centre (at most half a pixel away), so every map pixel is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from szviewer.errors import InputError
from szviewer.sky.tilestore import TileReader

#: Component order of the synthetic sky (szviewer.sky.synthetic.COMPONENTS).
ORDER = ("cmb", "tsz", "ksz", "ir", "radio", "dust")


def map_path_for(tile_path: str | os.PathLike) -> Path:
    """``WS/tiles/tile_NNNN.h5`` -> ``WS/maps/tile_NNNN.npy``."""
    p = Path(tile_path)
    return p.parent.parent / "maps" / (p.stem + ".npy")



def window_origin(c, npix: int) -> np.ndarray:
    """First pixel (int64) of the ``npix``-pixel window centred at fractional pixel coordinate ``c``: the pixel
    corner nearest the centre, ties upward (as FlatFitsSky.block_origins)."""
    return np.floor(np.asarray(c, float) - (npix - 1) / 2.0 + 0.5).astype(np.int64)

class TiledSky:
    """Tiles on disk; components are read one tile at a time, observed maps are memory-mapped."""

    def __init__(self, paths: list[str | os.PathLike], map_paths: list[str | os.PathLike] | None = None):
        if not paths:
            raise InputError(None, "the workspace lists no tiles")
        self.paths = [Path(p) for p in paths]
        self.map_paths = [Path(p) for p in map_paths] if map_paths is not None else None
        if self.map_paths is not None and len(self.map_paths) != len(self.paths):
            raise InputError(None, f"{len(self.paths)} tiles but {len(self.map_paths)} observed maps")
        self.tiles = []
        for p in self.paths:
            with TileReader(p) as r:
                self.tiles.append(r.tile)
                self.bands = r.bands
                comps = r.components
        #: in the paper's cumulative order (cmb, tsz, ksz, ir, radio, dust): every sum over components runs in
        #: this order, so the same pixels always give the same float32 bits
        self.components = tuple(sorted(comps, key=lambda c: (ORDER.index(c) if c in ORDER else len(ORDER), c)))
        self._maps: dict[int, np.ndarray] = {}
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def pixel_arcmin(self) -> float:
        return self.tiles[0].pixel_arcmin

    def owner(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Index of the tile owning each position (-1 if none)."""
        out = np.full(np.shape(ra), -1, dtype=np.int64)
        for k, t in enumerate(self.tiles):
            out[(out < 0) & t.owned.contains(ra, dec)] = k
        return out

    def describe(self) -> dict:
        return {"tiles": [os.fspath(p) for p in self.paths],
                "maps": None if self.map_paths is None else [os.fspath(p) for p in self.map_paths]}

    # ------------------------------------------------------------------ the observed map
    def observed(self, k: int) -> np.ndarray:
        """The observed map of tile ``k``: a read-only memmap (nband, ny, nx) float32 uK_CMB."""
        m = self._maps.get(k)
        if m is None:
            if self.map_paths is None:
                raise InputError(self.paths[k], "this sky has no observed maps (made before szviewer 0.2: "
                                                "rebuild it with `szviewer simulate`)")
            path = self.map_paths[k]
            try:
                m = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise InputError(path, "observed map is missing") from None
            except (OSError, ValueError) as exc:
                raise InputError(path, f"not a readable observed map (truncated or corrupt): {exc}") from None
            tile = self.tiles[k]
            if m.dtype != np.float32 or m.shape != (len(self.bands),) + tile.shape:
                raise InputError(path, f"observed map is {m.dtype} {m.shape}; tile {tile.index} needs float32 "
                                       f"{(len(self.bands),) + tile.shape}")
            self._maps[k] = m
        return m

    def tile_maps(self, k: int, components: tuple[str, ...] | None = None) -> np.ndarray:
        """(nband, ny, nx) float32: the observed map (``components=None``), or the sum of the given components."""
        if components is None:
            return np.array(self.observed(k))
        maps = self._load(k, tuple(components))
        return _sum(maps, tuple(components), self.bands, self.tiles[k].shape)

    # ------------------------------------------------------------------ windows
    def window_origins(self, ra, dec, npix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tile index, y0, x0) of each centre's ``npix x npix`` block in its owner tile (ValueError outside)."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        own = self.owner(ra, dec)
        if np.any(own < 0):
            i = int(np.nonzero(own < 0)[0][0])
            raise ValueError(f"cutout centre ({ra[i]:.4f}, {dec[i]:.4f}) is outside every tile")
        y0 = np.zeros(ra.size, np.int64)
        x0 = np.zeros(ra.size, np.int64)
        for k in np.unique(own):
            sel = np.nonzero(own == k)[0]
            tile = self.tiles[k]
            x, y = tile.world_to_pix(ra[sel], dec[sel])
            x0[sel], y0[sel] = window_origin(x, npix), window_origin(y, npix)
            if (x0[sel].min() < 0 or y0[sel].min() < 0 or x0[sel].max() + npix > tile.nx
                    or y0[sel].max() + npix > tile.ny):
                raise ValueError(f"a cutout leaves tile {tile.index}: its margin is too small")
        return own, y0, x0

    def windows(self, tile_k: np.ndarray, y0: np.ndarray, x0: np.ndarray, npix: int,
                components: tuple[str, ...] | None = None) -> np.ndarray:
        """Blocks (n, nband, npix, npix) float32 at the given tile origins: of the observed map
        (``components=None``) or of the sum of ``components``, in the order given."""
        tile_k = np.asarray(tile_k, np.int64)
        y0 = np.asarray(y0, np.int64)
        x0 = np.asarray(x0, np.int64)
        out = np.empty((tile_k.size, len(self.bands), npix, npix), dtype=np.float32)
        off = np.arange(npix)
        for k in np.unique(tile_k):
            sel = np.nonzero(tile_k == k)[0]
            if components is None:
                out[sel] = _blocks(self.observed(int(k)), y0[sel], x0[sel], off)
                continue
            comps = tuple(components)
            if sel.size >= 64 or (self._cache is not None and self._cache[0] == k):
                maps = self._load(int(k), comps)  # many windows: decompress the tile once
                acc = np.zeros((sel.size, len(self.bands), npix, npix), np.float32)
                for c in comps:
                    acc += _blocks(maps[c], y0[sel], x0[sel], off)
                out[sel] = acc
            else:  # a few windows: read only their blocks of each term
                with TileReader(self.paths[int(k)]) as r:
                    for i in sel:
                        acc = np.zeros((len(self.bands), npix, npix), np.float32)
                        for c in comps:
                            acc += r.component_block(c, int(y0[i]), int(x0[i]), npix)
                        out[i] = acc
        return out

    def cut(self, ra, dec, npix: int = 32, pixel_arcmin: float = 0.25, components=None) -> dict[str, np.ndarray]:
        """Component images of the given centres: {component: (N, nband, npix, npix) float32 uK_CMB}."""
        comps = tuple(components or self.components)
        if abs(pixel_arcmin - self.pixel_arcmin) > 1e-6:
            raise InputError(self.paths[0], f"tiles have {self.pixel_arcmin}' pixels, cutouts asked for "
                                            f"{pixel_arcmin}'")
        own, y0, x0 = self.window_origins(ra, dec, npix)
        return {c: self.windows(own, y0, x0, npix, (c,)) for c in comps}

    def _load(self, k: int, components: tuple[str, ...]) -> dict[str, np.ndarray]:
        if self._cache is not None and self._cache[0] == k and all(c in self._cache[1] for c in components):
            return self._cache[1]
        with TileReader(self.paths[k]) as r:
            maps = {c: r.component(c) for c in components}
        self._cache = (k, maps)
        return maps


def _blocks(m: np.ndarray, y0: np.ndarray, x0: np.ndarray, off: np.ndarray) -> np.ndarray:
    """(n, nband, npix, npix) blocks of a (nband, ny, nx) array at origins (y0, x0)."""
    if y0.size == 1:
        a, b = int(y0[0]), int(x0[0])
        return np.asarray(m[:, a:a + off.size, b:b + off.size])[None]
    rows = (y0[:, None] + off[None, :])[:, :, None]
    cols = (x0[:, None] + off[None, :])[:, None, :]
    return np.stack([np.asarray(m[b])[rows, cols] for b in range(m.shape[0])], axis=1)


def _sum(maps: dict[str, np.ndarray], comps: tuple[str, ...], bands, shape) -> np.ndarray:
    acc = np.zeros((len(bands),) + tuple(shape), np.float32)
    for c in comps:
        acc += maps[c]
    return acc
