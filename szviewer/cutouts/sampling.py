"""Sampling a HEALPix sky at every cutout pixel into the cutout store's ``/images`` cache, block by block.

Blocks of ``batch`` cutouts are the tasks of any executor (:mod:`szviewer.parallel`, issue 16): a HEALPix sky
pickles as the files it reopens (never as its maps), so each worker memory-maps the maps once. With a checkpoint
folder (:class:`szviewer.parallel.resume.TileCheckpoints`) every block is first written, complete and atomically,
as ``tile_NNNN.npy`` and then copied into the store by the driver alone, in block order: a re-run after a cancel or
a kill samples only the blocks not yet written, and the store is the same bit for bit on any executor. Without one
(direct calls) the blocks go straight into the store, in process.
"""

from __future__ import annotations

import numpy as np

from szviewer.errors import Cancelled, InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel


def sample_block(sky, ra: np.ndarray, dec: np.ndarray, start: int, comps, npix: int, pix: float) -> np.ndarray:
    """Cutouts ``start..start+len(ra)-1`` of the sky: (n, ncomp, nband, npix, npix) float32 uK; NaN or inf
    pixels: a one-line InputError naming the maps and the first bad cutout."""
    cut = sky.cut(ra, dec, npix, pix, comps)
    block = np.stack([cut[c] for c in comps], axis=1)
    bad = ~np.isfinite(block)
    if bad.any():
        i = int(np.nonzero(bad.any(axis=(1, 2, 3, 4)))[0][0])
        files = getattr(sky, "files", None) or {}
        names = ", ".join(str(v) for v in (files.values() if isinstance(files, dict) else files))
        raise InputError(names or None, f"{int(bad.sum())} NaN/inf pixels in cutouts {start}-{start + len(ra) - 1} "
                                        f"(first at RA {ra[i]:.4f}, Dec {dec[i]:.4f}); mask or fill the map")
    return block


class SampleBlockTask:
    """One block of cutouts (a task of any executor): ``(index, start, stop)`` -> ``folder/tile_NNNN.npy``."""

    def __init__(self, comps, npix: int, pix: float, folder: str):
        self.comps, self.npix, self.pix, self.folder = tuple(comps), int(npix), float(pix), str(folder)

    def path(self, index: int):
        from pathlib import Path

        return Path(self.folder) / f"tile_{int(index):04d}.npy"

    def __call__(self, block: tuple[int, int, int], sky, ra: np.ndarray, dec: np.ndarray) -> dict:
        from szviewer.atomic import atomic_path

        index, start, stop = block
        if not self.path(index).is_file():  # else done already: a task re-run because its worker died
            images = sample_block(sky, ra[start:stop], dec[start:stop], start, self.comps, self.npix, self.pix)
            with atomic_path(self.path(index)) as tmp, open(tmp, "wb") as fh:
                np.save(fh, images)
        return {"block": int(index), "cutouts": int(stop - start)}


def sample_healpix(sky, images, table, comps, npix: int, pix: float, batch: int,
                   progress: ProgressFn | None = None, cancelled: CancelFn | None = None, executor=None,
                   checkpoints=None) -> None:
    """Fill the store's ``images`` (N, ncomp, nband, npix, npix) with the sky sampled at every cutout pixel.

    ``checkpoints`` (a :class:`~szviewer.parallel.resume.TileCheckpoints` with ext ``.npy``): sample the blocks
    not yet there as tasks of ``executor`` (default in process), then copy every block into ``images``."""
    n = len(table)
    ra = np.ascontiguousarray(table["ra"], dtype=float)
    dec = np.ascontiguousarray(table["dec"], dtype=float)
    blocks = [(k, s, min(n, s + batch)) for k, s in enumerate(range(0, n, batch))]
    if checkpoints is None:
        for _, start, stop in blocks:
            check_cancel(cancelled, "cutting")
            images[start:stop] = sample_block(sky, ra[start:stop], dec[start:stop], start, comps, npix, pix)
            if progress is not None:
                progress(stop, n, "cutouts")
        return
    from szviewer.parallel import InProcessExecutor

    executor = executor if executor is not None else InProcessExecutor()
    checkpoints.make()
    done = checkpoints.done()
    todo = [b for b in blocks if b[0] not in done]
    task = SampleBlockTask(comps, npix, pix, str(checkpoints.folder))
    if progress is not None:
        progress(len(blocks) - len(todo), len(blocks),
                 f"{len(blocks) - len(todo)} blocks sampled before (resumed)" if done else "sampling the maps")
    try:
        executor.map_tiles(task, todo, common=(sky, ra, dec), progress=progress, cancelled=cancelled,
                           what="HEALPix sampling", total=len(blocks), done=len(blocks) - len(todo),
                           label=lambda b, r: f"{b[2]:,} of {n:,} cutouts sampled")
    except Cancelled:
        raise Cancelled("cutting cancelled") from None
    for k, start, stop in blocks:
        check_cancel(cancelled, "cutting")
        try:
            part = np.load(task.path(k))
        except (OSError, ValueError) as exc:
            raise InputError(task.path(k), f"damaged block checkpoint ({exc}); delete it and run again") from None
        if part.shape != (stop - start, len(comps), *images.shape[2:]):
            raise InputError(task.path(k), f"block checkpoint of shape {part.shape}, expected "
                                           f"{(stop - start, len(comps), *images.shape[2:])}; delete it and run again")
        images[start:stop] = part
        if progress is not None and (k % 16 == 15 or stop == n):
            progress(stop, n, "writing the cutout store")
