"""The MF's detections matched to halos and to cutouts by the paper's rules (section 2.3).

1. each detection is matched to the most massive halo within 1' (when truth exists);
2. a matched detection is assigned to the cutout holding the true halo centre, an unmatched one to the
   cutout holding the detection;
3. each cutout's ``mf_snr`` is the largest S/N assigned to it; a cutout with none gets NaN.

(Object-level evaluation matches one to one instead: :mod:`szviewer.evaluate.matching`.)
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from szviewer.cutouts.grid import CutoutGrid

#: The paper's matching radius of a detection to a halo [arcmin].
MATCH_RADIUS_ARCMIN = 1.0


def match_to_halos(ra, dec, halos: Table | None, radius_arcmin: float = MATCH_RADIUS_ARCMIN) -> np.ndarray:
    """Row of the most massive halo within ``radius_arcmin`` of each detection, -1 where none."""
    ra = np.asarray(ra, dtype=float)
    out = np.full(ra.size, -1, dtype=np.int64)
    if halos is None or len(halos) == 0 or ra.size == 0:
        return out
    from scipy.spatial import cKDTree

    from szviewer.sky.geometry import radec_to_vec

    tree = cKDTree(radec_to_vec(np.asarray(halos["ra"], float), np.asarray(halos["dec"], float)))
    chord = 2 * np.sin(np.deg2rad(radius_arcmin / 60.0) / 2)
    hits = tree.query_ball_point(radec_to_vec(ra, np.asarray(dec, dtype=float)), chord)
    mass = np.asarray(halos["m_vir"], dtype=float)
    for i, h in enumerate(hits):
        if h:
            out[i] = h[int(np.argmax(mass[h]))]
    return out


def assign_to_cutouts(catalog: Table, halos: Table | None, grid: CutoutGrid) -> tuple[np.ndarray, np.ndarray]:
    """(halo row, cutout grid id) of each detection, by the paper's rules (section 2.3)."""
    det_ra = np.asarray(catalog["ra"], float)
    det_dec = np.asarray(catalog["dec"], float)
    match = match_to_halos(det_ra, det_dec, halos)
    ra = det_ra.copy()
    dec = det_dec.copy()
    m = match >= 0
    if m.any():
        ra[m] = np.asarray(halos["ra"], float)[match[m]]
        dec[m] = np.asarray(halos["dec"], float)[match[m]]
    return match, grid.cell_of(ra, dec)


def cutout_snr(cells: np.ndarray, snr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Largest S/N assigned to each cutout id (NaN where none)."""
    ids = np.asarray(ids)
    best = np.full(ids.size, -np.inf)
    if ids.size:
        order = np.argsort(ids)
        k = order[np.minimum(np.searchsorted(ids[order], cells), ids.size - 1)]
        hit = ids[k] == np.asarray(cells)
        np.maximum.at(best, k[hit], np.asarray(snr, dtype=float)[hit])
    return np.where(np.isfinite(best), best, np.nan)
