"""Job: make a workspace from real maps, Sehgal HEALPix or per-band flat-sky FITS (SCIENCE.md section 1)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from szviewer.atomic import atomic_path
from szviewer.sky.bands import BANDS_GHZ
from szviewer.sky.tiles import Footprint
from szviewer.workspace import Workspace


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
    from szviewer.sky.sehgal import open_sehgal_dir

    directory = Path(directory)
    sky = open_sehgal_dir(directory)
    if halo_file is None:
        for name in ("halo_sz.ascii", "halo_nbody.ascii"):
            if (directory / name).exists():
                halo_file = str(directory / name)
                break
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
        ws.record("sky", [], provenance=prov,
                  summary={"components": list(sky.components), "nside": int(sky.nside), "halos": n_halos})
    return {"components": list(sky.components), "nside": int(sky.nside), "halos": n_halos}


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
    from szviewer.sky.fits_maps import beam_label, open_fits_maps
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
