"""Job: build a synthetic-sky workspace, tile by tile (on any executor: :mod:`szviewer.parallel`), with progress,
cancel, resume and the sky card."""

from __future__ import annotations

import json
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
    simulate_tile,
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


def simulate_tile_task(item: tuple[int, object], settings: SimulationSettings, halos, srcs, folder: str) -> dict:
    """Simulate one tile (a task of any executor, :mod:`szviewer.parallel`): its components, beamed, and its observed
    map (components + the tile's noise realisation), written atomically under ``folder``'s ``tiles/`` and ``maps/``;
    for the first :data:`CARD_TILES` tiles also the sky card's measurements. The tile file is written last, with
    its measurements beside it (``card/``), so it is the tile's done marker (:mod:`szviewer.parallel.resume`)."""
    from szviewer.atomic import write_json

    k, tile = item
    t0, c0 = time.perf_counter(), time.process_time()
    folder = Path(folder)
    if _tiles_done(folder, [tile], first=k):  # done already: re-run because its worker died holding the result
        card = folder / "card" / f"tile_{tile.index:04d}.json"
        measured = _int_keys(json.loads(card.read_text("utf-8"))) if k < CARD_TILES else None
        return {"tile": int(tile.index), "seconds": 0.0, "cpu_seconds": 0.0, "measured": measured, "reused": True}
    writer = simulate_tile(settings, tile, halos, srcs, beams=False)
    hits = tile_hits(settings, tile)
    noise = tile_noise(settings, tile, hits)
    measured = None
    if k < CARD_TILES:  # the sky before the beams, beside Sehgal's
        measured = skycard.measure_tile(writer, srcs, settings.pixel_arcmin)
        measured["noise"] = skycard.measure_tile_noise(settings.instrument, noise, hits)
    apply_instrument_beams(writer, settings)
    observed = writer.total()
    observed += noise
    del noise
    save_map(folder / map_name(tile), observed)
    del observed
    if measured is not None:
        write_json(folder / "card" / f"tile_{tile.index:04d}.json", measured)
    writer.write(folder / f"tiles/tile_{tile.index:04d}.h5", attrs={"seed": settings.seed})
    return {"tile": int(tile.index), "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "measured": measured}


def _checkpoint_folder(out: Path, settings: SimulationSettings) -> Path:
    """Where the tiles of a sky being made are kept until the workspace is complete: ``.<WS>.tiles-<key>`` beside
    it (kept on a cancel; a re-run with the same settings skips the tiles in it)."""
    from szviewer import __version__
    from szviewer.parallel.resume import PREFIX, checkpoint_key

    key = checkpoint_key({"job": "simulate", "version": __version__, "settings": settings.to_dict()})
    return out.parent / f".{out.name}{PREFIX}{key}"


def _int_keys(obj):
    """JSON's string keys back to the band numbers they were (the sky card's measurements are keyed by band)."""
    if isinstance(obj, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_int_keys(v) for v in obj]
    return obj


def _tiles_done(folder: Path, tiles, first: int = 0) -> set[int]:
    """Positions (from ``first``) of the tiles whose tile file (written last) is complete in the checkpoint folder."""
    return {k for k, t in enumerate(tiles, start=first) if (folder / f"tiles/tile_{t.index:04d}.h5").is_file()
            and (folder / map_name(t)).is_file() and (k >= CARD_TILES or (folder / f"card/tile_{t.index:04d}.json")
                                                       .is_file())}


def simulate_workspace(out: str | os.PathLike, settings: SimulationSettings, overwrite: bool = False,
                       progress: ProgressFn | None = None, cancelled: CancelFn | None = None,
                       executor=None) -> dict:
    """Simulate the sky into a new workspace at ``out``; returns the sky card (also stored).

    Tiles are tasks of ``executor`` (:mod:`szviewer.parallel`; default in process), bit for bit the same on any;
    they are kept in a checkpoint folder beside ``out`` until the workspace is complete, so a re-run after a cancel
    or a crash skips the tiles already made (:func:`_checkpoint_folder`)."""
    import shutil

    from szviewer.parallel import InProcessExecutor
    from szviewer.workspace import locks

    t0 = time.perf_counter()
    fp = settings.footprint()
    tiles = tiles_for(settings)
    geometry = {"type": "tiles", "footprint": list(fp.box), "area_deg2": fp.area_deg2,
                "tiles": [t.to_dict() for t in tiles]}
    from szviewer.atomic import require_space, require_writable

    out = Path(out)
    require_writable(out.parent if not out.exists() else out)
    map_bytes = 4.0 * len(settings.bands) * sum(t.ny * t.nx for t in tiles)
    ckpt = _checkpoint_folder(out, settings)
    done = _tiles_done(ckpt, tiles)
    left = 1.0 - len(done) / max(1, len(tiles))
    require_space(out.parent, left * (1.0 + COMPONENTS_PER_MAP) * map_bytes, f"the sky of {fp.area_deg2:.0f} deg^2")
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
        write_text(ws.path(INSTRUMENT_FILE), settings.instrument.toml_text())
        for sub in ("tiles", "maps", "card"):
            (ckpt / sub).mkdir(parents=True, exist_ok=True)
        locks.remove(locks.leftovers(ckpt))  # half-written tiles of killed workers
        todo = [(k, t) for k, t in enumerate(tiles) if k not in done]
        executor = executor if executor is not None else InProcessExecutor()
        if progress is not None:
            progress(len(done), len(tiles), f"{len(done)} tiles made before (resumed)" if done else "tiles")
        try:
            results = executor.map_tiles(simulate_tile_task, todo, common=(settings, halos, srcs, str(ckpt)),
                                         progress=progress, cancelled=cancelled, what="simulate tiles",
                                         total=len(tiles), done=len(done), label=lambda item, r: f"tile {r['tile']}")
        except BaseException as exc:
            kept = _tiles_done(ckpt, tiles)
            if not kept:  # nothing worth keeping: leave nothing behind
                shutil.rmtree(ckpt, ignore_errors=True)
            else:  # whole tiles only (each renamed into place when complete), said on the way out
                exc.szviewer_note = (f"{len(kept)} of {len(tiles)} finished tiles kept in {ckpt}: the same command "
                                     "resumes from them")
            raise
        seconds = {k: r["seconds"] for (k, _), r in zip(todo, results, strict=True)}
        measured: list[dict] = []
        for k, tile in enumerate(tiles[:CARD_TILES]):
            r = results[[i for i, _ in todo].index(k)] if k not in done else None
            measured.append(r["measured"] if r is not None else
                            _int_keys(json.loads((ckpt / f"card/tile_{tile.index:04d}.json").read_text("utf-8"))))
        files: list[str] = []
        ws.path("tiles").mkdir(exist_ok=True)
        ws.path("maps").mkdir(exist_ok=True)
        for tile in tiles:  # the checkpointed tiles move into the workspace, which is renamed into place whole
            name = f"tiles/tile_{tile.index:04d}.h5"
            os.replace(ckpt / name, ws.path(name))
            os.replace(ckpt / map_name(tile), ws.path(map_name(tile)))
            files.append(name)
            files.append(map_name(tile))
        card = skycard.make_card(measured, halos, fp.area_deg2, settings.bands, settings.m_vir_calibration,
                                 freqs_ghz=settings.freqs_ghz)
        card["instrument"] = settings.instrument.name
        card["seconds"] = round(time.perf_counter() - t0, 2)
        card["seconds_per_100deg2"] = round(card["seconds"] / fp.area_deg2 * 100, 2)
        from szviewer.atomic import write_json

        write_json(ws.path("skycard.json"), card)
        summary = {"tiles": len(tiles), "instrument": settings.instrument.name, "area_deg2": round(fp.area_deg2, 3),
                   "tile_seconds": [round(seconds[k], 2) if k in seconds else None for k in range(len(tiles))]}
        if done:
            summary["tiles_resumed"] = len(done)
        ws.record("sky", files + [INSTRUMENT_FILE], settings=settings.to_dict(),
                  provenance={"generator": "szviewer.sky.synthetic", "seed": settings.seed,
                              "instrument": settings.instrument.name}, summary=summary)
        ws.record("skycard", ["skycard.json"])
    shutil.rmtree(ckpt, ignore_errors=True)
    return card
