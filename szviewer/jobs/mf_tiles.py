"""The matched filter's per-tile tasks on a synthetic workspace (issue 16: any executor,
:mod:`szviewer.parallel`): the filter (:class:`MFTileTask`) and the injection run (:class:`InjectionTileTask`)
per sky tile, each result checkpointed to its own file (:mod:`szviewer.parallel.resume`) so a re-run after a cancel
skips the tiles done.
"""

from __future__ import annotations

import time

import numpy as np
from astropy.table import Table

from szviewer.errors import Cancelled, InputError
from szviewer.jobs.mf_inputs import sources_table, tile_run
from szviewer.progress import CancelFn
from szviewer.workspace import Workspace

#: The workspace a worker process opened last (root, sky generation) -> (ws, sky, sources): a worker runs many
#: tiles of one sky, so it opens the manifest, the tile headers and the source table once.
_OPENED: dict = {}


def _open_synthetic(root: str, sky_generation: int):
    key = (str(root), int(sky_generation))
    if key not in _OPENED:
        _OPENED.clear()
        ws = Workspace(root)
        _OPENED[key] = (ws, ws.sky(), sources_table(ws))
    return _OPENED[key]


def write_tile_table(table: Table, path) -> None:
    """A tile's result table as HDF5 (units, descriptions and meta kept exactly), written atomically."""
    from szviewer.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.write(tmp, format="hdf5", path="table", serialize_meta=True)


def read_tile_table(path) -> Table:
    try:
        return Table.read(path, format="hdf5", path="table")
    except (OSError, KeyError) as exc:
        raise InputError(path, f"damaged tile checkpoint ({exc}); delete it and run again") from None


class TileTask:
    """A picklable per-tile job on a synthetic workspace: opens the workspace lazily in the worker (the driver hands
    its own open workspace to the in-process backend), runs, writes the tile's result to its checkpoint file
    (:mod:`szviewer.parallel.resume`) and returns a small summary."""

    def __init__(self, root, sky_generation: int, settings, noise: dict, folder):
        self.root, self.sky_generation = str(root), int(sky_generation)
        self.settings, self.noise, self.folder = settings, dict(noise), str(folder)
        self._ctx = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ctx"] = None
        return d

    def context(self):
        return self._ctx if self._ctx is not None else _open_synthetic(self.root, self.sky_generation)

    def task_settings(self):
        """The settings with this process's FFT threads (1 in a Dask worker); threads never change a result."""
        from szviewer.parallel import task_threads

        return self.settings.replace(fft_workers=task_threads(self.settings.fft_workers))

    def path(self, k: int):
        from pathlib import Path

        return Path(self.folder) / f"tile_{int(k):04d}.h5"


class MFTileTask(TileTask):
    def __call__(self, k: int, cancelled: CancelFn | None = None) -> dict:
        from szviewer.mf.runner import run_mf

        if self.path(k).is_file():  # done already: a task re-run because its worker died holding the result
            return {"tile": int(k), "detections": len(read_tile_table(self.path(k))), "seconds": 0.0,
                    "cpu_seconds": 0.0, "reused": True}
        ws, sky, srcs = self.context()
        run = tile_run(ws, sky, srcs, self.noise, k)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            cat = run_mf(run.maps, run.wcs, run.pixel_arcmin, self.task_settings(),
                         noise_uk_arcmin=run.noise_uk_arcmin, sources=run.sources, cancel=cancelled, mask=run.mask,
                         ivar=run.ivar)
        except Cancelled:
            raise Cancelled("matched filter cancelled") from None
        tile = run.tile
        cat = cat[tile.owned.contains(np.asarray(cat["ra"]), np.asarray(cat["dec"]))]
        cat["tile"] = np.full(len(cat), tile.index, dtype=np.int32)
        write_tile_table(cat, self.path(k))
        return {"tile": int(tile.index), "detections": len(cat), "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0}


class InjectionTileTask(TileTask):
    """Injections into one tile (issue 12 part 6): the tile's share of ``injection.n``, its own seed stream."""

    injection = None
    share: list = []

    def __call__(self, k: int, cancelled: CancelFn | None = None) -> dict:
        from szviewer.mf.selection import run_injection

        n_k = int(self.share[k])
        if self.path(k).is_file():  # done already: a task re-run because its worker died holding the result
            return {"tile": int(k), "injected": len(read_tile_table(self.path(k))), "seconds": 0.0, "reused": True}
        if n_k <= 0:
            write_tile_table(Table(), self.path(k))
            return {"tile": k, "injected": 0, "seconds": 0.0}
        ws, sky, srcs = self.context()
        run = tile_run(ws, sky, srcs, self.noise, k)
        tile = run.tile
        rng = np.random.default_rng(np.random.SeedSequence(self.injection.seed, spawn_key=(run.index,)))

        def owned(x, y, tile=tile):
            ra, dec = tile.pix_to_world(x, y)
            return tile.owned.contains(np.asarray(ra), np.asarray(dec))

        t0 = time.perf_counter()
        try:
            part = run_injection(run.maps, run.wcs, run.pixel_arcmin, self.task_settings(), self.injection, n_k, rng,
                                 noise_uk_arcmin=run.noise_uk_arcmin, sources=run.sources, mask=run.mask,
                                 ivar=run.ivar, owned=owned, progress=None, cancel=cancelled)
        except Cancelled:
            raise Cancelled("injection run cancelled") from None
        part["map"] = np.full(len(part), tile.index, dtype=np.int32)
        write_tile_table(part, self.path(k))
        return {"tile": int(tile.index), "injected": len(part), "seconds": time.perf_counter() - t0}


def tile_checkpoints(ws: Workspace, product: str, settings, noise: dict, extra: dict | None = None):
    from szviewer import __version__
    from szviewer.parallel.resume import TileCheckpoints

    st = settings.to_dict()
    st.pop("fft_workers", None)  # threads never change a result
    what = {"product": product, "version": __version__, "settings": st, "noise": noise,
            "sky": ws.products["sky"].get("generation"), "sources": ws.products.get("sources", {}).get("generation"),
            **(extra or {})}
    return TileCheckpoints(ws.root / product, what)


def run_tiles(ntiles: int, task: TileTask, ckpt, executor, progress, cancelled, what: str, label) -> list:
    """Run ``task`` on every tile not yet checkpointed, on ``executor``; returns the tiles' summaries (None for
    those done by an earlier run)."""
    from szviewer.parallel import InProcessExecutor

    executor = executor if executor is not None else InProcessExecutor()
    ckpt.make()
    done = ckpt.done()
    todo = [k for k in range(ntiles) if k not in done]
    if progress is not None:
        progress(len(done), ntiles, f"{len(done)} tiles done before (resumed)" if done else what)
    results = executor.map_tiles(task, todo, progress=progress, cancelled=cancelled, what=what, total=ntiles,
                                 done=len(done), label=label, pass_cancel=isinstance(executor, InProcessExecutor))
    out: list = [None] * ntiles
    for k, r in zip(todo, results, strict=True):
        out[k] = r
    return out

