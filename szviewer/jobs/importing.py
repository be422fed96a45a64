"""Job: make a workspace from real or simulated maps: Sehgal, Websky or AGORA HEALPix skies, or per-band flat-sky
FITS (SCIENCE.md sections 1 and 8).

A HEALPix sky is referenced where it lies (memory-mapped, never copied; only Websky's lensed CMB, which ships as
alms, is synthesised once into the workspace). Its workspace has kind 'sehgal' (a HEALPix sky, cut with white
noise per HEALPix pixel) and a sky product whose provenance ``kind`` says which simulation it is
('sehgal_healpix', 'websky_healpix', 'agora_healpix'); :func:`szviewer.sky.healpix.open_recorded` reopens the
latter two.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from szviewer.atomic import atomic_path
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import BANDS_GHZ
from szviewer.sky.tiles import Footprint
from szviewer.workspace import Workspace

#: Where an import caches the Websky lensed CMB, relative to the workspace.
WEBSKY_CMB = "sky/websky_lensed_cmb.fits"
#: The cutouts' pixel [arcmin] the import checks the maps against (the paper's 0.25').
CUTOUT_PIXEL_ARCMIN = 0.25


def _write_halos(ws: Workspace, halos, source: str) -> None:
    with atomic_path(ws.path("halos.fits")) as tmp:
        halos.write(tmp, format="fits")
    ws.record("halos", ["halos.fits"], provenance={"source": source}, summary={"rows": len(halos)})


def import_sehgal(directory: str | os.PathLike, out: str | os.PathLike, halo_file: str | None = None,
                  overwrite: bool = False, region: Footprint | None = None) -> dict:
    """Sehgal et al. 2010 HEALPix maps (referenced, memory-mapped, never copied) and halos in the octant.

    ``region`` restricts the workspace to part of the octant (RA 0-90, Dec 0-90), where the halos are unique.
    """
    from szviewer.sky.halo_ascii import read_halo_catalog, restrict_to_octant
    from szviewer.sky.healpix import coarse_pixel_note
    from szviewer.sky.sehgal import open_sehgal_dir

    directory = Path(directory)
    sky = open_sehgal_dir(directory)
    if halo_file is None:
        for name in ("halo_sz.ascii", "halo_nbody.binary", "halo_nbody.ascii"):
            if (directory / name).exists():
                halo_file = str(directory / name)
                break
    note = coarse_pixel_note(int(sky.nside), CUTOUT_PIXEL_ARCMIN)
    fp = region or Footprint.octant()
    if fp.ra_min < 0 or fp.ra_max > 90 or fp.dec_min < 0 or fp.dec_max > 90:
        raise ValueError(f"region {fp.box} leaves the octant RA 0-90, Dec 0-90 where Sehgal's halos are unique")
    geometry = {"type": "healpix", "nside": int(sky.nside), "footprint": list(fp.box), "area_deg2": fp.area_deg2}
    with Workspace.create(out, "sehgal", BANDS_GHZ, 0.25, geometry, overwrite=overwrite) as ws:
        prov = sky.describe()
        prov["directory"] = str(directory.resolve())
        n_halos = 0
        if halo_file is not None:
            halos = restrict_to_octant(read_halo_catalog(halo_file))
            halos = halos[fp.expanded(0.5).contains(np.asarray(halos["ra"]), np.asarray(halos["dec"]))]
            n_halos = len(halos)
            _write_halos(ws, halos, str(Path(halo_file).resolve()))
        summary = {"components": list(sky.components), "nside": int(sky.nside), "halos": n_halos}
        if note:
            summary["warning"] = note
        ws.record("sky", [], provenance=prov, summary=summary)
    return summary


def _healpix_region(region: Footprint | None) -> Footprint:
    fp = region or Footprint.octant()
    if fp.ra_max - fp.ra_min > 360:
        raise ValueError(f"region {fp.box} is wider than the sky")
    return fp


def _sim_halos(halo_file, default, reader, fp: Footprint, mass_floor: float, progress, cancelled):
    """The halo table of a simulation, cut to the footprint expanded by 0.5 deg, and where it came from:
    ``halo_file`` (a Websky ``.pksc``, an AGORA ``.npz`` shell, or any table :func:`read_halo_table` reads), else
    ``default`` (a path or a list of paths, None or empty for none) read by ``reader``."""
    from szviewer.sky.halo_ascii import read_halo_table

    region = fp.expanded(0.5)
    if halo_file is not None:
        path = Path(halo_file)
        name = path.name.lower()
        if name.endswith(".pksc"):
            from szviewer.sky.websky_halos import read_pksc

            halos = read_pksc(path, mass_floor, region, progress=progress, cancelled=cancelled)
        elif name.endswith(".npz"):
            from szviewer.sky.agora import read_agora_halos

            halos = read_agora_halos([path], mass_floor, region, progress=progress, cancelled=cancelled)
        else:
            halos = read_halo_table(path)
            halos = halos[region.contains(np.asarray(halos["ra"]), np.asarray(halos["dec"]))]
        return halos, str(path.resolve())
    if not default:
        return None, None
    halos = reader(default, mass_floor, region, progress=progress, cancelled=cancelled)
    where = default if isinstance(default, (str, os.PathLike)) else default[0].parent
    return halos, str(Path(where).resolve())


def _record_sim(ws: Workspace, sky, files: list[str], halos, halo_source, extra_summary: dict) -> dict:
    """Record the sky (and halos) of a simulated HEALPix sky; paths inside the workspace are kept relative."""
    prov = sky.describe()
    tmp_root = str(ws.root.resolve())
    for f in prov["files"]:
        if f["path"].startswith(tmp_root + os.sep):
            f["path"] = os.path.relpath(f["path"], tmp_root)
    n_halos = 0
    if halos is not None:
        n_halos = len(halos)
        _write_halos(ws, halos, halo_source)
    notes = sky.coarse_notes(CUTOUT_PIXEL_ARCMIN)
    summary = {"simulation": sky.simulation, "components": list(sky.components), "nside": int(sky.nside),
               "nsides": sorted({int(v) for v in sky.nsides.values()}), "halos": n_halos, **extra_summary,
               "recipes": prov["recipes"]}
    if notes:
        summary["warning"] = "; ".join(notes)
    ws.record("sky", files, provenance=prov, summary=summary)
    return summary


def import_websky(directory: str | os.PathLike, out: str | os.PathLike, halo_file: str | None = None,
                  overwrite: bool = False, region: Footprint | None = None, cib: str = "interp",
                  mass_floor: float | None = None, cmb_alm: str | os.PathLike | None = None,
                  progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """A Websky folder (:mod:`szviewer.sky.websky`): maps referenced where they are, the lensed CMB synthesised once
    from its alms at the maps' Nside into the workspace (``sky/websky_lensed_cmb.fits``; an ``--overwrite`` of a
    workspace that has it from the same alms copies it instead), and the halos of ``halos.pksc`` (or
    ``halo_file``) down to ``mass_floor`` (M200m, default 1e14 Msun) inside the region.

    ``region``: the footprint of the cutouts, any RA/Dec box (default the octant RA 0-90, Dec 0-90; Websky's halos
    are unique over the whole sky). ``cib``: 'interp' or 'nearest' (:func:`szviewer.sky.healpix_recipes.band_parts`).
    Every map is checked before the workspace is made. Returns the summary (components, Nside, halos, how each
    band was made, and a ``warning`` when the maps are coarser than the cutouts' pixels).
    """
    from szviewer.sky.websky import find_websky_files, open_websky_dir
    from szviewer.sky.websky_cmb import synthesise_cmb
    from szviewer.sky.websky_halos import DEFAULT_MASS_FLOOR, read_pksc

    directory = Path(directory)
    fp = _healpix_region(region)
    floor = DEFAULT_MASS_FLOOR if mass_floor is None else float(mass_floor)
    sel = find_websky_files(directory, cmb_alm=cmb_alm)
    sky0 = open_websky_dir(directory, None, cib, sel)  # checks every map before anything is written
    nside = int(sky0.nside)
    sky0.close()
    check_cancel(cancelled, "importing")

    halos, halo_source = _sim_halos(halo_file, sel.path(sel.halos) if sel.halos else None, read_pksc, fp, floor,
                                    progress, cancelled)
    reuse = None
    if overwrite and (Path(out) / WEBSKY_CMB).is_file():
        reuse = Path(out) / WEBSKY_CMB
    geometry = {"type": "healpix", "nside": nside, "footprint": list(fp.box), "area_deg2": fp.area_deg2,
                "simulation": "websky"}
    with Workspace.create(out, "sehgal", BANDS_GHZ, CUTOUT_PIXEL_ARCMIN, geometry, overwrite=overwrite) as ws:
        cmb = synthesise_cmb(sel.path(sel.alm), nside, ws.path(WEBSKY_CMB), progress, cancelled, reuse=reuse)
        check_cancel(cancelled, "importing")
        sky = open_websky_dir(directory, ws.path(WEBSKY_CMB), cib, sel)
        sky.settings["cmb_map"] = WEBSKY_CMB
        summary = _record_sim(ws, sky, [WEBSKY_CMB], halos, halo_source,
                              {"cmb": {k: v for k, v in cmb.items() if k != "alm"}, "cib": cib,
                               "mass_floor_m200m": floor})
    return summary


def import_agora(directory: str | os.PathLike, out: str | os.PathLike, halo_file: str | None = None,
                 overwrite: bool = False, region: Footprint | None = None, cib: str = "interp",
                 mass_floor: float | None = None, prefer=(), progress: ProgressFn | None = None,
                 cancelled: CancelFn | None = None) -> dict:
    """An AGORA folder (:mod:`szviewer.sky.agora`): its component maps referenced where they are and the halos of
    its light-cone shells ``agora_halolc_*.npz`` (or ``halo_file``) down to ``mass_floor`` (M_vir, default 1e14
    Msun) inside the region (default the octant). ``prefer``: texts that pick among maps fitting the same
    component and frequency. Everything is checked before the workspace is made; returns the summary."""
    from szviewer.sky.agora import DEFAULT_MASS_FLOOR, find_halo_shells, open_agora_dir, read_agora_halos

    directory = Path(directory)
    fp = _healpix_region(region)
    floor = DEFAULT_MASS_FLOOR if mass_floor is None else float(mass_floor)
    sky = open_agora_dir(directory, cib, tuple(prefer))
    check_cancel(cancelled, "importing")

    halos, halo_source = _sim_halos(halo_file, find_halo_shells(directory), read_agora_halos, fp, floor, progress,
                                    cancelled)
    geometry = {"type": "healpix", "nside": int(sky.nside), "footprint": list(fp.box), "area_deg2": fp.area_deg2,
                "simulation": "agora"}
    with Workspace.create(out, "sehgal", BANDS_GHZ, CUTOUT_PIXEL_ARCMIN, geometry, overwrite=overwrite) as ws:
        summary = _record_sim(ws, sky, [], halos, halo_source, {"cib": cib, "mass_floor_m_vir": floor})
    return summary


def import_fits(maps: dict[int, str], out: str | os.PathLike, halo_file: str | None = None,
                overwrite: bool = False, ivar: dict[int, str] | None = None, beams: dict[int, str] | None = None,
                freqs: dict[int, float] | None = None, mask: str | os.PathLike | None = None) -> dict:
    """Per-band flat-sky FITS maps in uK_CMB (CAR or TAN) with their survey products, and optional halos.

    ``maps`` and ``ivar``: {band GHz: path} (ivar in 1/uK^2 per pixel); ``beams``: {band: FWHM in arcmin or a
    two-column ``ell B_ell`` file}; ``freqs``: {band: effective GHz} (default: the band id); ``mask``: one file
    (1 = use, 0 = masked). Everything is checked (:func:`szviewer.sky.fits_maps.open_fits_maps`, square pixels
    of any size, at least one usable pixel) before the workspace is created, so bad input writes nothing. The
    workspace records the real band ids and pixel size; the sky product's provenance every file, beam and
    frequency, and its summary the depth per band (:meth:`FlatFitsSky.depth_summary`) and the usable fractions.
    Maps are referenced where they are (memory-mapped), never copied. Returns that summary and the footprint.
    """
    from szviewer.sky.fits_maps import open_fits_maps
    from szviewer.sky.fits_products import beam_label
    from szviewer.sky.halo_ascii import read_halo_table

    sky = open_fits_maps(maps, ivar=ivar, mask=mask, beams=beams, freqs=freqs)
    pixel = sky.square_pixel_arcmin()
    fp = Footprint(*sky.footprint())
    depth = sky.depth_summary()
    halos = None
    if halo_file is not None:
        halos = read_halo_table(halo_file)
        halos = halos[fp.contains(np.asarray(halos["ra"]), np.asarray(halos["dec"]))]
        if "halo_id" not in halos.colnames:
            halos["halo_id"] = np.arange(len(halos), dtype=np.int64)
    n_halos = 0 if halos is None else len(halos)
    given_freqs = {int(b) for b in (freqs or {})}
    bands = {}
    for b in sky.bands:
        bands[str(b)] = {
            "map": sky.files[b].name,
            "freq_ghz": sky.freqs_ghz[b],
            "freq_given": b in given_freqs,
            "beam": None if sky.beams[b] is None else beam_label(sky.beams[b]),
            "ivar": None if sky.ivar_files[b] is None else sky.ivar_files[b].name,
            "depth_uk_arcmin": depth["bands"][str(b)]["depth_uk_arcmin"],
        }
    mask_summary = None
    if depth["mask"] is not None:
        mask_summary = {"file": sky.mask_file.name, **depth["mask"]}
    summary = {"shape": list(sky.shape), "pixel_arcmin": pixel, "halos": n_halos,
               "usable_fraction": depth["usable_fraction"], "bands": bands, "mask": mask_summary}
    geometry = {"type": "flat", "shape": list(sky.shape), "footprint": list(fp.box), "area_deg2": fp.area_deg2,
                "wcs": sky.wcs.to_header_string()}
    with Workspace.create(out, "fits", sky.bands, pixel, geometry, overwrite=overwrite) as ws:
        if halos is not None:
            _write_halos(ws, halos, str(Path(halo_file).resolve()))
        ws.record("sky", [], provenance=sky.describe(), summary=summary)
    return {**summary, "footprint": list(fp.box)}
