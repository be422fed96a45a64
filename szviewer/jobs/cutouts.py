"""Job: build the DeepSZ cutout store of a workspace."""

from __future__ import annotations

from dataclasses import replace

from szviewer.cutouts.build import CutoutSettings, build_cutouts
from szviewer.cutouts.grid import GridSettings
from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky.tiles import Footprint
from szviewer.workspace import CUTOUTS as STORE
from szviewer.workspace import Workspace


def footprint_of(ws: Workspace) -> Footprint:
    fp = ws.geometry.get("footprint")
    if not fp:
        raise InputError(ws.path("workspace.json"), "geometry has no footprint")
    return Footprint(*fp)


def grid_for(ws: Workspace, settings: CutoutSettings) -> CutoutSettings:
    """The settings with the grid at the sky's pixel size: cutouts stay 8' x 8' (paper section 1.2), so a map of
    0.5' pixels gives 16 x 16 cutouts. Noise settings apply to HEALPix skies only (the others carry their noise)."""
    pix = float(ws.pixel_arcmin)
    g = settings.grid
    if abs(g.pixel_arcmin - pix) > 1e-9:
        npix = max(2, int(round(g.size_arcmin / pix)))
        g = GridSettings(npix=npix, pixel_arcmin=pix, stride_arcmin=g.stride_arcmin)
    return replace(settings, grid=g, add_noise=settings.add_noise and ws.kind == "sehgal")


def make_cutouts(ws: Workspace, settings: CutoutSettings, overwrite: bool = False,
                 progress: ProgressFn | None = None, cancelled: CancelFn | None = None, executor=None) -> dict:
    """Cut the workspace's sky into the DeepSZ set and commit it as the product ``cutouts`` (a rebuilt cutout set
    makes every finder's scores stale).

    A HEALPix sky is sampled in blocks of cutouts, the tasks of ``executor`` (:mod:`szviewer.parallel`; default
    in process), each checkpointed under ``cutouts/.tiles-<key>/`` until the commit, so a re-run after a cancel
    samples only the blocks not yet done; the store is the same bit for bit on any executor."""
    from szviewer import __version__
    from szviewer.parallel.resume import TileCheckpoints

    if not ws.has("sky"):
        raise InputError(ws.root, "workspace has no sky yet (run `szviewer simulate` or `szviewer import`)")
    sky = ws.sky()
    settings = grid_for(ws, settings)
    ckpt = None
    if ws.kind == "sehgal":  # HEALPix: the only sky whose pixels are sampled into the store
        ckpt = TileCheckpoints(ws.root / "cutouts", {
            "product": "cutouts", "version": __version__, "settings": settings.to_dict(), "batch": settings.batch,
            "sky": ws.products["sky"].get("generation"), "halos": ws.products.get("halos", {}).get("generation")},
            ext=".npy")
    with ws.writing("cutouts", overwrite=overwrite) as w:
        summary = build_cutouts(sky, footprint_of(ws), ws.halos(), w.path(STORE), settings,
                                provenance={"workspace_kind": ws.kind}, progress=progress, cancelled=cancelled,
                                executor=executor, checkpoints=ckpt)
        w.settings, w.summary = settings.to_dict(), summary
    if ckpt is not None:
        ckpt.clear_all()
    return summary
