"""Cluster templates for the matched filter: projected beta model, beam and pixel window in Fourier space.

The signal model of the DeepSZ paper (section 2.1, after Vanderlinde et al. 2010) is the projected isothermal
beta model with beta = 1::

    y(theta) = y0 (1 + theta^2 / theta_c^2)^((1 - 3 beta) / 2)  =  y0 / (1 + theta^2 / theta_c^2)

For beta = 1 the profile falls as theta^-2 and its integral diverges logarithmically, so it is truncated at
``truncate`` core radii (SPT truncates too). Its Fourier transform is computed numerically on the map grid
(the FFT of the profile sampled at pixel centres, centred on pixel (0, 0) with periodic wrapping), so the
template matches the pixelisation exactly; the pixel window (sinc in x and y) and the Gaussian beam are
applied as Fourier multipliers.

Conventions: Fourier arrays use the ``numpy.fft.rfft2`` layout, shape (ny, nx // 2 + 1), and the discrete
transform ``T(k) = sum_x t(x) exp(-2 pi i k.x)`` without normalisation, so ``T(0)`` is the sum of the
template's pixels. Angles in arcmin; a template band is in uK_CMB per unit y0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.fft

from szviewer.sky.bands import tsz_uk_per_y
from szviewer.sky.spectra import ARCMIN_RAD, ell_grid

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def beta_profile(theta_arcmin: np.ndarray | float, theta_c_arcmin: float, beta: float = 1.0,
                 truncate: float = 5.0) -> np.ndarray:
    """Projected beta-model profile normalised to 1 at the centre (dimensionless; multiply by y0).

    ``(1 + theta^2/theta_c^2)^((1 - 3 beta)/2)`` for ``theta <= truncate * theta_c``, 0 beyond.
    """
    t = np.asarray(theta_arcmin, dtype=float) / theta_c_arcmin
    out = (1.0 + t * t) ** ((1.0 - 3.0 * beta) / 2.0)
    return np.where(t <= truncate, out, 0.0)


def _periodic_offsets(n: int) -> np.ndarray:
    """Signed pixel offsets 0, 1, ..., -2, -1 of a periodic axis of length n."""
    return np.fft.fftfreq(n, d=1.0 / n)


def profile_real(shape: tuple[int, int], pixel_arcmin: float, theta_c_arcmin: float, beta: float = 1.0,
                 truncate: float = 5.0) -> np.ndarray:
    """The beta profile sampled at pixel centres, centred on pixel (0, 0) with periodic wrapping.

    Only the pixels within ``truncate * theta_c`` of the centre are evaluated (the profile is 0 beyond)."""
    ny, nx = shape
    oy, ox = _periodic_offsets(ny), _periodic_offsets(nx)
    reach = truncate * theta_c_arcmin / pixel_arcmin
    if not np.isfinite(reach) or 2 * reach + 3 >= min(ny, nx):
        return beta_profile(np.hypot(oy[:, None] * pixel_arcmin, ox[None, :] * pixel_arcmin), theta_c_arcmin, beta,
                            truncate)
    r = int(np.floor(reach)) + 1  # offsets beyond r lie beyond the truncation radius
    iy = np.r_[0:r + 1, ny - r:ny]
    ix = np.r_[0:r + 1, nx - r:nx]
    out = np.zeros(shape)
    out[np.ix_(iy, ix)] = beta_profile(np.hypot(oy[iy][:, None] * pixel_arcmin, ox[ix][None, :] * pixel_arcmin),
                                       theta_c_arcmin, beta, truncate)
    return out


@lru_cache(maxsize=64)
def _profile_fourier_cached(shape: tuple[int, int], pixel_arcmin: float, theta_c_arcmin: float,
                            beta: float, truncate: float) -> np.ndarray:
    prof = profile_real(shape, pixel_arcmin, theta_c_arcmin, beta, truncate)
    # the profile is even (t(x) = t(-x) on the periodic grid), so its DFT is real
    out = scipy.fft.rfft2(prof).real
    out.setflags(write=False)
    return out


def profile_fourier(shape: tuple[int, int], pixel_arcmin: float, theta_c_arcmin: float, beta: float = 1.0,
                    truncate: float = 5.0) -> np.ndarray:
    """DFT of :func:`profile_real` in rfft2 layout (real, float64, read-only, cached per grid)."""
    return _profile_fourier_cached((int(shape[0]), int(shape[1])), float(pixel_arcmin),
                                   float(theta_c_arcmin), float(beta), float(truncate))


def beam_transfer(ell: np.ndarray, fwhm_arcmin: float) -> np.ndarray:
    """Gaussian beam transfer ``exp(-ell (ell + 1) sigma_b^2 / 2)``; 1 everywhere for FWHM = 0."""
    if fwhm_arcmin <= 0:
        return np.ones_like(ell, dtype=float)
    sig = fwhm_arcmin * FWHM_TO_SIGMA * ARCMIN_RAD
    return np.exp(-0.5 * ell * (ell + 1.0) * sig * sig)


def pixel_window(shape: tuple[int, int]) -> np.ndarray:
    """Square-pixel window ``sinc(k_x) sinc(k_y)`` (k in cycles per pixel) in rfft2 layout."""
    ny, nx = shape
    return np.sinc(np.fft.fftfreq(ny))[:, None] * np.sinc(np.fft.rfftfreq(nx))[None, :]


def band_transfer(shape: tuple[int, int], pixel_arcmin: float, fwhm_arcmin: float,
                  with_pixel_window: bool = True) -> np.ndarray:
    """What the sky goes through in one band: beam transfer times (optionally) the pixel window."""
    ell = ell_grid(shape[0], shape[1], pixel_arcmin)
    b = beam_transfer(ell, fwhm_arcmin)
    if with_pixel_window:
        b = b * pixel_window(shape)
    return b


def spectral_beams(shape: tuple[int, int], pixel_arcmin: float, bands_ghz: Sequence[float],
                   beam_fwhm_arcmin: Sequence[float], with_pixel_window: bool = True) -> np.ndarray:
    """``g_i(k) = f_i B_i(k) W(k)`` for every band, shape (nband, ny, nx//2+1), in uK per unit y.

    The template of band i at core radius theta_c is ``tau_i(k) = g_i(k) P_theta_c(k)`` (Melin et al. 2006,
    eq. 5), so the band-dependent and scale-dependent parts factorise. Cached per grid; read-only.
    """
    return _spectral_beams_cached((int(shape[0]), int(shape[1])), float(pixel_arcmin),
                                  tuple(float(b) for b in bands_ghz),
                                  tuple(float(b) for b in beam_fwhm_arcmin), bool(with_pixel_window))


@lru_cache(maxsize=8)
def _spectral_beams_cached(shape: tuple[int, int], pixel_arcmin: float, bands_ghz: tuple[float, ...],
                           beam_fwhm_arcmin: tuple[float, ...], with_pixel_window: bool) -> np.ndarray:
    out = np.empty((len(bands_ghz), shape[0], shape[1] // 2 + 1))
    for i, (nu, fwhm) in enumerate(zip(bands_ghz, beam_fwhm_arcmin, strict=True)):
        out[i] = float(tsz_uk_per_y(nu)) * band_transfer(shape, pixel_arcmin, fwhm, with_pixel_window)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _settings_transfers_cached(shape: tuple[int, int], pixel_arcmin: float, settings) -> np.ndarray:
    ell = ell_grid(shape[0], shape[1], pixel_arcmin)
    pw = pixel_window(shape) if settings.pixel_window else 1.0
    out = np.empty((settings.nband, shape[0], shape[1] // 2 + 1))
    for i in range(settings.nband):
        out[i] = settings.beam(i)(ell) * pw
    out.setflags(write=False)
    return out


def settings_transfers(shape: tuple[int, int], pixel_arcmin: float, settings) -> np.ndarray:
    """What the sky goes through in each band of ``settings`` (an :class:`~szviewer.mf.settings.MFSettings`):
    its beam (B_ell table or Gaussian FWHM, :meth:`MFSettings.beam`) times the pixel window if applied;
    (nband, ny, nx//2+1), cached per grid, read-only."""
    return _settings_transfers_cached((int(shape[0]), int(shape[1])), float(pixel_arcmin), settings)


def settings_spectral_beams(shape: tuple[int, int], pixel_arcmin: float, settings) -> np.ndarray:
    """``g_i(k) = f_i B_i(k) W(k)`` for the bands, beams (tables or FWHM) and effective frequencies of
    ``settings``, in uK per unit y; (nband, ny, nx//2+1), cached, read-only."""
    return _settings_g_cached((int(shape[0]), int(shape[1])), float(pixel_arcmin), settings)


@lru_cache(maxsize=8)
def _settings_g_cached(shape, pixel_arcmin, settings) -> np.ndarray:
    f = np.array([float(tsz_uk_per_y(nu)) for nu in settings.bands_ghz])
    out = f[:, None, None] * settings_transfers(shape, pixel_arcmin, settings)
    out.setflags(write=False)
    return out


def profile_fourier_any(shape: tuple[int, int], pixel_arcmin: float, theta_c_arcmin: float, beta: float = 1.0,
                        truncate: float = 5.0) -> np.ndarray:
    """:func:`profile_fourier` for any core radius, without filling the cache (fitted radii are all different)."""
    return scipy.fft.rfft2(profile_real(shape, pixel_arcmin, theta_c_arcmin, beta, truncate)).real


def paint_templates(shape: tuple[int, int], pixel_arcmin: float, settings, x, y, y0, theta_c_arcmin,
                    theta_step_arcmin: float = 0.02) -> np.ndarray:
    """Maps [uK] (nband, ny, nx) of beta-model clusters exactly as the filter of ``settings`` models them (its
    beams, tables included, pixel window, effective frequencies), at fractional pixel positions, with any core
    radius (rounded to ``theta_step_arcmin`` to share one profile transform between close radii). For the
    iterative noise estimate (template subtraction) and injections."""
    ny, nx = shape
    x, y, y0 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, y0))
    tcs = np.atleast_1d(np.asarray(theta_c_arcmin, dtype=float))
    if x.size == 0:
        return np.zeros((settings.nband, ny, nx))
    tcs = np.maximum(np.round(tcs / theta_step_arcmin) * theta_step_arcmin, theta_step_arcmin)
    fy = np.fft.fftfreq(ny)
    fx = np.fft.rfftfreq(nx)
    grid = {float(t) for t in settings.theta_c_arcmin}
    acc = np.zeros((ny, nx // 2 + 1), dtype=complex)
    for tc in np.unique(tcs):
        j = tcs == tc
        ey = np.exp(-2j * np.pi * fy[:, None] * y[j][None, :]) * y0[j][None, :]
        ex = np.exp(-2j * np.pi * x[j][:, None] * fx[None, :])
        prof = (profile_fourier(shape, pixel_arcmin, float(tc), settings.beta, settings.truncate_theta_c)
                if float(tc) in grid else
                profile_fourier_any(shape, pixel_arcmin, float(tc), settings.beta, settings.truncate_theta_c))
        acc += prof * (ey @ ex)
    g = settings_spectral_beams(shape, pixel_arcmin, settings)
    return scipy.fft.irfft2(g * acc[None], s=shape, axes=(-2, -1))


def template_fourier(shape: tuple[int, int], pixel_arcmin: float, theta_c_arcmin: float,
                     bands_ghz: Sequence[float], beam_fwhm_arcmin: Sequence[float], beta: float = 1.0,
                     truncate: float = 5.0, with_pixel_window: bool = True) -> np.ndarray:
    """Band templates ``tau_i(k)`` [uK per unit y0], shape (nband, ny, nx//2+1), centred on pixel (0, 0)."""
    g = spectral_beams(shape, pixel_arcmin, bands_ghz, beam_fwhm_arcmin, with_pixel_window)
    return g * profile_fourier(shape, pixel_arcmin, theta_c_arcmin, beta, truncate)[None]


def paint_clusters(shape: tuple[int, int], pixel_arcmin: float, x: Sequence[float], y: Sequence[float],
                   y0: Sequence[float], theta_c_arcmin: Sequence[float], bands_ghz: Sequence[float],
                   beam_fwhm_arcmin: Sequence[float], beta: float = 1.0, truncate: float = 5.0,
                   with_pixel_window: bool = True) -> np.ndarray:
    """Maps [uK] of beta-model clusters at (fractional) pixel positions, exactly as the filter models them.

    Each cluster is the band template shifted in Fourier space (periodic), so sub-pixel positions are exact.
    Meant for injection tests and simulations; shape (nband, ny, nx), float64.
    """
    ny, nx = shape
    x, y, y0 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, y0))
    tcs = np.atleast_1d(np.asarray(theta_c_arcmin, dtype=float))
    fy = np.fft.fftfreq(ny)
    fx = np.fft.rfftfreq(nx)
    g = spectral_beams(shape, pixel_arcmin, bands_ghz, beam_fwhm_arcmin, with_pixel_window)
    acc = np.zeros((ny, nx // 2 + 1), dtype=complex)
    for tc in np.unique(tcs):
        j = tcs == tc
        # the shift phases exp(-2 pi i (fy y + fx x)) are separable: sum over clusters as one matrix product
        ey = np.exp(-2j * np.pi * fy[:, None] * y[j][None, :]) * y0[j][None, :]
        ex = np.exp(-2j * np.pi * x[j][:, None] * fx[None, :])
        acc += profile_fourier(shape, pixel_arcmin, tc, beta, truncate) * (ey @ ex)
    return scipy.fft.irfft2(g * acc[None], s=shape, axes=(-2, -1))
