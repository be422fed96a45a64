"""Job: dense CNN scoring of a tiled workspace, tile by tile on any executor (:mod:`szviewer.parallel`, issue 16).

Each tile is one task (:class:`DenseTileTask`): its map at the chosen component level, every 32 x 32 window on a
fine grid scored (:mod:`szviewer.cnn.dense`: fully convolutionally by default, or window by window), the peaks
that fall in the tile's own area, and the cell-max probability of the tile's cutouts. A task writes its result,
complete, to the product's checkpoint folder (``cnn_dense/.tiles-<key>/tile_NNNN.npz``, atomically:
:mod:`szviewer.parallel.resume`), so a re-run after a cancel, a kill or a lost worker skips the tiles done; the
driver alone reads the tiles back in tile order, writes the catalogue and the score column and commits the
product. The products are the same bit for bit in process and on a Dask cluster (tested, with a small network),
but oneDNN splits a convolution's sums by thread, so with the DeepSZ network the raw logits of a tile scored on
1 and on 2 torch threads differ by up to 4e-6 (measured for 'fcn' at 1', 2' and 4' and for 'distilled'), far
inside the 0.01 probability tolerance; a peak exactly on the threshold could flip between executors.

A worker loads the model and its fully convolutional plan once per model file and keeps them (:data:`_OPENED`).
torch is imported only inside the functions.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from szviewer.errors import Cancelled, InputError
from szviewer.evaluate.cnn_scores import edge_effect
from szviewer.jobs.cnn import _model_inputs, check_model_fits, model_for, resolve_device
from szviewer.jobs.mf_inputs import sources_table, tile_footprint
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky.tiledsky import window_origin
from szviewer.workspace import Workspace
from szviewer.workspace.products import file_signature

DENSE_CANDIDATES = "dense_candidates.fits"  # in the product cnn_dense
DENSE_METHODS = ("fcn", "distilled", "windowed")
#: Columns of the CNN catalogue, in order.
CANDIDATE_COLUMNS = ("ra", "dec", "prob", "tile", "x", "y", "pos_err_arcmin", "logit", "flags")
#: Flag bit of a CNN candidate whose window reaches into the instrument's mask or its apodisation (the MF's bit 2,
#: :data:`szviewer.mf.catalog.FLAG_NEAR_MASK`).
FLAG_NEAR_MASK = 2


def dense_grid_pix(ws: Workspace, method: str = "fcn", resolution_arcmin: float = 1.0,
                   stride_arcmin: float = 2.0, total_stride: int = 16, stage1_stride: int = 4) -> int:
    """The dense grid in pixels for these settings, or a one-line InputError (checked before any scoring).

    ``total_stride`` and ``stage1_stride``: the model's (:class:`szviewer.cnn.settings.NetConfig`; the paper
    network's 16 and 4 until the model is loaded)."""
    if ws.kind != "synthetic":
        raise InputError(ws.root, "dense scoring works on tiled (synthetic) workspaces only")
    if method not in DENSE_METHODS:
        raise InputError(None, f"dense method {method!r}: expected one of {', '.join(DENSE_METHODS)}")
    pix = float(ws.geometry["tiles"][0]["pixel_arcmin"])
    if method == "windowed":
        if not (math.isfinite(stride_arcmin) and stride_arcmin > 0):
            raise InputError(None, f"--stride-arcmin {stride_arcmin}: must be a positive, finite number of arcmin")
        return max(1, int(round(stride_arcmin / pix)))
    if method == "distilled":  # the fine head predicts on the first stage's grid (szviewer.cnn.finehead)
        if not math.isclose(resolution_arcmin, stage1_stride * pix, rel_tol=1e-6):
            raise InputError(None, f"--resolution-arcmin {resolution_arcmin:g}: the distilled fine head gives a "
                                   f"{stage1_stride * pix:g}' grid only at this sky's {pix:g}' pixels "
                                   "(the exact pass: any)")
        return stage1_stride
    ok = [s for s in (1, 2, 4, 8, 16) if s <= total_stride]  # szviewer.cnn.fcn.STRIDES (no torch import here)
    step = resolution_arcmin / pix if math.isfinite(resolution_arcmin) and resolution_arcmin > 0 else -1.0
    if int(round(step)) not in ok or abs(step - round(step)) > 1e-6:
        raise InputError(None, f"--resolution-arcmin {resolution_arcmin:g}: the fully convolutional grid must be "
                               f"{', '.join(f'{s * pix:g}' for s in ok)} arcmin at this sky's {pix:g}' pixels")
    return int(round(step))


