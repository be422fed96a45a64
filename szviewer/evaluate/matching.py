"""One-to-one positional matching on the sphere (candidates to halos, MF to CNN candidates) within a radius.

Pairs closer than ``radius_arcmin`` (great-circle separation, from a KD-tree on unit vectors, scipy
``cKDTree``) are taken closest first; each row of either list is used at most once. So one halo is matched to
at most one candidate and vice versa; a second candidate near a matched halo stays unmatched (a duplicate, a
false positive at object level). The order of acceptance does not depend on any score, so one matching serves
every method and threshold.
"""

from __future__ import annotations

import numpy as np

from szviewer.sky.geometry import radec_to_vec

__all__ = ["MATCH_RADIUS_ARCMIN", "separation_arcmin", "match_one_to_one"]

#: The matching radius of candidates to halos and of MF to CNN candidates [arcmin] (issue 13; the MF job's).
MATCH_RADIUS_ARCMIN = 1.0


def separation_arcmin(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation [arcmin] of positions in degrees (elementwise, the haversine-stable form)."""
    v1 = radec_to_vec(np.asarray(ra1, float), np.asarray(dec1, float))
    v2 = radec_to_vec(np.asarray(ra2, float), np.asarray(dec2, float))
    chord = np.linalg.norm(v1 - v2, axis=-1)
    return np.rad2deg(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 60.0


def match_one_to_one(ra1, dec1, ra2, dec2, radius_arcmin: float = MATCH_RADIUS_ARCMIN
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(index into list 2 of each row of list 1, -1 where unmatched; separation [arcmin], NaN where unmatched).

    Closest pairs first; each row of each list matched at most once. Positions in degrees.
    """
    from scipy.spatial import cKDTree

    ra1 = np.asarray(ra1, float).ravel()
    dec1 = np.asarray(dec1, float).ravel()
    ra2 = np.asarray(ra2, float).ravel()
    dec2 = np.asarray(dec2, float).ravel()
    out = np.full(ra1.size, -1, dtype=np.int64)
    sep = np.full(ra1.size, np.nan)
    if ra1.size == 0 or ra2.size == 0:
        return out, sep
    v1, v2 = radec_to_vec(ra1, dec1), radec_to_vec(ra2, dec2)
    chord = 2 * np.sin(np.deg2rad(radius_arcmin / 60.0) / 2)
    pairs = cKDTree(v1).sparse_distance_matrix(cKDTree(v2), chord, output_type="ndarray")
    if pairs.size == 0:
        return out, sep
    i, j, d = pairs["i"], pairs["j"], pairs["v"]
    order = np.lexsort((j, i, d))  # closest first; ties by index, so the result is deterministic
    used2 = np.zeros(ra2.size, bool)
    for k in order:
        a, b = i[k], j[k]
        if out[a] < 0 and not used2[b]:
            out[a] = b
            used2[b] = True
            sep[a] = np.rad2deg(2 * np.arcsin(min(d[k] / 2, 1.0))) * 60.0
    return out, sep
