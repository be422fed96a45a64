"""What the matched filter reads from a workspace (paper section 2.1): per map the observed pixels, the
instrument's white depths, beams and 1/f noise model, its footprint mask, the ivar maps and the bright sources to
subtract, as one :class:`MapRun` per synthetic tile or one for the user's FITS maps (:func:`workspace_runs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from szviewer.errors import InputError
from szviewer.workspace import Workspace


def tile_mask(ws: Workspace, sky, k: int, srcs: Table | None) -> np.ndarray | None:
    """Unusable pixels (True) of tile ``k``: where the instrument's footprint mask is 0 (None: no mask)."""
    m = tile_footprint(ws, sky, k, srcs)
    return None if m is None else m <= 0


def recorded_instrument(ws: Workspace):
    """The :class:`~szviewer.sky.instruments.Instrument` the workspace's sky was simulated with, or None (an
    imported sky, or one from before instruments were recorded)."""
    from szviewer.sky.instruments import Instrument

    inst = ws.products.get("sky", {}).get("settings", {}).get("instrument")
    return Instrument.from_dict(inst) if isinstance(inst, dict) else None


def tile_footprint(ws: Workspace, sky, k: int, srcs: Table | None) -> np.ndarray | None:
    """The instrument's footprint mask of tile ``k`` in [0, 1] (apodised edges, holes around bright sources;
    :func:`szviewer.sky.noise_maps.footprint_mask`), or None where the instrument has no mask."""
    from szviewer.sky.noise_maps import footprint_mask

    inst = recorded_instrument(ws)
    if inst is None:
        return None
    if inst.edge_apod_arcmin <= 0 and inst.hole_flux_mjy <= 0:
        return None
    tile = sky.tiles[k]
    yy, xx = np.mgrid[0:tile.ny, 0:tile.nx]
    ra, dec = tile.pix_to_world(xx.ravel(), yy.ravel())
    return footprint_mask(inst, tuple(ws.geometry["footprint"]), np.asarray(ra).reshape(tile.shape),
                          np.asarray(dec).reshape(tile.shape), srcs)


def _user_beams(settings) -> bool:
    """True when the settings carry beams the user gave (``--beam-fwhm``), which the workspace's must not replace."""
    return any(settings.beam_fwhm_arcmin) or any(settings.beam_tables)


def beam_settings(beams: list) -> dict:
    """MFSettings fields for per-band beams (:class:`szviewer.sky.beams.Beam` or None): Gaussian FWHMs, and
    B_ell tables (resampled compactly, :func:`szviewer.mf.settings.resample_beam_table`) where a band has one."""
    from szviewer.mf.settings import resample_beam_table

    fwhm = tuple(0.0 if b is None else float(b.fwhm_equivalent_arcmin()) for b in beams)
    if not any(b is not None and b.is_table for b in beams):
        return {"beam_fwhm_arcmin": fwhm, "beam_tables": ()}
    tables = tuple(resample_beam_table(b) if (b is not None and b.is_table) else () for b in beams)
    return {"beam_fwhm_arcmin": fwhm, "beam_tables": tables}


def instrument_settings(ws: Workspace, settings):
    """``settings`` with the workspace instrument's bands (effective frequencies, any number), beams (Gaussian FWHM
    or B_ell tables; unless the user gave beams) and noise model (atmospheric 1/f knees, slopes, correlation and
    anisotropy: the model noise is the instrument's own)."""
    inst = recorded_instrument(ws)
    if inst is None:
        return settings
    changes = {"bands_ghz": tuple(inst.freqs_ghz),
               "noise_ell_knee": tuple(b.ell_knee for b in inst.bands),
               "noise_alpha_knee": tuple(b.alpha_knee for b in inst.bands),
               "noise_atm_correlation": inst.atmosphere_correlation, "noise_anisotropy": inst.anisotropy}
    if len(settings.ps_dl3000_uk2) not in (0, len(inst.bands)):
        changes["ps_dl3000_uk2"] = ()
    if _user_beams(settings) and len(settings.beam_fwhm_arcmin) == len(inst.bands):
        pass
    else:
        changes.update(beam_settings([b.beam for b in inst.bands]))
    return settings.replace(**changes)


