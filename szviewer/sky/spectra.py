"""Angular power spectra and flat-sky Gaussian fields (SCIENCE.md section 6).

Conventions: ``D_ell = ell (ell + 1) C_ell / 2 pi`` in uK^2; ``C_ell`` in uK^2 sr. Flat-sky maps are
``(ny, nx)`` arrays with square pixels of ``pixel_arcmin``; the multipole of a 2-D Fourier mode is
``ell = 2 pi |k|`` with ``k`` in cycles per radian.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

ARCMIN_RAD = np.pi / (180.0 * 60.0)


@lru_cache(maxsize=1)
def _cmb_table() -> tuple[np.ndarray, np.ndarray]:
    path = resources.files("szviewer.resources").joinpath("cmb_lensed_tt.txt")
    with path.open("r") as fh:
        data = np.loadtxt(fh)
    return data[:, 0], data[:, 1]


def cmb_lensed_dl(ell: np.ndarray | float) -> np.ndarray:
    """Lensed CMB TT D_ell [uK^2] from the CAMB table shipped in ``resources/`` (0 for ell < 2).

    Beyond the table's last multipole (12000) the spectrum is extrapolated as a power law of the
    last decade; it is negligible there next to foregrounds and noise.
    """
    ell_t, dl_t = _cmb_table()
    ell = np.asarray(ell, dtype=float)
    out = np.interp(ell, ell_t, dl_t, left=0.0, right=np.nan)
    hi = ell > ell_t[-1]
    if np.any(hi):
        slope = np.log(dl_t[-1] / dl_t[-1000]) / np.log(ell_t[-1] / ell_t[-1000])
        out[hi] = dl_t[-1] * (ell[hi] / ell_t[-1]) ** slope
    out[ell < 2] = 0.0
    return out


def dl_to_cl(ell: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """C_ell = 2 pi D_ell / (ell (ell + 1)), with C_0 = 0."""
    ell = np.asarray(ell, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cl = np.where(ell > 0, 2 * np.pi * np.asarray(dl) / (ell * (ell + 1.0)), 0.0)
    return cl


def ell_grid(ny: int, nx: int, pixel_arcmin: float) -> np.ndarray:
    """|ell| of each mode of ``numpy.fft.rfft2`` on an (ny, nx) map, shape (ny, nx // 2 + 1)."""
    d = pixel_arcmin * ARCMIN_RAD
    ly = np.fft.fftfreq(ny, d=d) * 2 * np.pi
    lx = np.fft.rfftfreq(nx, d=d) * 2 * np.pi
    return np.hypot(ly[:, None], lx[None, :])


def gaussian_field(rng: np.random.Generator, shape: tuple[int, int], pixel_arcmin: float,
                   cl_of_ell, white: np.ndarray | None = None) -> np.ndarray:
    """A periodic Gaussian random field with power spectrum ``cl_of_ell(ell)`` [uK^2 sr], float32.

    m = irfft2(rfft2(w) sqrt(C_ell)) / pixel_size_rad, with w white unit noise (SCIENCE.md section 6).
    ``white`` may pass a pre-drawn w so that several fields share one realisation (e.g. a foreground
    fully correlated across bands).
    """
    ny, nx = shape
    w = rng.standard_normal(shape, dtype=np.float64) if white is None else white
    ell = ell_grid(ny, nx, pixel_arcmin)
    amp = np.sqrt(np.maximum(cl_of_ell(ell), 0.0)) / (pixel_arcmin * ARCMIN_RAD)
    return np.fft.irfft2(np.fft.rfft2(w) * amp, s=shape).astype(np.float32)


def cos_taper(shape: tuple[int, int], width_pix: int) -> np.ndarray:
    """Separable cosine apodisation window that rises from 0 to 1 over ``width_pix`` at each edge."""
    def one(n: int) -> np.ndarray:
        w = np.ones(n)
        k = min(width_pix, n // 2)
        if k > 0:
            ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(k) + 0.5) / k))
            w[:k] = ramp
            w[n - k:] = ramp[::-1]
        return w
    return np.outer(one(shape[0]), one(shape[1]))


def binned_dl(m: np.ndarray, pixel_arcmin: float, ell_edges: np.ndarray,
              m2: np.ndarray | None = None, taper_pix: int = 64) -> np.ndarray:
    """Binned (cross-)power spectrum D_ell [uK^2] of flat maps, with a cosine taper.

    Returns D_ell averaged over the 2-D modes in each bin of ``ell_edges``.
    """
    ny, nx = m.shape
    w = cos_taper(m.shape, taper_pix)
    norm = np.mean(w**2)
    area_sr = ny * nx * (pixel_arcmin * ARCMIN_RAD) ** 2
    f1 = np.fft.rfft2((m - m.mean()) * w)
    f2 = f1 if m2 is None else np.fft.rfft2((m2 - m2.mean()) * w)
    p2d = (f1 * np.conj(f2)).real * area_sr / (ny * nx) ** 2 / norm  # C_ell estimate [uK^2 sr]
    ell = ell_grid(ny, nx, pixel_arcmin)
    # rfft2 stores half the plane: weight the columns that stand for two modes twice
    weight = np.full(ell.shape, 2.0)
    weight[:, 0] = 1.0
    if nx % 2 == 0:
        weight[:, -1] = 1.0
    idx = np.digitize(ell.ravel(), ell_edges) - 1
    nb = len(ell_edges) - 1
    ok = (idx >= 0) & (idx < nb)
    dl2d = (ell * (ell + 1) * p2d / (2 * np.pi)).ravel()
    s = np.bincount(idx[ok], weights=(dl2d * weight.ravel())[ok], minlength=nb)
    n = np.bincount(idx[ok], weights=weight.ravel()[ok], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / n
