"""Job: build a synthetic-sky workspace, tile by tile, with progress, cancel and the sky card."""

from __future__ import annotations

import os
import time

from szviewer.atomic import atomic_path
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky import skycard
from szviewer.sky.synthetic import SimulationSettings, make_catalogs, simulate_tiles, tiles_for
from szviewer.workspace import Workspace

#: Tiles on which the sky card is measured (each costs a few FFTs).
CARD_TILES = 2


def simulate_workspace(out: str | os.PathLike, settings: SimulationSettings, overwrite: bool = False,
                       progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Simulate the sky into a new workspace at ``out``; returns the sky card (also stored)."""
    t0 = time.perf_counter()
    fp = settings.footprint()
    tiles = tiles_for(settings)
    geometry = {"type": "tiles", "footprint": list(fp.box), "area_deg2": fp.area_deg2,
                "tiles": [t.to_dict() for t in tiles]}
    with Workspace.create(out, "synthetic", settings.bands, settings.pixel_arcmin, geometry,
                          overwrite=overwrite) as ws:
        halos, srcs = make_catalogs(settings)
        with atomic_path(ws.path("halos.fits")) as tmp:
            halos.write(tmp, format="fits")
        with atomic_path(ws.path("sources.fits")) as tmp:
            srcs.write(tmp, format="fits")
        ws.record("halos", ["halos.fits"], provenance={"generator": "szviewer.sky.synthetic"},
                  summary={"rows": len(halos)})
        ws.record("sources", ["sources.fits"], summary={"rows": len(srcs)})
        measured: list[dict] = []
        files: list[str] = []
        ws.path("tiles").mkdir(exist_ok=True)

        def write(tile, writer):
            name = f"tiles/tile_{tile.index:04d}.h5"
            if len(measured) < CARD_TILES:
                measured.append(skycard.measure_tile(writer, srcs, settings.pixel_arcmin))
            writer.write(ws.path(name), attrs={"seed": settings.seed})
            files.append(name)

        timing = simulate_tiles(settings, halos, srcs, tiles, write, progress, cancelled)
        card = skycard.make_card(measured, halos, fp.area_deg2, settings.bands, settings.m_vir_calibration)
        card["seconds"] = round(time.perf_counter() - t0, 2)
        card["seconds_per_100deg2"] = round(card["seconds"] / fp.area_deg2 * 100, 2)
        from szviewer.atomic import write_json

        write_json(ws.path("skycard.json"), card)
        ws.record("sky", files, settings=settings.to_dict(),
                  provenance={"generator": "szviewer.sky.synthetic", "seed": settings.seed},
                  summary={"tiles": len(files), "area_deg2": round(fp.area_deg2, 3),
                           "tile_seconds": [round(s, 2) for s in timing["tile_seconds"]]})
        ws.record("skycard", ["skycard.json"])
    return card
