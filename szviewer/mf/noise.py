"""Noise covariance of the multi-frequency matched filter, per Fourier mode (DeepSZ paper section 2.1).

Two estimates of the (nband x nband) covariance ``N_ij(k)`` between the bands at each Fourier mode:

* :func:`model_noise_power` -- the paper's analytic model (section 2.1):

  - lensed CMB (``spectra.cmb_lensed_dl``, CAMB) and kSZ (flat D_ell, 2.0 uK^2 by default, after
    Shirokoff et al. 2011's ~2 uK^2 at ell = 3000), identical in every band and fully correlated;
  - point sources, flat in C_ell, normalised to D_3000 = 2.7, 8.8, 71 uK^2 at 90/148/219 GHz; between bands
    ``C_ij = r sqrt(C_ii C_jj)`` with ``r = settings.ps_correlation``, 1 by default (one source SED, as the
    paper's single combined population implies). Real radio and dusty populations decorrelate 90 and
    219 GHz; lower ``r`` (e.g. 0.5) is more conservative on real skies. ``r = 1`` still leaves ``N`` positive
    definite because the white noise is diagonal;
  - SZ background, flat in D_ell, D_3000 = 3.6 uK^2 at 90 GHz, scaled to band i by
    ``(f_i / f_90)^2`` with ``f = tsz_uk_per_y``; fully correlated (``C_ij = D f_i f_j / f_90^2``, so the
    90 x 219 term is negative);
  - white instrument noise, diagonal, at the map's depth in uK-arcmin.

  Sky signals are multiplied by ``b_i b_j`` with ``b`` the band's beam transfer times the pixel window (if the
  settings apply one); the instrument noise is not.

* :func:`data_noise_power` -- the smoothed 2-D auto- and cross-power spectra of the apodised maps themselves
  (what ACT's nemo does), for real, non-white, anisotropic data. It contains the clusters' own signal, which
  slightly lowers the S/N of very bright clusters.

Units: both functions return ``P_ij(k) = <M_i(k) M_j(k)^*> / N_pix`` for the unnormalised DFT ``M`` of the
maps, i.e. uK^2 per pixel. A white map of per-pixel standard deviation s has ``P = s^2``; a sky C_ell
[uK^2 sr] gives ``P = C_ell / Omega_pix``. Layout (nband, nband, ny, nx // 2 + 1), float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from szviewer.mf.profiles import band_transfer
from szviewer.mf.settings import MFSettings
from szviewer.sky.bands import NOISE_UK_ARCMIN, tsz_uk_per_y
from szviewer.sky.spectra import ARCMIN_RAD, cmb_lensed_dl, dl_to_cl, ell_grid

ELL_PIVOT = 3000.0


def _flat_dl_cl(ell: np.ndarray, dl: float) -> np.ndarray:
    return dl_to_cl(ell, np.full_like(ell, dl))


def model_noise_cl(ell: np.ndarray, settings: MFSettings,
                   noise_uk_arcmin: Sequence[float] | None = None,
                   transfer: np.ndarray | None = None) -> np.ndarray:
    """Analytic noise covariance ``C_ij(ell)`` [uK^2 sr], shape (nband, nband, *ell.shape).

    ``transfer`` (nband, *ell.shape) multiplies the sky signals (beam times pixel window); ``None`` means 1.
    ``noise_uk_arcmin`` is the white depth per band (paper's SPT-3G values by default).
    """
    ell = np.asarray(ell, dtype=float)
    bands = settings.bands_ghz
    nb = len(bands)
    if noise_uk_arcmin is None:
        noise_uk_arcmin = [NOISE_UK_ARCMIN[int(b)] for b in bands]
    if len(noise_uk_arcmin) != nb:
        raise ValueError(f"noise_uk_arcmin has {len(noise_uk_arcmin)} entries for {nb} bands")

    common = _flat_dl_cl(ell, settings.ksz_dl_uk2)
    if settings.include_cmb:
        common = common + dl_to_cl(ell, cmb_lensed_dl(ell))
    flat_pivot = 2 * np.pi / (ELL_PIVOT * (ELL_PIVOT + 1.0))  # C_ell of a D_3000 = 1 uK^2 white spectrum
    ps = np.array(settings.ps_dl3000_uk2, dtype=float) * flat_pivot
    f = np.array([float(tsz_uk_per_y(b)) for b in bands])
    f90 = float(tsz_uk_per_y(90.0))
    szbg = _flat_dl_cl(ell, settings.szbg_dl3000_uk2_90) / f90**2

    out = np.empty((nb, nb, *ell.shape))
    for i in range(nb):
        for j in range(i, nb):
            r = 1.0 if i == j else settings.ps_correlation
            sky = common + r * np.sqrt(ps[i] * ps[j]) + szbg * f[i] * f[j]
            if transfer is not None:
                sky = sky * transfer[i] * transfer[j]
            out[i, j] = sky
            out[j, i] = sky
    for i in range(nb):
        out[i, i] += (noise_uk_arcmin[i] * ARCMIN_RAD) ** 2  # white: C = (depth [uK rad])^2
    return out


def model_noise_power(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                      noise_uk_arcmin: Sequence[float] | None = None) -> np.ndarray:
    """The paper's analytic noise model on an (ny, nx) grid, in uK^2 per pixel (see module docstring)."""
    ell = ell_grid(shape[0], shape[1], pixel_arcmin)
    transfer = np.stack([band_transfer(shape, pixel_arcmin, fwhm, settings.pixel_window)
                         for fwhm in settings.beam_fwhm_arcmin])
    omega_pix = (pixel_arcmin * ARCMIN_RAD) ** 2
    return model_noise_cl(ell, settings, noise_uk_arcmin, transfer) / omega_pix


def data_noise_power(maps: np.ndarray, pixel_arcmin: float, weight: np.ndarray | None = None,
                     smooth_ell: float = 300.0, workers: int = 2, weight_applied: bool = False,
                     min_smooth_pix: float = 3.0) -> np.ndarray:
    """Smoothed 2-D auto/cross power of the maps [uK^2 per pixel], rfft2 layout (nband, nband, ny, nx//2+1).

    ``maps`` (nband, ny, nx) in uK, finite; ``weight`` (ny, nx) the apodisation (NaN-free, 0 in holes),
    applied here unless ``weight_applied`` says the maps already carry it. The power is normalised by
    ``mean(weight^2)`` so that it estimates the power of the unmasked sky, then smoothed by a Gaussian of
    ``smooth_ell`` (in ell), but at least ``min_smooth_pix`` Fourier pixels, on the periodic Fourier plane.
    The floor matters on small tiles: the estimate is made from the data it then weights, so a mode whose
    power is high by chance is down-weighted; averaging over ~4 pi min_smooth_pix^2 (about 110) modes keeps
    that bias of the S/N normalisation at the per cent level.
    Only the real (parity-even) part of the cross-spectra is kept, which is the expectation for real fields.
    """
    maps = np.asarray(maps)
    nb, ny, nx = maps.shape
    if weight is not None:
        if not weight_applied:
            maps = maps * weight[None]
        w2 = float(np.mean(np.asarray(weight, dtype=float) ** 2))
    else:
        w2 = 1.0
    if w2 <= 0:
        raise ValueError("weight is zero everywhere")
    fk = scipy.fft.rfft2(maps.astype(np.float32, copy=False), axes=(-2, -1), workers=workers)
    norm = np.float32(1.0 / (ny * nx * w2))
    dl_y = 2 * np.pi / (ny * pixel_arcmin * ARCMIN_RAD)  # ell step along y
    dl_x = 2 * np.pi / (nx * pixel_arcmin * ARCMIN_RAD)
    sig_y = max(smooth_ell / dl_y, min_smooth_pix, 0.0)
    sig_x = max(smooth_ell / dl_x, min_smooth_pix, 0.0)
    nxh = nx // 2 + 1
    out = np.empty((nb, nb, ny, nxh))
    for i in range(nb):
        for j in range(i, nb):
            p = (fk[i] * np.conj(fk[j])).real * norm  # float32: smoothing is 2x faster
            out[i, j] = _smooth_half_plane(p, nx, sig_y, sig_x)
            out[j, i] = out[i, j]
    return out


def _smooth_half_plane(p: np.ndarray, nx: int, sig_y: float, sig_x: float,
                       truncate: float = 3.0) -> np.ndarray:
    """Gaussian smoothing of a real, parity-even spectrum on the rfft half plane, as if on the full plane.

    DFT frequencies are periodic in ky ('wrap'); across kx = 0 and the Nyquist column the missing half is
    ``P(-kx, ky) = P(kx, -ky)``, so the half plane is padded with its ky-flipped columns before filtering.
    """
    if sig_y <= 0 and sig_x <= 0:
        return p
    ny, nxh = p.shape
    if sig_y > 0:
        p = ndimage.gaussian_filter1d(p, sig_y, axis=0, mode="wrap", truncate=truncate)
    if sig_x > 0:
        k = min(int(truncate * sig_x + 0.5), nxh - 1)
        flip = p[(-np.arange(ny)) % ny]
        left = flip[:, k:0:-1]  # columns -k .. -1
        first = nx - nxh + 1  # mirror of the first column beyond the rfft half
        right = flip[:, first - 1:first - 1 - k:-1] if first - 1 - k >= 0 else flip[:, first - 1::-1]
        ext = np.concatenate([left, p, right[:, :k]], axis=1)
        ext = ndimage.gaussian_filter1d(ext, sig_x, axis=1, mode="nearest", truncate=truncate)
        p = ext[:, k:k + nxh]
    return p


def solve_noise(power: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``N(k) u(k) = rhs(k)`` mode by mode.

    ``power`` (nband, nband, ny, nxh), ``rhs`` (nband, ny, nxh); returns ``u`` (nband, ny, nxh). Modes where
    ``N`` is singular (e.g. an empty DC mode of a data estimate) get ``u = 0``.
    """
    nb = power.shape[0]
    if nb == 3:
        return _solve_sym3(power, rhs)
    a = np.moveaxis(power, (0, 1), (-2, -1))  # (ny, nxh, nb, nb)
    b = np.moveaxis(rhs, 0, -1)[..., None]  # (ny, nxh, nb, 1)
    if nb == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(a[..., 0, 0] > 0, b[..., 0, 0] / a[..., 0, 0], 0.0)[..., None]
    else:
        # tiny ridge, relative to each mode's trace, so that exactly singular modes do not raise
        tr = np.trace(a, axis1=-2, axis2=-1)
        ridge = 1e-12 * np.where(tr > 0, tr, 1.0)
        a = a + ridge[..., None, None] * np.eye(nb)
        u = np.linalg.solve(a, b)[..., 0]
        u[~np.isfinite(u).all(axis=-1)] = 0.0
    return np.moveaxis(u, -1, 0)


def _solve_sym3(power: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Closed-form solve for symmetric 3 x 3 covariances (cofactors), ~10x faster than ``np.linalg.solve``
    on a stack; float64 keeps it accurate for condition numbers up to ~1e10 (CMB / white noise ~ 1e6)."""
    a, b, c = power[0, 0], power[0, 1], power[0, 2]
    d, e, f = power[1, 1], power[1, 2], power[2, 2]
    c00 = d * f - e * e
    c01 = c * e - b * f
    c02 = b * e - c * d
    c11 = a * f - c * c
    c12 = b * c - a * e
    c22 = a * d - b * b
    det = a * c00 + b * c01 + c * c02
    r0, r1, r2 = rhs[0], rhs[1], rhs[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_det = np.where(det > 0, 1.0 / det, 0.0)  # a covariance is positive definite: det > 0
    return np.stack([(c00 * r0 + c01 * r1 + c02 * r2) * inv_det,
                     (c01 * r0 + c11 * r1 + c12 * r2) * inv_det,
                     (c02 * r0 + c12 * r1 + c22 * r2) * inv_det])


def draw_noise(rng: np.random.Generator, power: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A Gaussian realisation (nband, ny, nx) [uK], float32, of the covariance ``power`` (uK^2 per pixel,
    rfft2 layout as returned by :func:`model_noise_power`), correlated across bands as ``power`` says.

    Real white noise of unit variance is transformed and coloured mode by mode with the Cholesky factor of
    ``power(k)``; since ``power(-k) = power(k)`` the result is real. For tests and simulations.
    """
    nb = power.shape[0]
    a = np.moveaxis(power, (0, 1), (-2, -1))
    chol = np.linalg.cholesky(a + 1e-12 * np.eye(nb) * np.trace(a, axis1=-2, axis2=-1)[..., None, None])
    w = scipy.fft.rfft2(rng.standard_normal((nb, *shape)), axes=(-2, -1))
    col = np.einsum("yxij,jyx->iyx", chol, w)
    return scipy.fft.irfft2(col, s=shape, axes=(-2, -1)).astype(np.float32)
