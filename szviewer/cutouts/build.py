"""Building the DeepSZ cutout set from any sky (tiles, HEALPix, FITS) into one HDF5 store."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from astropy.table import Table

from szviewer.atomic import atomic_path
from szviewer.cutouts.grid import CutoutGrid, GridSettings
from szviewer.cutouts.labels import LabelSettings, label_grid, split_counts
from szviewer.cutouts.levels import components_for
from szviewer.cutouts.store import create_store
from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import NOISE_UK_ARCMIN
from szviewer.sky.tiles import Footprint


@dataclass
class CutoutSettings:
    """What to cut: the paper's grid and labels, which levels, and the white noise (paper section 1)."""

    grid: GridSettings = GridSettings()
    labels: LabelSettings = LabelSettings()
    levels: tuple[str, ...] = ("all",)
    add_noise: bool = True
    noise_seed: int = 0
    noise_uk_arcmin: dict[int, float] | None = None
    batch: int = 1024

    def to_dict(self) -> dict:
        return {"grid": asdict(self.grid), "labels": asdict(self.labels), "levels": list(self.levels),
                "add_noise": self.add_noise, "noise_seed": self.noise_seed,
                "noise_uk_arcmin": {str(k): v for k, v in (self.noise_uk_arcmin or NOISE_UK_ARCMIN).items()}}


def build_cutouts(sky, footprint: Footprint, halos: Table | None, out_path: str | os.PathLike,
                  settings: CutoutSettings | None = None, provenance: dict | None = None,
                  progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Label the grid, cut every kept cutout from ``sky`` and write the store atomically.

    Returns a summary (counts per split, positives, removed training neighbours, seconds).
    """
    settings = settings or CutoutSettings()
    t0 = time.perf_counter()
    grid = CutoutGrid(footprint, settings.grid)
    table = label_grid(grid, halos, settings.labels)
    removed = int(np.sum(table["train_neighbour"]))
    table = table[~np.asarray(table["train_neighbour"])]
    table.remove_column("train_neighbour")
    if hasattr(sky, "owner"):
        tile = sky.owner(np.asarray(table["ra"]), np.asarray(table["dec"]))
        table["tile"] = tile.astype(np.int32)
        table = table[np.argsort(tile, kind="stable")]
    else:
        table["tile"] = np.zeros(len(table), dtype=np.int32)
    comps = components_for(list(settings.levels), sky.components)
    noise = {int(b): float(v) for b, v in (settings.noise_uk_arcmin or NOISE_UK_ARCMIN).items()}
    counts = split_counts(table)
    attrs = {
        "pixel_arcmin": settings.grid.pixel_arcmin, "npix": settings.grid.npix,
        "stride_arcmin": settings.grid.stride_arcmin, "noise_uk_arcmin": {str(k): v for k, v in noise.items()},
        "noise_seed": int(settings.noise_seed), "add_noise": bool(settings.add_noise),
        "footprint": list(footprint.box), "grid_size": grid.size, "removed_train_neighbours": removed,
        "counts": counts, "provenance": provenance or {},
    }
    n = len(table)
    ra = np.asarray(table["ra"])
    dec = np.asarray(table["dec"])
    with atomic_path(out_path) as tmp:
        f = create_store(tmp, table, comps, sky.bands, settings.grid.npix, attrs)
        try:
            images = f["images"]
            for start in range(0, n, settings.batch):
                check_cancel(cancelled, "cutting")
                stop = min(n, start + settings.batch)
                cut = sky.cut(ra[start:stop], dec[start:stop], settings.grid.npix, settings.grid.pixel_arcmin,
                              comps)
                block = np.stack([cut[c] for c in comps], axis=1)
                bad = ~np.isfinite(block)
                if bad.any():
                    i = start + int(np.nonzero(bad.any(axis=(1, 2, 3, 4)))[0][0])
                    files = getattr(sky, "files", None) or getattr(sky, "paths", None)
                    names = ", ".join(str(v) for v in (files.values() if isinstance(files, dict) else files or []))
                    raise InputError(names or None,
                                     f"{int(bad.sum())} NaN/inf pixels in cutouts {start}-{stop - 1} "
                                     f"(first at RA {ra[i]:.4f}, Dec {dec[i]:.4f}); mask or fill the map")
                images[start:stop] = block
                if progress is not None:
                    progress(stop, n, "cutouts")
        finally:
            f.close()
    seconds = time.perf_counter() - t0
    return {"cutouts": n, "grid_size": grid.size, "positives": int(np.sum(table["label"])),
            "removed_train_neighbours": removed, "splits": counts, "components": list(comps),
            "seconds": round(seconds, 2)}
