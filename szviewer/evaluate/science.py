"""Where each method finds clusters: completeness vs halo properties (paper section 3.5, Figs. 9-12).

All inputs are arrays over halos (or over positive cutouts, one matched halo each): halo properties and, per
method, a boolean "found" (the decision of the cutout holding the halo). Fractions are NaN in bins with
fewer than ``min_count`` halos (the paper's Fig. 12 shows only bins with at least 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BinnedFraction",
    "BinnedFraction2D",
    "BinnedMean",
    "make_bins",
    "binned_fraction",
    "completeness_by_method",
    "completeness_vs_mass",
    "completeness_vs_redshift",
    "score_vs_offset",
    "binned_fraction_2d",
    "tp_fraction_maps",
    "binned_mean",
    "angular_radius_arcmin",
    "angular_offset_arcmin",
    "exclusive_finds",
]


@dataclass(frozen=True, eq=False)
class BinnedFraction:
    """Per bin: ``n`` halos, ``k`` found, ``fraction`` = k / n (NaN below ``min_count``)."""

    edges: np.ndarray
    centers: np.ndarray
    n: np.ndarray
    k: np.ndarray
    fraction: np.ndarray


@dataclass(frozen=True, eq=False)
class BinnedFraction2D:
    """2-D version of :class:`BinnedFraction`; arrays are indexed [x bin, y bin]."""

    x_edges: np.ndarray
    y_edges: np.ndarray
    n: np.ndarray
    k: np.ndarray
    fraction: np.ndarray


@dataclass(frozen=True, eq=False)
class BinnedMean:
    """Per bin: count, mean, standard deviation and standard error of the mean (NaN in empty bins)."""

    edges: np.ndarray
    centers: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    sem: np.ndarray


def _finite(*arrays) -> np.ndarray:
    ok = np.ones(np.asarray(arrays[0]).shape, dtype=bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, dtype=float))
    return ok


def make_bins(x, bins: int | np.ndarray = 10, log: bool = False) -> np.ndarray:
    """Bin edges: ``bins`` if an array, otherwise ``bins`` equal (log-spaced if ``log``) bins over the
    finite (and, for ``log``, positive) range of ``x``."""
    if not np.isscalar(bins):
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a strictly increasing 1-D array of at least 2 values")
        return edges
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & ((x > 0) if log else True)]
    if x.size == 0:
        raise ValueError("no finite values to bin" + (" (log bins need positive values)" if log else ""))
    lo, hi = x.min(), x.max()
    if hi == lo:
        lo, hi = (lo / 1.01, hi * 1.01) if log else (lo - 0.5, hi + 0.5)
    return np.geomspace(lo, hi, int(bins) + 1) if log else np.linspace(lo, hi, int(bins) + 1)


def _centers(edges: np.ndarray, log: bool) -> np.ndarray:
    return np.sqrt(edges[1:] * edges[:-1]) if log else 0.5 * (edges[1:] + edges[:-1])


def _digitize(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index in [0, nbins) or -1 outside; the last bin includes its right edge (as numpy.histogram)."""
    i = np.searchsorted(edges, x, side="right") - 1
    i[x == edges[-1]] = edges.size - 2
    i[(i < 0) | (i >= edges.size - 1) | ~np.isfinite(x)] = -1
    return i


def binned_fraction(
    x, found, bins: int | np.ndarray = 10, *, log: bool = False, mask=None, min_count: int = 1
) -> BinnedFraction:
    """Fraction of halos found per bin of ``x`` (completeness vs M_vir or z, paper Figs. 10-11)."""
    x = np.asarray(x, dtype=float).ravel()
    f = np.asarray(found, dtype=bool).ravel()
    if f.shape != x.shape:
        raise ValueError(f"x ({x.size}) and found ({f.size}) differ in length")
    sel = _finite(x) if mask is None else _finite(x) & np.asarray(mask, dtype=bool).ravel()
    edges = make_bins(x[sel], bins, log)
    i = _digitize(x[sel], edges)
    ok = i >= 0
    nb = edges.size - 1
    n = np.bincount(i[ok], minlength=nb)
    k = np.bincount(i[ok], weights=f[sel][ok], minlength=nb).astype(np.int64)
    frac = np.where(n >= max(min_count, 1), k / np.maximum(n, 1), np.nan)
    return BinnedFraction(edges, _centers(edges, log), n, k, frac)


