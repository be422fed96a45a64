"""Matched-filter candidate catalogs as astropy Tables, with IAU-style names and the settings in ``meta``.

Columns: ``name`` ('SZ Jhhmmss.s+ddmmss', truncated, not rounded, as the IAU convention asks), ``ra``,
``dec`` [deg], ``snr``, ``theta_c_arcmin``, ``y0``, ``y0_err`` (central Compton y of the beta = 1 model and
its noise), ``tile`` (index of the owning tile), ``flags`` (bit mask, see ``FLAG_*``), the map pixel position
``x``, ``y`` (column, row; 0-based, fractional), ``pos_err_arcmin`` (1-sigma position error per axis),
``snr_peak`` (S/N of the peak pixel of the winning scale) and ``theta_c_fit_arcmin`` (core radius interpolated
between the filter scales); see :mod:`szviewer.mf.peaks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table

from szviewer.mf.settings import MFSettings

#: Candidate within ``source_flag_radius_arcmin`` of a point source brighter than ``source_flag_flux_mjy``.
FLAG_NEAR_SOURCE = 1
#: The candidate's pixel group reaches a masked region (hole, map edge): position and S/N may be biased.
FLAG_NEAR_MASK = 2

COLUMNS = ("name", "ra", "dec", "snr", "theta_c_arcmin", "y0", "y0_err", "tile", "flags", "x", "y", "pos_err_arcmin",
           "snr_peak", "theta_c_fit_arcmin")


def jname(ra_deg: float, dec_deg: float, prefix: str = "SZ") -> str:
    """IAU name such as 'SZ J001234.5+012345' (RA hhmmss.s, Dec +ddmmss), truncated."""
    ra = float(ra_deg) % 360.0
    ra_ds = int(np.floor(ra / 15.0 * 36000.0 + 1e-6))  # tenths of a second of time
    hh, rem = divmod(ra_ds, 36000)
    mm, ds = divmod(rem, 600)
    dec = float(dec_deg)
    sign = "-" if dec < 0 else "+"
    dec_s = int(np.floor(abs(dec) * 3600.0 + 1e-6))
    dd, rem = divmod(dec_s, 3600)
    dm, sec = divmod(rem, 60)
    return f"{prefix} J{hh:02d}{mm:02d}{ds // 10:02d}.{ds % 10:d}{sign}{dd:02d}{dm:02d}{sec:02d}"


def pixel_to_radec(wcs, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec [deg] of 0-based pixel positions (x = column, y = row) through an astropy WCS (CAR, TAN, ...).

    Only the celestial axes of ``wcs`` are used. RA is wrapped into [0, 360).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    cel = wcs.celestial if hasattr(wcs, "celestial") else wcs
    ra, dec = cel.pixel_to_world_values(x, y)
    return np.mod(np.asarray(ra, dtype=float), 360.0), np.asarray(dec, dtype=float)


def empty_catalog() -> Table:
    t = Table(names=COLUMNS, dtype=("U24", "f8", "f8", "f8", "f8", "f8", "f8", "i4", "i4", "f8", "f8", "f8", "f8",
                                    "f8"))
    return t


def build_catalog(cands: np.ndarray, wcs, settings: MFSettings, tiles: np.ndarray | None = None,
                  flags: np.ndarray | None = None, meta: dict[str, Any] | None = None,
                  pixel_arcmin: float | None = None) -> Table:
    """Table of candidates (``peaks.CANDIDATE_DTYPE`` array, positions in map pixels), sorted by S/N.

    ``wcs`` converts pixels to sky; ``None`` leaves ra/dec NaN and names empty (pixel-only use).
    """
    n = len(cands)
    tiles = np.full(n, -1, dtype=np.int32) if tiles is None else np.asarray(tiles, dtype=np.int32)
    flags = np.zeros(n, dtype=np.int32) if flags is None else np.asarray(flags, dtype=np.int32)
    if wcs is not None:
        ra, dec = pixel_to_radec(wcs, cands["x"], cands["y"])
        names = [jname(r, d) for r, d in zip(ra, dec, strict=True)]
    else:
        ra, dec = np.full(n, np.nan), np.full(n, np.nan)
        names = [""] * n
    t = empty_catalog()
    if n:
        t = Table({"name": np.array(names, dtype="U24"), "ra": ra, "dec": dec,
                   "snr": cands["snr"].astype(float), "theta_c_arcmin": cands["theta_c_arcmin"].astype(float),
                   "y0": cands["y0"].astype(float), "y0_err": cands["y0_err"].astype(float),
                   "tile": tiles, "flags": flags, "x": cands["x"].astype(float),
                   "y": cands["y"].astype(float),
                   "pos_err_arcmin": cands["pos_err_pix"].astype(float) * (pixel_arcmin or np.nan),
                   "snr_peak": cands["snr_peak"].astype(float),
                   "theta_c_fit_arcmin": cands["theta_c_fit_arcmin"].astype(float)},
                  names=COLUMNS)
        t.sort("snr", reverse=True)
    t["ra"].unit = "deg"
    t["dec"].unit = "deg"
    t["theta_c_arcmin"].unit = "arcmin"
    t["pos_err_arcmin"].unit = "arcmin"
    t["theta_c_fit_arcmin"].unit = "arcmin"
    t["x"].unit = "pix"
    t["y"].unit = "pix"
    t.meta["mf_settings"] = settings.to_dict(compact=True)
    t.meta["flag_bits"] = {"NEAR_SOURCE": FLAG_NEAR_SOURCE, "NEAR_MASK": FLAG_NEAR_MASK}
    t.meta["method"] = "multi-frequency matched filter (Melin et al. 2006; DeepSZ paper section 2.1)"
    if meta:
        t.meta.update(meta)
    return t
