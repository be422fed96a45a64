"""Spherical geometry: gnomonic (tangent-plane) projection about arbitrary centres, vectorised.

Tangent-plane offsets ``(xi, eta)`` are in radians, ``xi`` toward increasing RA (east) and ``eta``
toward increasing Dec (north). Images follow the astronomical convention: column index increases
toward decreasing RA (east to the left), row index toward increasing Dec.
"""

from __future__ import annotations

import numpy as np

DEG = np.pi / 180.0
ARCMIN = DEG / 60.0


def basis(ra_deg, dec_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (radial, east, north) at each centre, each of shape ``(..., 3)``."""
    a = np.asarray(ra_deg, dtype=float) * DEG
    d = np.asarray(dec_deg, dtype=float) * DEG
    ca, sa, cd, sd = np.cos(a), np.sin(a), np.cos(d), np.sin(d)
    e_r = np.stack([cd * ca, cd * sa, sd], axis=-1)
    e_e = np.stack([-sa, ca, np.zeros_like(a)], axis=-1)
    e_n = np.stack([-sd * ca, -sd * sa, cd], axis=-1)
    return e_r, e_e, e_n


def radec_to_vec(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors of (RA, Dec) in degrees, shape ``(..., 3)``."""
    return basis(ra_deg, dec_deg)[0]


def vec_to_radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RA in [0, 360), Dec) in degrees of vectors ``(..., 3)`` (need not be normalised)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    ra = np.rad2deg(np.arctan2(y, x)) % 360.0
    dec = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def tangent_to_vec(ra0_deg, dec0_deg, xi, eta) -> np.ndarray:
    """Vectors of tangent-plane offsets about each centre.

    ``ra0_deg, dec0_deg`` have shape ``(N,)``; ``xi, eta`` broadcast against ``(N, ...)`` (e.g. a
    shared 32x32 pixel pattern of shape ``(32, 32)`` becomes ``(N, 32, 32, 3)``). Not normalised.
    """
    e_r, e_e, e_n = basis(np.atleast_1d(ra0_deg), np.atleast_1d(dec0_deg))
    extra = np.ndim(xi)
    shp = e_r.shape[:-1] + (1,) * extra + (3,)
    xi = np.asarray(xi)[..., None]
    eta = np.asarray(eta)[..., None]
    return e_r.reshape(shp) + xi * e_e.reshape(shp) + eta * e_n.reshape(shp)


def radec_to_tangent(ra0_deg, dec0_deg, ra_deg, dec_deg) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic offsets (xi east, eta north) in radians of points about centres (broadcasting)."""
    e_r, e_e, e_n = basis(ra0_deg, dec0_deg)
    p = radec_to_vec(ra_deg, dec_deg)
    r = np.sum(p * e_r, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.sum(p * e_e, axis=-1) / r
        eta = np.sum(p * e_n, axis=-1) / r
    return xi, eta


def separation_arcmin(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in arcmin (haversine, accurate at small separations)."""
    a1, d1, a2, d2 = (np.asarray(v, dtype=float) * DEG for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((a2 - a1) / 2) ** 2
    return 2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))) / ARCMIN


def pixel_offsets(npix: int, pixel_arcmin: float) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane offsets (xi, eta) in radians of the pixel centres of an npix x npix image.

    Row ``i`` runs south to north, column ``j`` east to west (RA decreasing), centre between the
    middle pixels for even ``npix``.
    """
    c = (np.arange(npix) - (npix - 1) / 2.0) * pixel_arcmin * ARCMIN
    eta = np.repeat(c[:, None], npix, axis=1)
    xi = np.repeat(-c[None, :], npix, axis=0)
    return xi, eta
