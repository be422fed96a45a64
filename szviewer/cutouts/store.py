"""The cutout set: a table of cutouts plus reads of their windows from the sky's maps (no pixel copies).

Layout of ``cutouts.h5`` (format version 2)::

    /table/<column>  one 1-D dataset per column of the cutout table (id, ra, dec, split, label, halo columns,
                     and where the pixels are: tile, y0, x0 for a tiled sky)
    /images          only for HEALPix skies: (N, ncomp, nband, npix, npix) float32, the components sampled at
                     the cutout pixels (a cache), chunk = one cutout, LZF
    attrs            format, version, pixels ('tiles' | 'fits' | 'healpix'), sky (where the maps are: paths
                     relative to the store for tiles), bands, components, pixel_arcmin, npix, stride_arcmin,
                     add_noise, noise (HEALPix: seed, depth per band, nside), footprint, counts, provenance (JSON)

``images(rows, level)`` gives a component level with the instrument noise (:mod:`szviewer.cutouts.pixels`):
for a tiled sky, windows of the tiles' observed maps, so a cutout holds exactly the pixels the matched filter and
dense CNN scoring read at the same sky position, and overlapping cutouts agree on the pixels they share.
Version-1 stores (round one: pixel copies and noise drawn per cutout) are refused with the command to rebuild.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from szviewer.cutouts.levels import available_levels
from szviewer.cutouts.pixels import FitsWindows, HealpixSamples, TileWindows
from szviewer.errors import InputError

FORMAT = "szviewer-cutouts"
VERSION = 2
PIXEL_SOURCES = ("tiles", "fits", "healpix")


def create_store(path: str | os.PathLike, table: Table, components: tuple[str, ...], bands, npix: int,
                 attrs: dict, cached_images: bool = False) -> h5py.File:
    """Create the file (caller fills ``/images`` if ``cached_images`` and closes it); ``path`` should be a
    temporary name."""
    f = h5py.File(path, "w")
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["bands"] = np.array(bands, dtype=np.int32)
    f.attrs["components"] = json.dumps(list(components))
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
    n = len(table)
    if cached_images:
        shape = (n, len(components), len(bands), npix, npix)
        f.create_dataset("images", shape=shape, dtype="f4", chunks=(1,) + shape[1:], compression="lzf",
                         shuffle=True)
    g = f.create_group("table")
    for name in table.colnames:
        col = np.asarray(table[name])
        if col.dtype.kind == "U":
            col = col.astype("S")
        g.create_dataset(name, data=col)
    g.attrs["order"] = json.dumps(table.colnames)
    g.attrs["meta"] = json.dumps(dict(table.meta), default=str)
    return f


class CutoutStore:
    """Read access to a cutout set; cheap to open (the table and the maps are opened on first use).

    ``sky``: the workspace's open sky (a TiledSky or FlatFitsSky); if not given it is opened from the paths the
    store records.
    """

    def __init__(self, path: str | os.PathLike, sky=None):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "cutout store is missing (run `szviewer cutouts WS`)")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(self.path, f"not a readable HDF5 file (truncated or corrupt): {exc}") from None
        a = self._f.attrs
        if a.get("format") != FORMAT or "table" not in self._f:
            self._f.close()
            raise InputError(self.path, "not an szviewer cutout store")
        version = int(a.get("version", 0))
        if version < VERSION:
            self._f.close()
            raise InputError(self.path, "made by szviewer 0.1, which copied every cutout's pixels and drew its "
                                        "noise per cutout; rebuild the sky and its cutouts (`szviewer simulate "
                                        "--out WS --overwrite ...`, then `szviewer cutouts WS`; imported skies: "
                                        "`szviewer cutouts WS --overwrite`)")
        if version > VERSION:
            self._f.close()
            raise InputError(self.path, f"cutout store version {version} is newer than this szviewer reads "
                                        f"({VERSION}); update szviewer")
        self.bands = tuple(int(b) for b in a["bands"])
        self.components = tuple(json.loads(a["components"]))
        self.pixel_arcmin = float(a["pixel_arcmin"])
        self.npix = int(a["npix"])
        self.add_noise = bool(a["add_noise"])
        self.pixels = str(a.get("pixels", ""))
        if self.pixels not in PIXEL_SOURCES:
            self._f.close()
            raise InputError(self.path, f"unknown pixel source {self.pixels!r} (expected one of {PIXEL_SOURCES})")
        if self.pixels == "healpix" and "images" not in self._f:
            self._f.close()
            raise InputError(self.path, "a HEALPix cutout set without its /images samples: rebuild it with "
                                        "`szviewer cutouts WS --overwrite`")
        self.levels = available_levels(self.components)
        self._sky = sky
        self._source = None
        self._table: Table | None = None
        self._n = int(self._f["table"]["id"].shape[0])

    def __len__(self) -> int:
        return self._n

    def attrs(self) -> dict:
        out = {}
        for k, v in self._f.attrs.items():
            if isinstance(v, str) and v[:1] in "[{":
                v = json.loads(v)
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            out[k] = v
        return out

    @property
    def table(self) -> Table:
        """The cutout table (astropy), one row per cutout, in storage order."""
        if self._table is None:
            g = self._f["table"]
            t = Table()
            try:
                for name in json.loads(g.attrs["order"]):
                    col = g[name][...]
                    if col.dtype.kind == "S":
                        col = col.astype("U")
                    t[name] = col
            except (OSError, KeyError) as exc:
                raise InputError(self.path, f"damaged cutout table: {exc}") from None
            t.meta.update(json.loads(g.attrs.get("meta", "{}")))
            self._table = t
        return self._table

    @property
    def source(self):
        """Where the pixels come from (:mod:`szviewer.cutouts.pixels`), opened on first use."""
        if self._source is None:
            self._source = self._open_source()
        return self._source

    def _open_source(self):
        t = self.table
        a = self.attrs()
        if self.pixels == "tiles":
            sky = self._sky
            if sky is None:
                from szviewer.sky.tiledsky import TiledSky

                where = a.get("sky", {})
                base = self.path.parent
                sky = TiledSky([base / p for p in where.get("tiles", [])], [base / p for p in where.get("maps", [])])
            return TileWindows(sky, np.asarray(t["tile"]), np.asarray(t["y0"]), np.asarray(t["x0"]), self.npix,
                               self.components)
        if self.pixels == "fits":
            sky = self._sky
            if sky is None:
                from szviewer.sky.fits_maps import open_fits_maps

                sky = open_fits_maps({int(b): p for b, p in a.get("sky", {}).get("maps", {}).items()})
            return FitsWindows(sky, np.asarray(t["ra"]), np.asarray(t["dec"]), self.npix, self.pixel_arcmin)
        noise = a.get("noise", {})
        depth = noise.get("uk_arcmin", {})
        return HealpixSamples(self._f["images"], self.path, self.components, np.asarray(t["ra"]),
                              np.asarray(t["dec"]), self.npix, self.pixel_arcmin, int(noise.get("nside", 8192)),
                              int(noise.get("seed", 0)), [float(depth.get(str(b), 0.0)) for b in self.bands])

    def _rows(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.size and (rows.min() < 0 or rows.max() >= self._n):
            raise IndexError(f"cutout rows out of range 0..{self._n - 1}")
        return rows

    def component_images(self, rows) -> np.ndarray:
        """Noiseless component images of the given rows: (n, ncomp, nband, npix, npix) float32 uK."""
        rows = self._rows(rows)
        if rows.size == 0:
            return np.empty((0, len(self.components), len(self.bands), self.npix, self.npix), np.float32)
        return self.source.component_images(rows)

    def images(self, rows, level: str = "all", noise: bool | None = None) -> np.ndarray:
        """Images of a component level (default: everything) with the instrument noise (unless ``noise`` is
        False): (n, nband, npix, npix) float32 uK_CMB."""
        if level not in self.levels:
            raise KeyError(f"level {level!r} not in this store (has {', '.join(self.levels)})")
        rows = self._rows(rows)
        if rows.size == 0:
            return np.empty((0, len(self.bands), self.npix, self.npix), np.float32)
        return self.source.images(rows, tuple(self.levels[level]), self.add_noise if noise is None else noise)

    def image(self, row: int, level: str = "all") -> np.ndarray:
        return self.images([row], level)[0]

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
