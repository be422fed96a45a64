"""Job: build a synthetic-sky workspace, tile by tile, with progress, cancel and the sky card."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from szviewer.atomic import atomic_path, write_text
from szviewer.progress import CancelFn, ProgressFn
from szviewer.sky import skycard
from szviewer.sky.synthetic import (
    SimulationSettings,
    apply_instrument_beams,
    make_catalogs,
    simulate_tiles,
    tile_hits,
    tile_noise,
    tiles_for,
)
from szviewer.workspace import Workspace

#: The instrument's description, kept in the workspace as a readable TOML copy.
INSTRUMENT_FILE = "instrument.toml"
#: Disk of a tile's LZF-compressed components per byte of its observed map (measured on the octant: 8.3 GB of
#: tiles beside 4.6 GB of maps), for the free-space check before a sky is made.
COMPONENTS_PER_MAP = 1.9
#: Tiles on which the sky card is measured (each costs a few FFTs).
CARD_TILES = 2


def map_name(tile) -> str:
    """The observed map of a tile, relative to the workspace (:mod:`szviewer.sky.tiledsky`)."""
    return f"maps/tile_{tile.index:04d}.npy"


def save_map(path, observed: np.ndarray) -> None:
    """Write an observed map (nband, ny, nx) float32 as .npy, atomically (read back memory-mapped)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(observed, dtype=np.float32))


def simulate_workspace(out: str | os.PathLike, settings: SimulationSettings, overwrite: bool = False,
                       progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Simulate the sky into a new workspace at ``out``; returns the sky card (also stored)."""
    t0 = time.perf_counter()
    fp = settings.footprint()
    tiles = tiles_for(settings)
    geometry = {"type": "tiles", "footprint": list(fp.box), "area_deg2": fp.area_deg2,
                "tiles": [t.to_dict() for t in tiles]}
    from szviewer.atomic import require_space, require_writable

    require_writable(Path(out).parent if not Path(out).exists() else Path(out))
    map_bytes = 4.0 * len(settings.bands) * sum(t.ny * t.nx for t in tiles)
    require_space(Path(out).parent, (1.0 + COMPONENTS_PER_MAP) * map_bytes, f"the sky of {fp.area_deg2:.0f} deg^2")
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
        ws.path("maps").mkdir(exist_ok=True)
        write_text(ws.path(INSTRUMENT_FILE), settings.instrument.toml_text())

        def write(tile, writer):
            name = f"tiles/tile_{tile.index:04d}.h5"
            hits = tile_hits(settings, tile)
            noise = tile_noise(settings, tile, hits)
            if len(measured) < CARD_TILES:  # the sky before the beams, beside Sehgal's
                measured.append(skycard.measure_tile(writer, srcs, settings.pixel_arcmin))
                measured[-1]["noise"] = skycard.measure_tile_noise(settings.instrument, noise, hits)
            apply_instrument_beams(writer, settings)
            observed = writer.total()
            observed += noise
            del noise
            writer.write(ws.path(name), attrs={"seed": settings.seed})
            save_map(ws.path(map_name(tile)), observed)
            files.append(name)
            files.append(map_name(tile))

        timing = simulate_tiles(settings, halos, srcs, tiles, write, progress, cancelled)
        card = skycard.make_card(measured, halos, fp.area_deg2, settings.bands, settings.m_vir_calibration,
                                 freqs_ghz=settings.freqs_ghz)
        card["instrument"] = settings.instrument.name
        card["seconds"] = round(time.perf_counter() - t0, 2)
        card["seconds_per_100deg2"] = round(card["seconds"] / fp.area_deg2 * 100, 2)
        from szviewer.atomic import write_json

        write_json(ws.path("skycard.json"), card)
        ws.record("sky", files + [INSTRUMENT_FILE], settings=settings.to_dict(),
                  provenance={"generator": "szviewer.sky.synthetic", "seed": settings.seed,
                              "instrument": settings.instrument.name},
                  summary={"tiles": len(tiles), "instrument": settings.instrument.name,
                           "area_deg2": round(fp.area_deg2, 3),
                           "tile_seconds": [round(s, 2) for s in timing["tile_seconds"]]})
        ws.record("skycard", ["skycard.json"])
    return card
