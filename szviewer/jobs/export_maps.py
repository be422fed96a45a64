"""Job: write a synthetic workspace as the products a survey ships, so a survey-style run is tested on known truth.

``export_maps(ws, DIR)`` writes, per tile and per band, what ACT, SPT and Simons Observatory ship and what
``szviewer import --fits`` reads (:mod:`szviewer.sky.fits_maps`):

- ``map_<band>.fits``: the tile's observed map (all components, beamed, plus the instrument's one noise
  realisation: the very pixels the synthetic workspace's cutouts, MF and CNN read) in uK_CMB, float32, on the
  tile's TAN WCS, with cards naming the instrument, band, effective frequency (FREQ, GHz), beam and sky seed;
- ``ivar_<band>.fits``: the inverse variance of the white noise per pixel [1/uK^2] = hits / sigma_pix^2,
  sigma_pix = white depth [uK-arcmin] / pixel [arcmin] (the maps' atmospheric 1/f is not in it, as in ACT's);
- ``beam_<band>.txt``: the beam actually applied, ``ell B_ell`` for ell = 0 up to the map's Nyquist multipole
  (:func:`beam_ell_max`; B_ell = 1 for a beamless instrument, said in its header);
- ``mask.fits`` (one per tile): 1 = use, 0 = masked: the instrument's footprint mask (apodised survey edge,
  holes around bright sources, :func:`szviewer.sky.noise_maps.footprint_mask`) inside the box the tile owns and
  0 outside it, so the import's footprint is the owned box and cutouts near its edge stay on the map;

and once: ``halos.ecsv`` and ``sources.ecsv`` (the truth on the exported maps, units on every halo column) and
``README.txt`` (the files and the exact ``szviewer import`` command(s) that read them back). One tile: the files go
in DIR; several: in ``DIR/tile_NNNN/``. Everything is written in a hidden sibling folder renamed to DIR at the end
(:func:`szviewer.atomic.atomic_dir`).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shlex
import time
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from szviewer import __version__
from szviewer.atomic import atomic_dir
from szviewer.errors import InputError, OutputExistsError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.workspace import Workspace

#: First line of every README.txt this job writes; an existing DIR is replaced (--overwrite) only if it has it.
MARKER = "szviewer export-maps"
README = "README.txt"
HALOS = "halos.ecsv"
SOURCES = "sources.ecsv"
#: Halo columns written, in order: those ``szviewer import --halos`` reads (szviewer.sky.halo_ascii), then the
#: rest of the synthetic truth that has a unit; ``in_footprint`` is left out (the import recomputes it).
HALO_COLUMNS = ("halo_id", "ra", "dec", "z", "m_vir", "r_vir", "m500", "r500", "y_int_arcmin2",
                "m200c", "theta500_arcmin", "y0", "v_r_km_s")


def map_file(band: int) -> str:
    return f"map_{band}.fits"


def ivar_file(band: int) -> str:
    return f"ivar_{band}.fits"


def beam_file(band: int) -> str:
    return f"beam_{band}.txt"


MASK = "mask.fits"


def beam_ell_max(pixel_arcmin: float) -> int:
    """Last multipole of a beam file: the Nyquist multipole of a map axis, pi / pixel [rad], rounded up to 1000
    (43,200 -> 44,000 at 0.25'). Beyond it (the corners of the 2-D FFT grid) a reader extends the table as the
    Gaussian through its last value (:mod:`szviewer.sky.beams`), exact for a Gaussian beam and for none."""
    return int(math.ceil(10800.0 / float(pixel_arcmin) / 1000.0) * 1000)


# ---------------------------------------------------------------------------------------------- checks

def _open(ws):
    """(workspace, sky, settings) of a synthetic workspace; one-line InputError otherwise."""
    from szviewer.sky.synthetic import SimulationSettings

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    if ws.kind != "synthetic":
        raise InputError(ws.root, f"a {ws.kind} workspace: export-maps writes out a synthetic sky (made by "
                                  "`szviewer simulate`), whose instrument and truth it knows")
    entry = ws.products.get("sky")
    if not entry:
        raise InputError(ws.root, "workspace has no sky yet (run `szviewer simulate`)")
    gone = [f for f in entry.get("files", []) if not ws.path(f).exists()]
    if gone:
        raise InputError(ws.path(gone[0]), f"missing ({len(gone)} of the sky's files are): rebuild the workspace "
                                           f"with {ws.rebuild_command()}")
    if not entry.get("settings"):
        raise InputError(ws.path("workspace.json"), "the sky product records no simulation settings")
    sky = ws.sky()  # its own message for a sky without observed maps
    try:
        settings = SimulationSettings.from_dict(entry["settings"])
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(ws.path("workspace.json"), f"unreadable simulation settings ({exc}): rebuild the workspace "
                                                    f"with {ws.rebuild_command()}") from None
    return ws, sky, settings


def _check_out(out: Path, ws: Workspace, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputExistsError(out)
        readme = out / README
        ok = out.is_dir() and not out.is_symlink() and readme.is_file()
        if ok:
            with open(readme, encoding="utf-8", errors="replace") as fh:
                ok = fh.readline().startswith(MARKER)
        if not ok:
            raise OutputExistsError(out, "it is not a folder written by export-maps, so it will not be replaced")
        root = ws.root.resolve()
        if root == out.resolve() or out.resolve() in root.parents:
            raise OutputExistsError(out, f"it holds the workspace {ws.root} being exported")


# ---------------------------------------------------------------------------------------------- pieces

def _pixel_radec(tile) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec [deg] of every pixel centre of a tile, (ny, nx) each."""
    yy, xx = np.mgrid[0:tile.ny, 0:tile.nx]
    ra, dec = tile.pix_to_world(xx.ravel(), yy.ravel())
    return np.asarray(ra).reshape(tile.shape), np.asarray(dec).reshape(tile.shape)


def tile_mask(settings, tile, footprint_box, sources) -> np.ndarray:
    """The tile's mask (ny, nx) float32 in [0, 1]: the instrument's footprint mask of the survey footprint
    (edge apodisation, holes around sources brighter than its cut) inside the tile's owned box, 0 outside."""
    from szviewer.sky.noise_maps import footprint_mask

    inst = settings.instrument
    ra, dec = _pixel_radec(tile)
    holes = sources if inst.hole_flux_mjy > 0 else None
    mask = footprint_mask(inst, footprint_box, ra, dec, holes)
    mask *= tile.owned.contains(ra, dec)
    return mask.astype(np.float32)


def tile_ivar(settings, tile) -> np.ndarray:
    """(nband, ny, nx) float32 inverse variance of the white noise [1/uK^2]: hits / sigma_pix^2."""
    from szviewer.sky.noise_maps import ivar_map
    from szviewer.sky.synthetic import tile_hits

    hits = tile_hits(settings, tile)
    if hits is None:
        hits = np.ones(tile.shape, np.float32)
    return ivar_map(settings.instrument, hits, settings.pixel_arcmin)


def _beam_text(beam) -> tuple[str, str, float]:
    """(BEAMTYPE, description, FWHM or equivalent FWHM [arcmin]) of a beam."""
    if beam.is_table:
        src = f" from {Path(beam.path).name}" if beam.path else ""
        fwhm = beam.fwhm_equivalent_arcmin()
        return "table", f"B_ell table{src} (equivalent Gaussian FWHM {fwhm:.4g} arcmin)", fwhm
    if beam.fwhm_arcmin > 0:
        return "gaussian", f"Gaussian, FWHM {beam.fwhm_arcmin:g} arcmin", float(beam.fwhm_arcmin)
    return "none", "no beam: the instrument applies none, so B_ell = 1 at every ell", 0.0


def _header(tile, settings, band_spec, beam, kind: str) -> fits.Header:
    """FITS header of one image: the tile's TAN WCS and cards naming the instrument, band, frequency, beam, seed."""
    inst = settings.instrument
    h = tile.wcs().to_header()
    if kind == "map":
        h["BUNIT"] = ("uK_CMB", "CMB thermodynamic temperature [uK]")
        h["CONTENT"] = ("observed map", "all components (beamed) + noise")
    elif kind == "ivar":
        h["BUNIT"] = ("1/uK^2", "inverse variance per pixel")
        h["CONTENT"] = ("ivar", "of the white noise: hits / sigma_pix^2")
    else:
        h["CONTENT"] = ("mask", "1 = use, 0 = masked")
    if band_spec is not None:
        btype, _, fwhm = _beam_text(beam)
        h["BAND"] = (int(band_spec.band), "band id [GHz]")
        h["FREQ"] = (float(band_spec.freq_ghz), "effective frequency [GHz] (tSZ spectrum)")
        h["BEAMTYPE"] = (btype, "gaussian, table or none")
        h["BEAMFWHM"] = (round(fwhm, 6), "beam FWHM [arcmin] (0 = none)")
        h["BEAMFILE"] = (beam_file(band_spec.band), "ell B_ell of the beam applied")
        h["WHITE"] = (float(band_spec.white_uk_arcmin), "white depth at unit hits [uK-arcmin]")
        h["ELLKNEE"] = (float(band_spec.ell_knee), "atmospheric 1/f knee (0 = none)")
        h["ALPHAKN"] = (float(band_spec.alpha_knee), "1/f slope")
    h["INSTRUME"] = (inst.name, "szviewer instrument preset")
    h["PIXSIZE"] = (float(settings.pixel_arcmin), "pixel side [arcmin]")
    h["SEED"] = (int(settings.seed), "seed of the synthetic sky")
    h["TILE"] = (int(tile.index), "tile of the synthetic workspace")
    for key, v in zip(("OWNRAMIN", "OWNRAMAX", "OWNDEMIN", "OWNDEMAX"), tile.owned.box, strict=True):
        h[key] = (float(v), "box the tile owns [deg]")
    h["ORIGIN"] = (f"szviewer {__version__}", "szviewer export-maps")
    h["DATE"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return h


def _write_image(path: Path, data: np.ndarray, header: fits.Header) -> None:
    fits.PrimaryHDU(np.ascontiguousarray(data, dtype=np.float32), header=header).writeto(path)


def _on_tiles(tiles, ra, dec) -> np.ndarray:
    """True for positions on the image (margin included) of any of the tiles."""
    keep = np.zeros(np.shape(ra), dtype=bool)
    for t in tiles:
        x, y = t.world_to_pix(ra, dec)
        with np.errstate(invalid="ignore"):
            keep |= np.isfinite(x) & (x >= -0.5) & (x < t.nx - 0.5) & (y >= -0.5) & (y < t.ny - 0.5)
    return keep


def read_sources(ws: Workspace) -> Table | None:
    """The workspace's point-source table (ra, dec, flux_<band> [mJy], ...) or None."""
    if not ws.has("sources"):
        return None
    path = ws.path(ws.products["sources"]["files"][0])
    try:
        return Table.read(path)
    except Exception as exc:  # astropy raises many types for damaged files
        raise InputError(path, f"cannot read the source table: {exc}") from None


def truth_tables(ws: Workspace, tiles, sources: Table | None) -> tuple[Table | None, Table | None]:
    """(halos, sources) on the given tiles' images, ready for ECSV: halos with :data:`HALO_COLUMNS` and a unit on
    every column (dimensionless where it has none); sources with population as text. None where absent."""
    halos = ws.halos()
    if halos is not None:
        keep = _on_tiles(tiles, np.asarray(halos["ra"], float), np.asarray(halos["dec"], float))
        halos = Table([halos[c] for c in HALO_COLUMNS if c in halos.colnames], meta=dict(halos.meta))[keep]
        for c in halos.colnames:
            if halos[c].unit is None:
                halos[c].unit = u.dimensionless_unscaled
    srcs = None
    if sources is not None:
        srcs = sources[_on_tiles(tiles, np.asarray(sources["ra"], float), np.asarray(sources["dec"], float))]
        if "population" in srcs.colnames and srcs["population"].dtype.kind == "S":
            srcs["population"] = np.char.decode(np.asarray(srcs["population"]), "ascii")
    return halos, srcs


# ---------------------------------------------------------------------------------------------- the command

def import_command(folder: Path, bands, freqs, halos: Path | None, out: Path) -> str:
    """The ``szviewer import --fits`` command that reads one exported tile folder back (absolute paths)."""
    q = shlex.quote
    parts = ["szviewer", "import"]
    for b, f in zip(bands, freqs, strict=True):
        parts += ["--fits", q(f"{b}={folder / map_file(b)}"), "--ivar", q(f"{b}={folder / ivar_file(b)}"),
                  "--beam", q(f"{b}={folder / beam_file(b)}"), "--freq", f"{b}={float(f)!r}"]
    parts += ["--mask", q(str(folder / MASK))]
    if halos is not None:
        parts += ["--halos", q(str(halos))]
    return " ".join(parts + ["--out", q(str(out))])


def _readme(ws, settings, tiles, layout, commands, n_halos, n_srcs, ell_max) -> str:
    inst = settings.instrument
    beams = settings.beams()
    where = "in this folder" if len(tiles) == 1 else "in tile_NNNN/, one folder per tile"
    lines = [f"{MARKER}: the synthetic workspace {ws.root.resolve()} as survey products",
             f"instrument {inst.name} ({inst.description})",
             f"sky seed {settings.seed}; {len(tiles)} tile(s); bands {', '.join(map(str, inst.band_ids))} GHz; "
             f"{settings.pixel_arcmin:g}' pixels, TAN projection (CDELT1 < 0: RA increases to the left)", "",
             f"Per tile ({where}):",
             "  map_<band>.fits   the observed map [uK_CMB]: every sky component, beamed, plus the instrument's one",
             "                    noise realisation (the pixels the synthetic workspace's cutouts, MF and CNN read)",
             "  ivar_<band>.fits  inverse variance of the white noise per pixel [1/uK^2] = hits / sigma_pix^2,",
             "                    sigma_pix = white depth / pixel side; the maps' atmospheric 1/f noise is not in it",
             f"  beam_<band>.txt   the beam applied, two columns: ell B_ell, ell = 0..{ell_max}",
             "  mask.fits         1 = use, 0 = masked: 1 inside the box the tile owns, 0 outside"
             + (f"; the survey edge apodised over {inst.edge_apod_arcmin:g}'" if inst.edge_apod_arcmin > 0 else "")
             + (f"; holes of {inst.hole_radius_arcmin:g}' (+{inst.hole_apod_arcmin:g}' ramp) around sources "
                f"> {inst.hole_flux_mjy:g} mJy at {inst.hole_band} GHz" if inst.hole_flux_mjy > 0 else ""),
             "Truth (in this folder):"]
    if n_halos is not None:
        lines.append(f"  {HALOS:<17} {n_halos} halos on the maps: halo_id, ra, dec [deg], z, m_vir, m500, m200c "
                     "[Msun], r_vir, r500 [Mpc], y_int_arcmin2 [arcmin2], theta500_arcmin, y0, v_r_km_s")
    if n_srcs is not None:
        lines.append(f"  {SOURCES:<17} {n_srcs} point sources on the maps: ra, dec [deg], flux_<band> [mJy], "
                     "population, host_halo (halo_id, -1 = none)")
    lines += ["", "band  freq [GHz]  white depth [uK-arcmin]  ell_knee  beam"]
    for b, beam in zip(inst.bands, beams, strict=True):
        lines.append(f"{b.band:<5} {b.freq_ghz:<11g} {b.white_uk_arcmin:<24g} {b.ell_knee:<9g} {_beam_text(beam)[1]}")
    lines += ["", "Read back (one workspace per tile), then run the survey-style pipeline on it:"]
    for tile, cmd in zip(tiles, commands, strict=True):
        if len(tiles) > 1:
            lines.append(f"# tile {tile.index} ({layout[tile.index] or '.'})")
        lines.append(cmd)
    lines += ["szviewer cutouts WS2 && szviewer mf WS2 && szviewer evaluate WS2    # WS2: the --out above", ""]
    return "\n".join(lines)


def export_maps(ws, out: str | os.PathLike, tiles: list[int] | None = None, overwrite: bool = False,
                progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Write the synthetic workspace ``ws`` (a Workspace or its path) as survey products in the folder ``out``.

    ``tiles``: tile indices to export (default every tile). ``out`` must not exist unless ``overwrite`` (then it
    must be an earlier export, replaced only once the new one is complete). Bad input (not a synthetic workspace,
    no observed maps, an unknown tile, an existing ``out``) raises a one-line error before anything is written;
    a cancel or any failure leaves nothing behind. Returns {"out", "tiles", "folders" (tile -> folder relative to
    out, "" for one tile), "bands", "freqs_ghz", "instrument", "halos", "sources", "commands" (the import
    command per tile), "files" (relative paths), "seconds"}.
    """
    t0 = time.perf_counter()
    ws, sky, settings = _open(ws)
    by_index = {t.index: k for k, t in enumerate(sky.tiles)}
    if tiles is None:
        chosen = list(range(len(sky.tiles)))
    else:
        chosen = []
        for i in tiles:
            if int(i) not in by_index:
                raise InputError(ws.root, f"no tile {i}: this workspace has tiles "
                                          f"{min(by_index)}-{max(by_index)} ({len(by_index)})")
            if by_index[int(i)] not in chosen:
                chosen.append(by_index[int(i)])
    out = Path(out)
    _check_out(out, ws, overwrite)
    inst = settings.instrument
    bands = tuple(inst.band_ids)
    if tuple(sky.bands) != bands:
        raise InputError(ws.root, f"the tiles hold bands {list(sky.bands)} but the instrument {inst.name!r} has "
                                  f"{list(bands)}")
    beams = settings.beams()
    ell_max = beam_ell_max(settings.pixel_arcmin)
    box = tuple(ws.geometry["footprint"])
    tile_objs = [sky.tiles[k] for k in chosen]
    all_sources = read_sources(ws)  # holes around every bright source, on the maps or not
    halos, srcs = truth_tables(ws, tile_objs, all_sources)
    layout = {t.index: ("" if len(tile_objs) == 1 else f"tile_{t.index:04d}") for t in tile_objs}

    out.parent.mkdir(parents=True, exist_ok=True)
    final = out.parent.resolve() / out.name
    ws2 = final.parent / f"{final.name}_ws"
    steps = len(tile_objs) * (len(bands) + 1) + 1
    done = 0
    files: list[str] = []

    def step(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps, message)
        check_cancel(cancelled, "export-maps")

    from szviewer.sky.beams import write_beam_file

    check_cancel(cancelled, "export-maps")
    with atomic_dir(out, overwrite=overwrite) as tmp:  # out appears, or is replaced, only once complete
        commands = []
        for k, tile in zip(chosen, tile_objs, strict=True):
            sub = layout[tile.index]
            folder = tmp / sub if sub else tmp
            folder.mkdir(exist_ok=True)
            obs = sky.observed(k)
            ivar = tile_ivar(settings, tile)
            for i, (spec, beam) in enumerate(zip(inst.bands, beams, strict=True)):
                _write_image(folder / map_file(spec.band), obs[i], _header(tile, settings, spec, beam, "map"))
                _write_image(folder / ivar_file(spec.band), ivar[i], _header(tile, settings, spec, beam, "ivar"))
                write_beam_file(folder / beam_file(spec.band), beam, ell_max,
                                header=f"{MARKER}: beam transfer function B_ell of band {spec.band} GHz "
                                       f"(effective {spec.freq_ghz:g} GHz), instrument {inst.name}, sky seed "
                                       f"{settings.seed}\n{_beam_text(beam)[1]}\nell = 0..{ell_max}, normalised "
                                       "to 1 at ell = 0")
                files.extend(f"{sub}/{n}" if sub else n
                             for n in (map_file(spec.band), ivar_file(spec.band), beam_file(spec.band)))
                step(f"tile {tile.index} band {spec.band}")
            del ivar
            _write_image(folder / MASK, tile_mask(settings, tile, box, all_sources),
                         _header(tile, settings, None, None, "mask"))
            files.append(f"{sub}/{MASK}" if sub else MASK)
            step(f"tile {tile.index} mask")
            commands.append(import_command(final / sub if sub else final, bands, inst.freqs_ghz,
                                           None if halos is None else final / HALOS, ws2 / sub if sub else ws2))
        if halos is not None:
            halos.write(tmp / HALOS, format="ascii.ecsv")
            files.append(HALOS)
        if srcs is not None:
            srcs.write(tmp / SOURCES, format="ascii.ecsv")
            files.append(SOURCES)
        text = _readme(ws, settings, tile_objs, layout, commands, None if halos is None else len(halos),
                       None if srcs is None else len(srcs), ell_max)
        (tmp / README).write_text(text, encoding="utf-8")
        files.append(README)
        step("catalogues and README")
    return {"out": str(out), "tiles": [t.index for t in tile_objs], "folders": layout, "bands": list(bands),
            "freqs_ghz": list(inst.freqs_ghz), "instrument": inst.name,
            "halos": None if halos is None else len(halos), "sources": None if srcs is None else len(srcs),
            "commands": commands, "files": files, "seconds": round(time.perf_counter() - t0, 2)}
