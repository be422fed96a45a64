"""Building the DeepSZ cutout set of any sky (tiles, HEALPix, FITS): its table, and where its pixels are."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from szviewer.atomic import atomic_path
from szviewer.cutouts.grid import CutoutGrid, GridSettings
from szviewer.cutouts.labels import LabelSettings, label_grid, split_counts
from szviewer.cutouts.levels import components_for
from szviewer.cutouts.sampling import sample_healpix
from szviewer.cutouts.store import create_store
from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import NOISE_UK_ARCMIN
from szviewer.sky.tiles import Footprint


@dataclass
class CutoutSettings:
    """What to cut: the paper's grid and labels (paper section 1.2).

    ``levels``, ``add_noise``, ``noise_seed`` and ``noise_uk_arcmin`` apply to HEALPix skies only, whose samples
    are cached and whose white noise is drawn per HEALPix pixel; a synthetic sky carries its own noise map and the
    user's FITS maps their own noise.
    """

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
                  progress: ProgressFn | None = None, cancelled: CancelFn | None = None, executor=None,
                  checkpoints=None) -> dict:
    """Label the grid and write the cutout set atomically: its table and where its pixels are.

    A tiled sky (``sky.window_origins``) gets the (tile, y0, x0) of each window and no pixel copy; flat FITS
    maps get their blocks checked (cutouts with NaN pixels are left out and counted); HEALPix maps are sampled
    once into the store's ``/images`` cache (:func:`szviewer.cutouts.sampling.sample_healpix`: blocks of cutouts
    as tasks of ``executor``, checkpointed in ``checkpoints`` when given, so a re-run resumes). Returns a summary
    (counts per split, positives, removed training neighbours, seconds).
    """
    settings = settings or CutoutSettings()
    t0 = time.perf_counter()
    grid = CutoutGrid(footprint, settings.grid)
    table = label_grid(grid, halos, settings.labels)
    removed = int(np.sum(table["train_neighbour"]))
    table = table[~np.asarray(table["train_neighbour"])]
    table.remove_column("train_neighbour")
    npix, pix = settings.grid.npix, settings.grid.pixel_arcmin
    out_path = Path(out_path)
    dropped = 0
    notes: list[str] = []
    if hasattr(sky, "window_origins"):
        kind = "tiles"
        check_cancel(cancelled, "cutting")
        tile, y0, x0 = sky.window_origins(np.asarray(table["ra"]), np.asarray(table["dec"]), npix)
        table["tile"] = tile.astype(np.int32)
        table["y0"] = y0.astype(np.int32)
        table["x0"] = x0.astype(np.int32)
        table = table[np.argsort(tile, kind="stable")]  # grid order within each tile
        components_for(list(settings.levels), sky.components)  # a level name that does not exist is an error
        comps = tuple(sky.components)
        where = {"tiles": [os.path.relpath(p, out_path.parent) for p in sky.paths],
                 "maps": [os.path.relpath(p, out_path.parent) for p in sky.map_paths]}
    elif hasattr(sky, "block_origins"):  # flat FITS maps
        kind = "fits"
        table["tile"] = np.zeros(len(table), dtype=np.int32)
        table, dropped = _drop_bad_blocks(sky, table, npix, pix, settings.batch, progress, cancelled)
        comps = ("skymap",)
        where = {"maps": {str(b): str(Path(p).resolve()) for b, p in sky.files.items()}}
    else:
        kind = "healpix"
        table["tile"] = np.zeros(len(table), dtype=np.int32)
        comps = components_for(list(settings.levels), sky.components)
        where = sky.describe() if hasattr(sky, "describe") else {}
        from szviewer.atomic import require_space

        # the cache of samples: LZF keeps about 90% of smooth float32 maps
        copies = 1 if checkpoints is None else 2  # the block checkpoints stay until the store is committed
        require_space(out_path.parent, copies * 0.9 * 4 * len(table) * len(comps) * len(sky.bands) * npix * npix,
                      f"the HEALPix samples of {len(table)} cutouts")
        nside = int(getattr(sky, "nside", 8192))
        side = float(np.degrees(np.sqrt(4 * np.pi / (12 * nside * nside)))) * 60
        if side > 1.5 * pix:
            notes.append(f"the HEALPix maps (Nside {nside}, {side:.2f}' pixels) are coarser than the cutouts' "
                         f"{pix:g}' pixels: each map pixel fills about {(side / pix) ** 2:.0f} cutout pixels")
    noise = {int(b): float(v) for b, v in (settings.noise_uk_arcmin or NOISE_UK_ARCMIN).items()}
    counts = split_counts(table)
    attrs = {
        "pixels": kind, "sky": where,
        "pixel_arcmin": pix, "npix": npix, "stride_arcmin": settings.grid.stride_arcmin,
        "add_noise": bool(settings.add_noise) if kind == "healpix" else kind == "tiles",
        "footprint": list(footprint.box), "grid_size": grid.size, "removed_train_neighbours": removed,
        "dropped_bad_pixels": dropped, "counts": counts, "provenance": provenance or {},
        "orientation": "rows south to north (Dec increasing), columns east to west (RA decreasing)",
    }
    if kind == "healpix":
        attrs["noise"] = {"seed": int(settings.noise_seed), "nside": int(getattr(sky, "nside", 8192)),
                          "uk_arcmin": {str(b): noise.get(int(b), 0.0) for b in sky.bands},
                          "rule": "white noise per HEALPix pixel (szviewer.sky.pixel_noise)"}
    n = len(table)
    with atomic_path(out_path) as tmp:
        f = create_store(tmp, table, comps, sky.bands, npix, attrs, cached_images=kind == "healpix")
        try:
            if kind == "healpix":
                sample_healpix(sky, f["images"], table, comps, npix, pix, settings.batch, progress, cancelled,
                               executor=executor, checkpoints=checkpoints)
            elif progress is not None:
                progress(n, n, "cutouts")
        finally:
            f.close()
    seconds = time.perf_counter() - t0
    return {"cutouts": n, "grid_size": grid.size, "positives": int(np.sum(table["label"])),
            "removed_train_neighbours": removed, "dropped_bad_pixels": dropped, "splits": counts,
            "components": list(comps), "pixels": kind, "seconds": round(seconds, 2), "warnings": notes}


def _drop_bad_blocks(sky, table: Table, npix: int, pix: float, batch: int, progress, cancelled) -> tuple[Table, int]:
    """Leave out the cutouts whose block leaves the map or holds an unusable pixel (NaN in a map, ivar 0, mask 0)."""
    n = len(table)
    ra = np.asarray(table["ra"])
    dec = np.asarray(table["dec"])
    good = np.ones(n, dtype=bool)
    usable = sky.usable  # (ny, nx): every map finite, ivar > 0, mask > 0
    ny, nx = usable.shape
    off = np.arange(npix)
    for start in range(0, n, batch):
        check_cancel(cancelled, "checking the map blocks")
        stop = min(n, start + batch)
        y0, x0 = sky.block_origins(ra[start:stop], dec[start:stop], npix)
        inside = np.isfinite(y0) & np.isfinite(x0)
        with np.errstate(invalid="ignore"):
            inside &= (y0 >= 0) & (x0 >= 0) & (y0 + npix <= ny) & (x0 + npix <= nx)
        ok = np.zeros(stop - start, dtype=bool)
        k = np.nonzero(inside)[0]
        if k.size:
            rows = (y0[k].astype(np.int64)[:, None] + off)[:, :, None]
            cols = (x0[k].astype(np.int64)[:, None] + off)[:, None, :]
            ok[k] = usable[rows, cols].all(axis=(1, 2))
        good[start:stop] = ok
        if progress is not None:
            progress(stop, n, "cutouts")
    if not good.any():
        names = ", ".join(str(p) for p in sky.files.values())
        raise InputError(names, f"every one of the {n} cutouts holds an unusable pixel (NaN in a map, ivar 0 or mask "
                                f"0); fill the map or check the mask")
    return table[good], int(n - good.sum())