def fits_settings(ws: Workspace, sky, settings, noise: dict) -> tuple:
    """The MF settings and white depths [uK-arcmin] for the user's FITS maps: the recorded effective frequencies
    (any number of bands), the recorded beams (FWHM or B_ell tables) unless the user gave beams, and the median
    depth of each band's ivar map (else the paper's depth for a paper band)."""
    bands = tuple(sky.bands)
    freqs = tuple(float(sky.freqs_ghz[b]) for b in bands) if hasattr(sky, "freqs_ghz") else tuple(map(float, bands))
    changes = {"bands_ghz": freqs}
    if len(settings.ps_dl3000_uk2) not in (0, len(bands)):
        changes["ps_dl3000_uk2"] = ()
    beams = getattr(sky, "beams", {}) or {}
    if not (_user_beams(settings) and len(settings.beam_fwhm_arcmin) == len(bands)):
        changes.update(beam_settings([beams.get(b) for b in bands]))
    summary = ws.products["sky"].get("summary", {}).get("bands", {})
    depth = []
    for b in bands:
        d = (summary.get(str(b)) or {}).get("depth_uk_arcmin")
        if d:
            depth.append(float(d["median"]))
        elif b in noise:
            depth.append(noise[b])
        elif settings.noise_mode == "model":
            raise InputError(ws.root, f"band {b} GHz has no ivar map, so the noise model has no depth: import it with "
                                      f"--ivar {b}=FILE, or run `szviewer mf WS --noise data`")
        else:
            depth.append(0.0)
    return settings.replace(**changes), depth


class BandStack:
    """Per-band 2-D arrays (e.g. memory-mapped ivar maps) seen as one (nband, ny, nx) array for slicing."""

    def __init__(self, arrays: list):
        self.arrays = arrays
        self.shape = (len(arrays),) + tuple(arrays[0].shape)

    def __getitem__(self, key):
        if not isinstance(key, tuple) or key[0] != slice(None):
            raise IndexError("BandStack supports [:, rows, cols] only")
        return np.stack([np.asarray(a[key[1:]], dtype=np.float32) for a in self.arrays])


def tile_ivar(ws: Workspace, tile) -> np.ndarray | None:
    """The inverse-variance maps (nband, ny, nx) [1/uK^2 per pixel] of a synthetic tile from the sky's depth pattern
    (the hits it was simulated with, :func:`szviewer.sky.synthetic.tile_hits`); None for uniform depth."""
    from szviewer.sky.noise_maps import ivar_map
    from szviewer.sky.synthetic import SimulationSettings, tile_hits

    st = ws.products["sky"].get("settings", {})
    if not isinstance(st.get("instrument"), dict):
        return None
    sim = SimulationSettings.from_dict(st)
    hits = tile_hits(sim, tile)
    if hits is None:
        return None
    return ivar_map(sim.instrument, hits, sim.pixel_arcmin)


@dataclass
class MapRun:
    """One map of a workspace as the filter reads it: a synthetic sky tile (``tile`` set: keep what it owns) or the
    FITS maps; ``index`` of ``count`` runs."""

    maps: object
    wcs: object
    pixel_arcmin: float
    noise_uk_arcmin: list
    sources: object
    mask: object
    ivar: object
    tile: object
    index: int
    count: int


def tile_run(ws: Workspace, sky, srcs: Table | None, noise: dict, k: int) -> MapRun:
    """The :class:`MapRun` of synthetic tile ``k``: its observed map (memory-mapped), the sources near it in tile
    pixels, its mask and ivar."""
    from szviewer.mf.sources import PointSources

    tile = sky.tiles[k]
    ps = None
    if srcs is not None:
        x, y = tile.world_to_pix(np.asarray(srcs["ra"]), np.asarray(srcs["dec"]))
        ok = np.isfinite(x) & (x > -2) & (x < tile.nx + 1) & (y > -2) & (y < tile.ny + 1)
        flux = np.column_stack([np.asarray(srcs[f"flux_{b}"], float) for b in sky.bands])
        ps = PointSources(x[ok], y[ok], flux[ok])
    return MapRun(sky.tile_maps(k), tile.wcs(), tile.pixel_arcmin, [noise[b] for b in sky.bands], ps,
                  tile_mask(ws, sky, k, srcs), tile_ivar(ws, tile), tile, k, len(sky.tiles))


def sources_table(ws: Workspace) -> Table | None:
    """The sky's point-source table (ra, dec, flux_<band> [mJy]), or None."""
    return Table.read(ws.path("sources.fits")) if ws.has("sources") else None


def workspace_runs(ws: Workspace, settings, noise: dict):
    """Generator: first the settings completed from the workspace (instrument bands, beams, 1/f; FITS effective
    frequencies, beams, depths), then one :class:`MapRun` per map to filter (maps read lazily)."""
    sky = ws.sky()
    if ws.kind == "synthetic":
        srcs = sources_table(ws)
        settings = instrument_settings(ws, settings)
        yield settings
        for k in range(len(sky.tiles)):
            yield tile_run(ws, sky, srcs, noise, k)
    elif ws.kind == "fits":
        settings, depth = fits_settings(ws, sky, settings, noise)
        yield settings
        ivars = [sky.ivar(b) for b in sky.bands] if hasattr(sky, "ivar") else []
        ivar = BandStack(ivars) if ivars and all(v is not None for v in ivars) else None
        yield MapRun(sky.band_maps(), sky.wcs, float(np.mean(sky.pixel_arcmin)), depth, None, ~sky.usable, ivar,
                     None, 0, 1)
    else:
        raise InputError(ws.root, f"the matched filter does not run on {ws.kind} workspaces yet "
                                  "(HEALPix maps need flat-sky tiles first)")

