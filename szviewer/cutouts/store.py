"""The HDF5 cutout store: images chunked one cutout per chunk, and the cutout table.

Layout of ``cutouts.h5``::

    /images          (N, ncomp, nband, npix, npix) float32, chunk = one cutout, LZF-compressed
    /table/<column>  one 1-D dataset per column of the cutout table (id, ra, dec, split, label, ...)
    attrs            format, version, bands, components, pixel_arcmin, npix, stride_arcmin,
                     noise_uk_arcmin, noise_seed, add_noise, footprint, counts, provenance (JSON)

Images are sky components without noise; ``images(rows, level)`` sums a level's components and adds
white noise drawn from a generator seeded by (noise_seed, cutout id), so a cutout always has the
same noise, whichever order it is read in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from szviewer.cutouts.levels import available_levels
from szviewer.errors import InputError
from szviewer.sky.bands import noise_sigma_uk

FORMAT = "szviewer-cutouts"
VERSION = 1


def create_store(path: str | os.PathLike, table: Table, components: tuple[str, ...], bands, npix: int,
                 attrs: dict) -> h5py.File:
    """Create the file (caller writes images and closes it); ``path`` should be a temporary name."""
    f = h5py.File(path, "w")
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["bands"] = np.array(bands, dtype=np.int32)
    f.attrs["components"] = json.dumps(list(components))
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
    n = len(table)
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
    """Read access to a cutout store; cheap to open (the table is read on first use)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "cutout store is missing (run `szviewer cutouts WS`)")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(self.path, f"not a readable HDF5 file (truncated or corrupt): {exc}") from None
        a = self._f.attrs
        if a.get("format") != FORMAT or "images" not in self._f or "table" not in self._f:
            self._f.close()
            raise InputError(self.path, "not an szviewer cutout store")
        self.bands = tuple(int(b) for b in a["bands"])
        self.components = tuple(json.loads(a["components"]))
        self.pixel_arcmin = float(a["pixel_arcmin"])
        self.npix = int(a["npix"])
        self.add_noise = bool(a["add_noise"])
        self.noise_seed = int(a["noise_seed"])
        self.noise_uk_arcmin = {int(k): float(v) for k, v in json.loads(a["noise_uk_arcmin"]).items()}
        self.levels = available_levels(self.components)
        self._images = self._f["images"]
        self._table: Table | None = None
        self._sigma = np.array([noise_sigma_uk(b, self.pixel_arcmin, self.noise_uk_arcmin[b])
                                for b in self.bands], dtype=np.float32)

    def __len__(self) -> int:
        return int(self._images.shape[0])

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
        """The cutout table (astropy), one row per stored cutout, in storage order."""
        if self._table is None:
            g = self._f["table"]
            t = Table()
            for name in json.loads(g.attrs["order"]):
                col = g[name][...]
                if col.dtype.kind == "S":
                    col = col.astype("U")
                t[name] = col
            t.meta.update(json.loads(g.attrs.get("meta", "{}")))
            self._table = t
        return self._table

    def noise(self, ids) -> np.ndarray:
        """White noise of the given cutout ids, (n, nband, npix, npix) float32 uK."""
        ids = np.atleast_1d(ids)
        out = np.empty((ids.size, len(self.bands), self.npix, self.npix), dtype=np.float32)
        for k, i in enumerate(ids):
            rng = np.random.default_rng([self.noise_seed, int(i)])
            out[k] = rng.standard_normal(out.shape[1:], dtype=np.float32) * self._sigma[:, None, None]
        return out

    def component_images(self, rows) -> np.ndarray:
        """Raw component images of the given rows: (n, ncomp, nband, npix, npix)."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            return np.empty((0,) + self._images.shape[1:], np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)  # h5py wants increasing, unique indices
        try:
            data = self._images[uniq]
        except OSError as exc:
            raise InputError(self.path, f"damaged image data: {exc}") from None
        return data[inv]

    def images(self, rows, level: str = "all", noise: bool | None = None) -> np.ndarray:
        """Images of a component level (default: everything) plus noise: (n, nband, npix, npix) float32."""
        if level not in self.levels:
            raise KeyError(f"level {level!r} not in this store (has {', '.join(self.levels)})")
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        comps = self.component_images(rows)
        idx = [self.components.index(c) for c in self.levels[level]]
        img = comps[:, idx].sum(axis=1)
        if self.add_noise if noise is None else noise:
            img += self.noise(np.asarray(self.table["id"])[rows])
        return img

    def image(self, row: int, level: str = "all") -> np.ndarray:
        return self.images([row], level)[0]

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
