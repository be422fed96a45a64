"""Job: build the DeepSZ cutout store of a workspace."""

from __future__ import annotations

from szviewer.cutouts.build import CutoutSettings, build_cutouts
from szviewer.errors import InputError, OutputExistsError
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky.tiles import Footprint
from szviewer.workspace import CUTOUTS as STORE
from szviewer.workspace import Workspace


def footprint_of(ws: Workspace) -> Footprint:
    fp = ws.geometry.get("footprint")
    if not fp:
        raise InputError(ws.path("workspace.json"), "geometry has no footprint")
    return Footprint(*fp)


def make_cutouts(ws: Workspace, settings: CutoutSettings, overwrite: bool = False,
                 progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Cut the workspace's sky into the DeepSZ set and record it."""
    if not ws.has("sky"):
        raise InputError(ws.root, "workspace has no sky yet (run `szviewer simulate` or `szviewer import`)")
    if ws.path(STORE).exists() and not overwrite:
        raise OutputExistsError(ws.path(STORE), "pass --overwrite to rebuild the cutouts")
    sky = ws.sky()
    if ws.kind == "fits" and settings.add_noise:
        settings.add_noise = False  # real maps already hold their noise
    summary = build_cutouts(sky, footprint_of(ws), ws.halos(), ws.path(STORE), settings,
                            provenance={"workspace_kind": ws.kind}, progress=progress, cancelled=cancelled)
    ws.record("cutouts", [STORE], settings=settings.to_dict(), summary=summary)
    return summary