def completeness_by_method(
    x,
    found: Mapping[str, np.ndarray],
    bins: int | np.ndarray = 10,
    *,
    log: bool = False,
    mask=None,
    min_count: int = 1,
) -> dict[str, BinnedFraction]:
    """:func:`binned_fraction` for every method, on common bin edges (e.g. x = M_vir with ``log=True``)."""
    x = np.asarray(x, dtype=float).ravel()
    sel = _finite(x) if mask is None else _finite(x) & np.asarray(mask, dtype=bool).ravel()
    edges = make_bins(x[sel], bins, log)
    return {
        name: binned_fraction(x, f, edges, log=log, mask=mask, min_count=min_count)
        for name, f in found.items()
    }


def completeness_vs_mass(
    m_vir, found: Mapping[str, np.ndarray], bins: int | np.ndarray = 12, *, mask=None, min_count: int = 1
) -> dict[str, BinnedFraction]:
    """Completeness of each method in logarithmic bins of M_vir (paper Fig. 10)."""
    return completeness_by_method(m_vir, found, bins, log=True, mask=mask, min_count=min_count)


def completeness_vs_redshift(
    z, found: Mapping[str, np.ndarray], bins: int | np.ndarray = 12, *, mask=None, min_count: int = 1
) -> dict[str, BinnedFraction]:
    """Completeness of each method in linear bins of redshift (paper Fig. 11)."""
    return completeness_by_method(z, found, bins, log=False, mask=mask, min_count=min_count)