def check_fine_head(model_path, model=None) -> Path:
    """The fine head beside the model at ``model_path`` (:func:`szviewer.cnn.finehead.head_path`) for the
    'distilled' method, or a one-line InputError naming it (missing, damaged, from another model)."""
    from szviewer.cnn.finehead import head_path, load_head
    from szviewer.cnn.modelfile import load_model

    hp = head_path(model_path)
    if not hp.is_file():
        raise InputError(hp, "no fine head for this model: make one with scripts/train_fine_head.py, or score "
                             "with the exact pass (no --distilled)")
    load_head(hp, model if model is not None else load_model(model_path))
    return hp


def level_maps(sky, k: int, components: tuple[str, ...]) -> np.ndarray:
    """Tile ``k`` of a tiled sky at a component level with the instrument noise, (nband, ny, nx) float32: the
    observed map itself for every component, else the level's components plus (observed - all components),
    the same pixels :class:`szviewer.cutouts.pixels.TileWindows` gives the cutouts."""
    if set(components) == set(sky.components):
        return sky.tile_maps(k)
    maps = sky.tile_maps(k, tuple(c for c in sky.components if c in components))
    maps += sky.tile_maps(k) - sky.tile_maps(k, tuple(sky.components))
    return maps


def near_mask_flags(footprint: np.ndarray | None, x: np.ndarray, y: np.ndarray, npix: int) -> np.ndarray:
    """:data:`FLAG_NEAR_MASK` for each candidate at tile pixel (x, y) whose ``npix`` x ``npix`` window (the cutout
    the network saw there, its origin rounded as :meth:`TiledSky.window_origins` does) holds a pixel of the
    ``footprint`` mask below 1 (masked or apodised), else 0; all 0 without a mask. A window reaching past the
    tile counts as masked."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = np.zeros(x.size, np.int32)
    if footprint is None or x.size == 0:
        return out
    ny, nx = footprint.shape
    tapered = np.zeros((ny + 1, nx + 1), np.int64)  # summed-area table of the pixels with mask < 1
    tapered[1:, 1:] = np.cumsum(np.cumsum(footprint < 1, axis=0), axis=1)
    x0, y0 = window_origin(x, npix), window_origin(y, npix)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + npix <= nx) & (y0 + npix <= ny)
    a0, b0 = np.clip(y0, 0, ny), np.clip(x0, 0, nx)
    a1, b1 = np.clip(y0 + npix, 0, ny), np.clip(x0 + npix, 0, nx)
    count = tapered[a1, b1] - tapered[a0, b1] - tapered[a1, b0] + tapered[a0, b0]
    out[(count > 0) | ~inside] = FLAG_NEAR_MASK
    return out


# --------------------------------------------------------------------------- the tile task (any executor)

#: What a worker process opened last: (root, sky generation, model hash, device, method, step) -> context.
_OPENED: dict = {}


class DenseTileTask:
    """Dense scoring of one tile, picklable: a worker opens the sky, the cutout positions and the model lazily and
    once (the driver hands the in-process backend its own, ``_ctx``); the result goes to ``folder/tile_NNNN.npz``
    and a small summary comes back."""

    def __init__(self, root, sky_generation: int, model_path, model_sha: str, device: str, method: str, step: int,
                 threshold: float, precision: str, subpixel: str, components: tuple[str, ...], folder):
        self.root, self.sky_generation = str(root), int(sky_generation)
        self.model_path, self.model_sha, self.device = str(model_path), model_sha, device
        self.method, self.step, self.threshold = method, int(step), float(threshold)
        self.precision, self.subpixel, self.components = precision, subpixel, tuple(components)
        self.folder = str(folder)
        self._ctx = None
        self._progress: ProgressFn | None = None  # in process only: progress within a tile

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ctx"] = d["_progress"] = None
        return d

    def path(self, k: int) -> Path:
        return Path(self.folder) / f"tile_{int(k):04d}.npz"

    def open(self, ws: Workspace | None = None, model=None) -> dict:
        """The sky, the cutouts' positions and cell size, the model and (for 'fcn') its plan (a ValueError when
        the network cannot be applied fully convolutionally)."""
        from szviewer.cnn.modelfile import load_model

        ws = ws if ws is not None else Workspace(self.root)
        with ws.cutout_store() as store:
            table = store.table
            ctx = {"ra": np.asarray(table["ra"], float), "dec": np.asarray(table["dec"], float),
                   "tile": np.asarray(table["tile"]), "pix": float(store.pixel_arcmin),
                   "half_cell": 0.5 * float(store.attrs().get("stride_arcmin", 6.0)) / float(store.pixel_arcmin)}
        ctx["sky"] = ws.sky()
        ctx["ws"], ctx["sources"] = ws, sources_table(ws)
        ctx["model"] = model = model if model is not None else load_model(self.model_path, device=self.device)
        ctx["plan"] = None
        if self.method == "distilled":
            from szviewer.cnn.finehead import FineHeadPlan, head_path, load_head

            ctx["plan"] = FineHeadPlan(model.net, load_head(head_path(self.model_path), model)[0], device=self.device)
        if self.method == "fcn":
            from szviewer.cnn.fcn import FCNPlan

            ctx["plan"] = FCNPlan(model.net, self.step, device=self.device)
        return ctx

    def context(self) -> dict:
        if self._ctx is not None:
            return self._ctx
        key = (self.root, self.sky_generation, self.model_sha, self.device, self.method, self.step)
        if key not in _OPENED:
            _OPENED.clear()
            _OPENED[key] = self.open()
        return _OPENED[key]

    def __call__(self, k: int, cancelled: CancelFn | None = None) -> dict:
        from szviewer.atomic import atomic_path
        from szviewer.cnn.dense import cell_max, score_tile, score_tile_fcn
        from szviewer.parallel import task_threads

        if self.path(k).is_file():  # done already: a task re-run because its worker died holding the result
            with np.load(self.path(k)) as z:
                return {"tile": int(k), "candidates": int(z["ra"].size), "windows": int(z["windows"]),
                        "seconds": 0.0, "reused": True}
        threads = task_threads(0)
        if threads:  # in a Dask worker: its thread budget (threads never change a score)
            import torch

            torch.set_num_threads(threads)
        ctx = self.context()
        sky, model, pix = ctx["sky"], ctx["model"], ctx["pix"]
        t0 = time.perf_counter()
        maps = level_maps(sky, k, self.components)
        try:
            if ctx["plan"] is not None:
                res = score_tile_fcn(maps, model, threshold=self.threshold, device=self.device, pixel_arcmin=pix,
                                     subpixel=self.subpixel, plan=ctx["plan"], progress=self._progress,
                                     cancelled=cancelled)
            else:
                res = score_tile(maps, model, stride_pix=self.step, threshold=self.threshold,
                                 precision=self.precision, device=self.device, pixel_arcmin=pix,
                                 subpixel=self.subpixel, progress=self._progress, cancelled=cancelled)
        except Cancelled:
            raise Cancelled("dense CNN scoring cancelled") from None
        del maps
        tile = sky.tiles[k]
        ra, dec = tile.pix_to_world(res["peaks_x"], res["peaks_y"])
        own = tile.owned.contains(ra, dec)  # a peak in the margin belongs to the neighbouring tile
        out = {name: np.asarray(v, dtype=float)[own] for name, v in
               (("ra", ra), ("dec", dec), ("prob", res["peaks_prob"]), ("x", res["peaks_x"]), ("y", res["peaks_y"]),
                ("pos_err_arcmin", res["peaks_err_arcmin"]), ("logit", res["peaks_logit"]))}
        footprint = tile_footprint(ctx["ws"], sky, k, ctx["sources"]) if out["x"].size else None
        out["flags"] = near_mask_flags(footprint, out["x"], out["y"], model.config.npix)
        sel = np.nonzero(ctx["tile"] == k)[0]
        cells = np.zeros(0)
        if sel.size:
            cx, cy = tile.world_to_pix(ctx["ra"][sel], ctx["dec"][sel])
            cells = cell_max(res["prob"], res["xs"], res["ys"], cx, cy, ctx["half_cell"])
        windows = int(res["prob"].size)
        with atomic_path(self.path(k)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, sel=sel.astype(np.int64), cell_prob=cells, windows=np.int64(windows), **out)
        return {"tile": int(k), "candidates": int(own.sum()), "windows": windows,
                "seconds": time.perf_counter() - t0}


def read_tile_result(path) -> dict:
    try:
        with np.load(path) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"damaged tile checkpoint ({exc}); delete it and run again") from None


# --------------------------------------------------------------------------- the job


def dense_job(ws: Workspace, model_path: str | os.PathLike | None = None, level: str = "all",
              stride_arcmin: float = 2.0, threshold: float = 0.5, tiles: list[int] | None = None,
              device: str = "auto", precision: str = "auto", progress: ProgressFn | None = None,
              cancelled: CancelFn | None = None, overwrite: bool = False, method: str = "fcn",
              resolution_arcmin: float = 1.0, subpixel: str = "centroid", executor=None) -> dict:
    """Dense CNN scoring of a synthetic (tiled) workspace: a probability map per tile and the CNN candidates.

    For each tile (or the listed ``tiles``) take the tile's observed map (for a component level: the sum of the
    level's components plus the observed map's noise, as the cutout store reads them) and score 32 x 32 windows:

    - ``method='fcn'`` (the default): the network applied fully convolutionally (:mod:`szviewer.cnn.fcn`) on a
      grid of ``resolution_arcmin`` (1' by default; 0.25', 0.5', 1', 2' or 4' at the paper's 0.25' pixels), fp32,
      every window with its convolutions padded by the map's own pixels (context padding);
    - ``method='distilled'``: the same network once at its 4' stride and the model's distilled fine head
      (:mod:`szviewer.cnn.finehead`, ``<model>.finehead.pt``) for the 1' map (1' only at 0.25' pixels);
    - ``method='windowed'`` (the reference, paper section 3.4.2's suggestion): every window scored on its own
      (zero padding at its border) on a ``stride_arcmin`` grid, at ``precision``.
    - ``method='auto'``: 'fcn' for a model with fixed input scaling, else 'windowed' (a per-window scaling such as
      act-dr6's detrend depends on the whole window, so it has no fully convolutional form).

    Platt-calibrate, find peaks >= ``threshold`` and place each at its sub-pixel centre
    (:func:`szviewer.cnn.dense.subpixel_peaks`, ``subpixel``) with a position error
    (:func:`szviewer.cnn.dense.position_error_arcmin`). Writes ``dense_candidates.fits`` (ra, dec [deg], prob,
    tile, x, y [tile pixels, fractional], pos_err_arcmin [1 sigma per coordinate], logit [Platt logit
    a z + b], flags [:data:`FLAG_NEAR_MASK`: the window reaches into the instrument's mask]; the CNN catalogue)
    and the score column ``cnn_dense_prob`` (per cutout: the largest probability among windows centred in its
    central cell; NaN for cutouts of tiles not scored) as the product ``cnn_dense``,
    and returns a summary with the edge-effect measurement (:func:`edge_effect`) when ``cnn_prob`` is already in
    the score table. Tiles are tasks of ``executor`` (default in process), each checkpointed, so a re-run after a
    cancel skips the tiles done; the products are the same on any executor up to oneDNN's thread-count rounding
    (module docstring).
    """
    from astropy.table import Table

    from szviewer import __version__
    from szviewer.cnn.modelfile import load_model
    from szviewer.parallel import InProcessExecutor
    from szviewer.parallel.resume import TileCheckpoints

    if method != "auto":  # checked before the model is read; 'auto' once it is
        dense_grid_pix(ws, method, resolution_arcmin, stride_arcmin)
    t0 = time.perf_counter()
    ws.check_replace("cnn_dense", overwrite)
    path = model_for(ws, model_path)
    inputs, external = _model_inputs(ws, path)
    inputs = (*inputs, "sky")
    started = ws.generations("cnn_dense", inputs)
    dev = resolve_device(device)
    model = load_model(path, device=dev)
    if method == "auto":
        method = "fcn" if model.config.per_pixel_scaling else "windowed"
    sky = ws.sky()
    with ws.cutout_store() as store:
        table = store.table
        if level not in store.levels:
            raise InputError(store.path, f"level {level!r} is not in the cutout store (has {', '.join(store.levels)})")
        comps = tuple(store.levels[level])
        pix = float(store.pixel_arcmin)
        check_model_fits(model, store, path)
    ids = np.asarray(table["id"])
    step = dense_grid_pix(ws, method, resolution_arcmin, stride_arcmin, model.config.total_stride,
                          model.config.stage1_stride)
    grid_arcmin = step * pix
    todo = list(range(len(sky.tiles))) if tiles is None else sorted({int(k) for k in tiles})
    sha = file_signature(path)["sha256"]  # a checkpoint made with another model is never reused
    if method == "distilled":  # ... or with another fine head
        hp = check_fine_head(path, model)
        external = {**external, "fine_head": hp}
        sha = f"{sha}+{file_signature(hp)['sha256']}"
    task_precision = precision if method == "windowed" else "fp32"
    ckpt = TileCheckpoints(ws.root / "cnn_dense", {
        "product": "cnn_dense", "version": __version__, "model": sha, "device": dev, "method": method,
        "step": step, "threshold": threshold, "precision": task_precision, "subpixel": subpixel, "level": level,
        "sky": ws.products["sky"].get("generation"), "cutouts": ws.products["cutouts"].get("generation"),
        "sources": ws.products.get("sources", {}).get("generation")},
        ext=".npz")
    task = DenseTileTask(ws.root, ws.products["sky"].get("generation", 0), path, sha, dev, method, step, threshold,
                         task_precision, subpixel, comps, ckpt.folder)
    executor = executor if executor is not None else InProcessExecutor()
    in_process = isinstance(executor, InProcessExecutor)
    try:
        if in_process:
            task._ctx = task.open(ws, model)
        elif method == "fcn":  # the same check the workers' plans make, before any task is sent
            from szviewer.cnn.fcn import FCNPlan

            FCNPlan(model.net, step, device=dev)
    except ValueError as exc:
        raise InputError(path, f"{exc}; pass --windowed") from None
    # the product lock for the whole job; a cancel discards the generation folder, the checkpoints stay
    with ws.writing("cnn_dense", inputs=inputs, overwrite=overwrite, external=external, started=started) as w:
        ckpt.make()
        done = ckpt.done()
        run = [k for k in todo if k not in done]
        n_before = len(todo) - len(run)
        if in_process and progress is not None:  # progress within each tile: one bar over rows of windows
            state = {"n": n_before}

            def within(d, t, msg):
                progress(state["n"] * t + d, len(todo) * t, f"tile {run[state['n'] - n_before]}: {msg}")

            task._progress = within

            def tile_done(n, total_, msg):
                state["n"] = n
        else:
            tile_done = progress
        if progress is not None:
            progress(n_before, len(todo), f"{n_before} tiles done before (resumed)" if n_before else "dense CNN tiles")
        results = executor.map_tiles(task, run, progress=tile_done, cancelled=cancelled, what="dense CNN tiles",
                                     total=len(todo), done=n_before, pass_cancel=in_process,
                                     label=lambda k, r: f"tile {k}: {r['candidates']} candidates")
        dense_prob = np.full(len(table), np.nan)
        cand: dict[str, list] = {c: [] for c in CANDIDATE_COLUMNS}
        windows = 0
        for k in todo:
            part = read_tile_result(ckpt.path(k))
            windows += int(part["windows"])
            for c in CANDIDATE_COLUMNS:
                if c != "tile":
                    cand[c].append(part[c].astype(np.int32) if c == "flags" else part[c])
            cand["tile"].append(np.full(part["ra"].size, k, dtype=np.int32))
            dense_prob[part["sel"]] = part["cell_prob"]
        cat = Table({c: np.concatenate(cand[c]) if cand[c] else
                     np.zeros(0, np.int32 if c in ("tile", "flags") else float) for c in CANDIDATE_COLUMNS})
        cat["flags"].description = f"bit {FLAG_NEAR_MASK}: the window reaches into the mask or its apodisation"
        for c, unit in (("ra", "deg"), ("dec", "deg"), ("x", "pix"), ("y", "pix"), ("pos_err_arcmin", "arcmin")):
            cat[c].unit = unit
        cat.meta["MODEL"] = str(path)[-60:]
        cat.meta["METHOD"] = method
        cat.meta["GRID"] = (grid_arcmin, "arcmin between scored window centres")
        cat.meta["STRIDE"] = grid_arcmin
        cat.meta["THRESH"] = threshold
        cat.meta["SUBPIX"] = subpixel
        cat.meta["PLATT_A"], cat.meta["PLATT_B"] = model.platt.a, model.platt.b
        seconds = time.perf_counter() - t0
        summary = {"model": str(path), "method": method, "tiles": todo, "grid_arcmin": grid_arcmin,
                   "stride_arcmin": grid_arcmin, "threshold": threshold, "windows": int(windows),
                   "candidates": len(cat), "seconds": round(seconds, 1), "workers": executor.nworkers}
        if n_before:
            summary["tiles_resumed"] = n_before
        task_s = [r["seconds"] for r in results if not r.get("reused")]
        if task_s:
            summary["tile_task_seconds"] = round(float(np.sum(task_s)), 2)
        area = ws.geometry.get("area_deg2")
        if tiles is None and area:
            summary["seconds_per_deg2"] = round(seconds / float(area), 3)
        scores = ws.scores(ids)
        if "cnn_prob" in scores:
            label = f"cnn_dense_prob ({grid_arcmin:g}' {method}, cell max)"
            summary["edge_effect"] = edge_effect(table, {"cnn_prob (DeepSZ grid)": scores["cnn_prob"],
                                                         label: dense_prob})
        settings = {"model": str(path), "level": level, "method": method, "grid_arcmin": grid_arcmin,
                    "threshold": threshold, "subpixel": subpixel, "tiles": todo}
        cat.write(w.path(Path(DENSE_CANDIDATES).name), format="fits")  # the CNN catalogue and the scores: one commit
        w.write_scores(ids, {"cnn_dense_prob": dense_prob},
                       meta={"model": str(path), "method": method, "grid_arcmin": grid_arcmin,
                             "stride_arcmin": grid_arcmin, "level": level,
                             "missing": "NaN: the cutout's tile was not scored"})
        w.settings = settings
        w.summary = summary
    ckpt.clear_all()
    return summary
