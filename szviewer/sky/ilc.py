"""A Compton-y map from the bands: the internal linear combination (ILC) with the tSZ spectrum.

Weights ``w`` over the bands minimise the variance of ``sum_i w_i T_i`` subject to unit response to the tSZ
spectrum ``a_i = T_CMB f(x_i)`` [uK per unit y] (:func:`szviewer.sky.bands.tsz_uk_per_y`), and, with
``null_cmb`` (the default), zero response to the CMB (constant in uK_CMB across bands): the constrained ILC
(Remazeilles, Delabrouille & Cardoso 2011). ``w = C^-1 A (A^T C^-1 A)^-1 e_0`` with ``A = [a, 1]``. The band
covariance ``C`` is measured on the maps themselves or given (e.g. the instrument's noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from szviewer.sky.bands import tsz_uk_per_y


def ilc_weights(bands_ghz: Sequence[float], cov: np.ndarray | None = None, null_cmb: bool = True) -> np.ndarray:
    """(nband,) weights [y per uK]: unit tSZ response, zero CMB response when ``null_cmb``, minimum variance
    under the band covariance ``cov`` [uK^2] (identity when None)."""
    a = np.asarray(tsz_uk_per_y(np.asarray(bands_ghz, dtype=float)), dtype=float)
    n = a.size
    cov = np.eye(n) if cov is None else np.asarray(cov, dtype=float)
    if null_cmb and n < 2:
        raise ValueError("a CMB-nulled y map needs at least two bands")
    A = np.stack([a, np.ones(n)], axis=1) if null_cmb else a[:, None]
    e = np.zeros(A.shape[1])
    e[0] = 1.0
    ci = np.linalg.pinv(cov)
    return ci @ A @ np.linalg.solve(A.T @ ci @ A, e)


def band_covariance(maps: np.ndarray) -> np.ndarray:
    """(nband, nband) covariance [uK^2] of the band maps (nband, ...) over their pixels (means removed)."""
    m = np.asarray(maps, dtype=float).reshape(maps.shape[0], -1)
    m = m - m.mean(axis=1, keepdims=True)
    return m @ m.T / max(m.shape[1] - 1, 1)


def y_map(maps: np.ndarray, bands_ghz: Sequence[float], cov: np.ndarray | None = None,
          null_cmb: bool = True) -> np.ndarray:
    """Compton-y map (float32, the maps' pixel shape) of band maps (nband, ...) [uK_CMB]: the ILC of
    :func:`ilc_weights` with the covariance ``cov`` (default: measured on the maps)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[0] != len(bands_ghz):
        raise ValueError(f"{maps.shape[0]} band maps for {len(bands_ghz)} bands")
    w = ilc_weights(bands_ghz, band_covariance(maps) if cov is None else cov, null_cmb)
    return np.tensordot(w.astype(np.float32), maps, axes=1).astype(np.float32)