def binned_fraction_2d(
    x,
    y,
    found,
    x_bins: int | np.ndarray = 10,
    y_bins: int | np.ndarray = 10,
    *,
    log_x: bool = False,
    log_y: bool = False,
    mask=None,
    min_count: int = 3,
) -> BinnedFraction2D:
    """True-positive fraction over 2-D bins of (x, y), NaN where a bin has fewer than ``min_count`` halos
    (paper Fig. 12)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    f = np.asarray(found, dtype=bool).ravel()
    if not x.shape == y.shape == f.shape:
        raise ValueError(f"x ({x.size}), y ({y.size}) and found ({f.size}) differ in length")
    sel = _finite(x, y) if mask is None else _finite(x, y) & np.asarray(mask, dtype=bool).ravel()
    xe = make_bins(x[sel], x_bins, log_x)
    ye = make_bins(y[sel], y_bins, log_y)
    ix = _digitize(x[sel], xe)
    iy = _digitize(y[sel], ye)
    ok = (ix >= 0) & (iy >= 0)
    nx, ny = xe.size - 1, ye.size - 1
    flat = ix[ok] * ny + iy[ok]
    n = np.bincount(flat, minlength=nx * ny).reshape(nx, ny)
    k = np.bincount(flat, weights=f[sel][ok], minlength=nx * ny).astype(np.int64).reshape(nx, ny)
    frac = np.where(n >= max(min_count, 1), k / np.maximum(n, 1), np.nan)
    return BinnedFraction2D(xe, ye, n, k, frac)


def angular_radius_arcmin(r_vir_mpc, z, cosmology=None) -> np.ndarray:
    """Angular virial radius R_vir / D_A(z) in arcmin, R_vir in proper Mpc (halo catalog convention).

    ``cosmology`` is an astropy cosmology; default the Sehgal et al. simulation's (szviewer.sky.cosmology).
    """
    if cosmology is None:
        from szviewer.sky.cosmology import astropy_cosmology

        cosmology = astropy_cosmology()
    r = np.asarray(r_vir_mpc, dtype=float)
    d_a = np.asarray(cosmology.angular_diameter_distance(np.asarray(z, dtype=float)).to_value("Mpc"))
    return np.degrees(r / d_a) * 60.0


def tp_fraction_maps(
    m_vir,
    found: Mapping[str, np.ndarray],
    *,
    z=None,
    r_vir=None,
    theta_vir=None,
    bins: int = 10,
    min_count: int = 3,
    mask=None,
) -> dict[str, dict[str, BinnedFraction2D]]:
    """Per method, true-positive fraction maps over (M_vir, z), (M_vir, R_vir) and (M_vir, angular size)
    (paper Fig. 12): ``{method: {"z": ..., "r_vir": ..., "theta_vir": ...}}`` for the given properties.

    Mass bins are logarithmic; all methods share the same edges.
    """
    others = {name: v for name, v in (("z", z), ("r_vir", r_vir), ("theta_vir", theta_vir)) if v is not None}
    m = np.asarray(m_vir, dtype=float).ravel()
    out: dict[str, dict[str, BinnedFraction2D]] = {name: {} for name in found}
    for prop, v in others.items():
        v = np.asarray(v, dtype=float).ravel()
        sel = _finite(m, v) if mask is None else _finite(m, v) & np.asarray(mask, dtype=bool).ravel()
        xe = make_bins(m[sel], bins, log=True)
        ye = make_bins(v[sel], bins)
        for name, f in found.items():
            out[name][prop] = binned_fraction_2d(m, v, f, xe, ye, mask=mask, min_count=min_count)
    return out


def binned_mean(x, values, bins: int | np.ndarray = 10, *, log: bool = False, mask=None) -> BinnedMean:
    """Mean of ``values`` per bin of ``x``, e.g. CNN score vs offset of the halo from the cutout centre
    (paper Fig. 9c). Non-finite values are ignored."""
    x = np.asarray(x, dtype=float).ravel()
    v = np.asarray(values, dtype=float).ravel()
    if v.shape != x.shape:
        raise ValueError(f"x ({x.size}) and values ({v.size}) differ in length")
    sel = _finite(x, v) if mask is None else _finite(x, v) & np.asarray(mask, dtype=bool).ravel()
    edges = make_bins(x[sel], bins, log)
    i = _digitize(x[sel], edges)
    ok = i >= 0
    vv = v[sel][ok]
    nb = edges.size - 1
    n = np.bincount(i[ok], minlength=nb)
    s1 = np.bincount(i[ok], weights=vv, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s1 / n, np.nan)
        dev2 = np.bincount(i[ok], weights=(vv - mean[i[ok]]) ** 2, minlength=nb)
        std = np.where(n > 1, np.sqrt(dev2 / np.maximum(n - 1, 1)), np.nan)
        sem = std / np.sqrt(n)
    return BinnedMean(edges, _centers(edges, log), n, mean, std, sem)


def score_vs_offset(
    offset_arcmin, scores: Mapping[str, np.ndarray], bins: int | np.ndarray = 8, *, mask=None
) -> dict[str, BinnedMean]:
    """Mean score of each method vs the halo's offset from the cutout centre, common bins (paper Fig. 9c).

    Use :func:`angular_offset_arcmin` for the offsets; ``mask`` selects e.g. the positive cutouts.
    """
    x = np.asarray(offset_arcmin, dtype=float).ravel()
    sel = _finite(x) if mask is None else _finite(x) & np.asarray(mask, dtype=bool).ravel()
    edges = make_bins(x[sel], bins)
    return {name: binned_mean(x, v, edges, mask=mask) for name, v in scores.items()}


def angular_offset_arcmin(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation in arcmin between (ra1, dec1) and (ra2, dec2), all in degrees (haversine)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 60.0


def exclusive_finds(found_a, found_b, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Masks of (found by A only, found by B only), e.g. A = CNN, B = MF (paper section 3.3, Fig. 9).

    With ``labels`` only true clusters count (true positives of one method that the other misses).
    """
    a = np.asarray(found_a, dtype=bool)
    b = np.asarray(found_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"the two decision arrays differ in shape ({a.shape} and {b.shape})")
    truth = np.ones(a.shape, dtype=bool) if labels is None else np.asarray(labels, dtype=bool)
    return a & ~b & truth, b & ~a & truth


def per_level_summary(columns: Mapping[str, np.ndarray], labels, fit, apply) -> dict[str, dict[str, float]]:
    """F1 and AUC of one score per component level (paper Fig. 8): the threshold maximises F1 on ``fit``
    and is applied to ``apply``. ``columns`` maps ``cnn_prob_<level>`` (or any name) to scores."""
    from .curves import confusion, f1_curve, roc_curve

    y = np.asarray(labels, dtype=bool).ravel()
    fit = np.asarray(fit, dtype=bool).ravel()
    apply = np.asarray(apply, dtype=bool).ravel()
    out = {}
    for name, s in columns.items():
        s = np.asarray(s, dtype=float).ravel()
        t = f1_curve(s[fit], y[fit]).best().threshold
        c = confusion(s[apply] >= t, y[apply])
        level = name[len("cnn_prob_"):] if name.startswith("cnn_prob_") else name
        auc = float(roc_curve(s[apply], y[apply]).auc)
        out[level] = {"threshold": float(t), "test_f1": float(c.f1), "test_auc": auc}
    return out
