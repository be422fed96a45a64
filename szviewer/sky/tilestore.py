"""On-disk flat-sky tiles: one HDF5 file per tile holding each sky component separately.

A component is a sum of *terms*; a term is a dataset of shape (1, ny, nx) with a scale per band
(a template with a known spectrum, e.g. the CMB or a Compton-y map) or (nband, ny, nx) with
unit scales. ``component(name)`` returns the (nband, ny, nx) float32 map in uK_CMB. Written
atomically; chunked and LZF-compressed (sparse point-source maps shrink a hundredfold).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from szviewer.atomic import atomic_path
from szviewer.errors import InputError
from szviewer.progress import check_cancel
from szviewer.sky.tiles import Tile

FORMAT = "szviewer-tile"
VERSION = 1


class TileWriter:
    """Collects a tile's component terms in memory, then writes them in one atomic step."""

    def __init__(self, tile: Tile, bands: tuple[int, ...]):
        self.tile = tile
        self.bands = tuple(int(b) for b in bands)
        self.terms: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, component: str, data: np.ndarray, band_scale=None) -> None:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 2:
            data = data[None]
        nb = len(self.bands)
        if data.shape[0] not in (1, nb) or data.shape[1:] != self.tile.shape:
            raise ValueError(f"term for {component} has shape {data.shape}, tile is {self.tile.shape}")
        scale = np.ones(nb) if band_scale is None else np.asarray(band_scale, dtype=float)
        self.terms.setdefault(component, []).append((data, scale))

    def total(self) -> np.ndarray:
        """The sum of every component, (nband, ny, nx) float32 uK_CMB (the sky without noise)."""
        nb = len(self.bands)
        out = np.zeros((nb,) + self.tile.shape, dtype=np.float32)
        for terms in self.terms.values():
            for data, scale in terms:
                for b in range(nb):
                    out[b] += np.float32(scale[b]) * data[min(b, data.shape[0] - 1)]
        return out

    def write(self, path: str | os.PathLike, attrs: dict | None = None) -> None:
        """Write the tile atomically. The cyclic garbage collector is paused meanwhile: in a Dask worker (whose
        event loop allocates from another thread) collections at other moments changed where HDF5 put the file's
        metadata; pausing them made most such tiles the same bytes as in process. The data, dtypes, chunks and
        attributes are always the same; a rarer layout difference of a few hundred bytes remains (issue 16)."""
        import gc

        enabled = gc.isenabled()
        gc.disable()
        try:
            self._write(path, attrs)
        finally:
            if enabled:
                gc.enable()

    def _write(self, path: str | os.PathLike, attrs: dict | None) -> None:
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["version"] = VERSION
                f.attrs["tile"] = json.dumps(self.tile.to_dict())
                f.attrs["bands"] = np.array(self.bands)
                for k, v in (attrs or {}).items():
                    f.attrs[k] = v
                g = f.create_group("components")
                for name, terms in self.terms.items():
                    cg = g.create_group(name)
                    for i, (data, scale) in enumerate(terms):
                        chunks = (1, min(256, data.shape[1]), min(256, data.shape[2]))
                        ds = cg.create_dataset(f"t{i}", shape=data.shape, dtype=data.dtype, chunks=chunks,
                                               compression="lzf", shuffle=True)
                        # a band's rows of chunks at a time: short calls, so a signal can stop the job at once
                        for b in range(data.shape[0]):
                            for r in range(0, data.shape[1], chunks[1]):
                                check_cancel(None, "writing the tile")
                                ds[b, r:r + chunks[1]] = data[b, r:r + chunks[1]]
                        ds.attrs["band_scale"] = scale


class TileReader:
    """Reads components of one tile file; checks the format and reports a damaged file clearly."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._f = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise InputError(self.path, "tile file is missing") from None
        except OSError as exc:
            raise InputError(self.path, f"not a readable HDF5 tile file (truncated or corrupt): {exc}") from None
        if self._f.attrs.get("format") != FORMAT:
            self._f.close()
            raise InputError(self.path, "not an szviewer tile file")
        self.tile = Tile.from_dict(json.loads(self._f.attrs["tile"]))
        self.bands = tuple(int(b) for b in self._f.attrs["bands"])

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self._f["components"].keys())

    def component(self, name: str) -> np.ndarray:
        """(nband, ny, nx) float32 in uK_CMB."""
        return self._sum_terms(name, (slice(None), slice(None)), self.tile.shape)

    def component_block(self, name: str, y0: int, x0: int, npix: int) -> np.ndarray:
        """(nband, npix, npix) float32 block of a component at tile pixel (y0, x0), summed exactly as
        :meth:`component` sums it (so a block equals the same pixels of the whole map, bit for bit)."""
        return self._sum_terms(name, (slice(y0, y0 + npix), slice(x0, x0 + npix)), (npix, npix))

    def _sum_terms(self, name: str, where: tuple[slice, slice], shape: tuple[int, int]) -> np.ndarray:
        if name not in self._f["components"]:
            raise InputError(self.path, f"tile has no component {name!r} (has {', '.join(self.components)})")
        nb = len(self.bands)
        out = np.zeros((nb,) + tuple(shape), dtype=np.float32)
        try:
            for ds in self._f["components"][name].values():
                data = ds[(slice(None),) + where]
                scale = ds.attrs["band_scale"]
                for b in range(nb):
                    out[b] += np.float32(scale[b]) * data[min(b, data.shape[0] - 1)]
        except OSError as exc:
            raise InputError(self.path, f"damaged data in component {name!r}: {exc}") from None
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
