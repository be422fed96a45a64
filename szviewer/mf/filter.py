"""Multi-frequency matched filter in Fourier space (Melin, Bartlett & Delabrouille 2006; DeepSZ paper 2.1).

For a cluster of central Compton parameter y0 at position x0 the maps are
``M_i(k) = y0 tau_i(k) exp(-i k.x0) + N_i(k)``, with the band template ``tau_i = f_i B_i W P_theta_c``
(tSZ spectrum f_i in uK per unit y, beam B_i, pixel window W, beta profile P; see ``profiles.py``) and noise
covariance ``<N_i N_j^*> = N_pix P_ij(k)`` (``noise.py``). The minimum-variance unbiased linear estimate of y0
is (Melin et al. 2006, eqs. 6-8)::

    y0_hat(x) = (1 / N_pix) sum_k sum_i psi_i(k) M_i(k) exp(i k.x)        (= irfft2 of psi . M)
    psi(k)    = sigma^2 P^-1(k) tau(k)
    sigma^-2  = (1 / N_pix) sum_k tau(k)^T P^-1(k) tau(k)

with the sums over the full discrete Fourier plane, so ``E[y0_hat(x0)] = y0`` and ``Var[y0_hat] = sigma^2``
exactly for periodic maps; S/N = y0_hat / sigma. Because ``tau_i(k) = g_i(k) P_theta_c(k)`` with
``g_i = f_i B_i W`` independent of the core radius, ``u = P^-1 g`` and ``q = g^T P^-1 g`` are computed once
per tile and the band combination ``Z = sum_i u_i M_i`` once per map; each of the 12 scales then costs one
multiplication and one inverse real FFT: ``S/N_s = irfft2(sigma_s P_s Z)``. The DC mode is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft

from szviewer.mf.noise import instrument_power, model_sky_power, solve_noise
from szviewer.mf.profiles import profile_fourier, settings_spectral_beams
from szviewer.mf.settings import MFSettings


def rfft_mode_weights(shape: tuple[int, int]) -> np.ndarray:
    """Full-plane modes that each rfft2 column stands for: 1 for kx = 0 and Nyquist, else 2; shape (nxh,)."""
    nx = shape[1]
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w


@dataclass
class MatchedFilterBank:
    """The matched filters of one tile geometry and one noise covariance, for every core radius.

    Attributes: ``u`` = P^-1 g (nband, ny, nx//2+1) float32; ``h`` = sigma_s P_s(k) (nscale, ny, nx//2+1)
    float32, so that ``S/N_s = irfft2(h_s Z)``; ``sigma`` (nscale,) the analytic standard deviation of the y0
    estimate at each scale [dimensionless Compton y]; ``curv_x``, ``curv_y`` (nscale,) the expected curvature of
    a cluster's normalised S/N peak along x and y [1/pixel^2] (``R(d) ~ 1 - c d^2 / 2``), so the position error
    of a peak of S/N nu is ``1 / (nu sqrt(c))`` pixels per axis (the Fisher bound of the matched-filter
    likelihood ``ln L = nu(x)^2 / 2``); ``alpha``, ``beta`` (nscale,) or None: the variance of the S/N map of
    maps weighted by sqrt(h) at relative hits h is ``alpha + beta h`` (instrument and sky parts of the noise).
    """

    shape: tuple[int, int]
    pixel_arcmin: float
    theta_c_arcmin: tuple[float, ...]
    u: np.ndarray
    h: np.ndarray
    sigma: np.ndarray
    workers: int = 2
    curv_x: np.ndarray | None = None
    curv_y: np.ndarray | None = None
    alpha: np.ndarray | None = None
    beta: np.ndarray | None = None

    @property
    def nscale(self) -> int:
        return len(self.theta_c_arcmin)

    def combine(self, maps: np.ndarray) -> np.ndarray:
        """Band-combined Fourier map ``Z(k) = sum_i u_i(k) M_i(k)`` (complex64) of maps [uK]."""
        maps = np.asarray(maps)
        if maps.shape[1:] != self.shape or maps.shape[0] != self.u.shape[0]:
            raise ValueError(f"maps of shape {maps.shape} do not fit a filter bank of "
                             f"{self.u.shape[0]} bands x {self.shape}")
        z = None
        for i in range(maps.shape[0]):
            mk = scipy.fft.rfft2(maps[i].astype(np.float32, copy=False), workers=self.workers)
            mk *= self.u[i]
            if z is None:
                z = mk
            else:
                z += mk
        return z

    def snr_map(self, z: np.ndarray, scale: int) -> np.ndarray:
        """S/N map (float32, ny x nx) of scale index ``scale`` from the combined Fourier map ``z``."""
        return scipy.fft.irfft2(z * self.h[scale], s=self.shape, workers=self.workers)

    def iter_snr(self, maps: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(scale_index, snr_map)`` for every scale, computing one map at a time (low memory)."""
        z = self.combine(maps)
        for s in range(self.nscale):
            yield s, self.snr_map(z, s)

    def apply(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All scales at once: ``(y0_maps, sigma, snr_maps)``, maps of shape (nscale, ny, nx) float32.

        ``y0_maps`` is the unbiased estimate of the central Compton y of a cluster centred on each pixel,
        ``sigma`` (nscale,) its noise, ``snr_maps = y0_maps / sigma``.
        """
        snr = np.empty((self.nscale, *self.shape), dtype=np.float32)
        for s, m in self.iter_snr(maps):
            snr[s] = m
        y0 = snr * self.sigma.astype(np.float32)[:, None, None]
        return y0, self.sigma.copy(), snr

    def position_error_pix(self, scale, snr) -> np.ndarray:
        """1-sigma position error per axis [pixels] of peaks of S/N ``snr`` at scale index ``scale``:
        ``sqrt((1/c_x + 1/c_y) / 2) / snr``."""
        scale = np.asarray(scale, dtype=int)
        c = 0.5 * (1.0 / self.curv_x[scale] + 1.0 / self.curv_y[scale])
        return np.sqrt(c) / np.maximum(np.asarray(snr, dtype=float), 1e-6)


def _quadratic_form(u: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``u^T P u`` per mode: u (nband, ny, nxh), P (nband, nband, ny, nxh) -> (ny, nxh)."""
    return np.einsum("iyx,ijyx,jyx->yx", u, power, u, optimize=True)


def build_filter_bank(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                      noise_power: np.ndarray, split: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> MatchedFilterBank:
    """Matched filters for every core radius of ``settings`` given the noise covariance ``noise_power``.

    ``noise_power`` (nband, nband, ny, nx//2+1) in uK^2 per pixel, from :func:`noise.model_noise_power` or
    :func:`noise.data_noise_power`. ``split`` = (instrument part, sky part) of the true noise of maps weighted by
    sqrt(hits), at unit hits (the covariance at hits h being ``instrument + h sky``): it gives the bank's local
    normalisation ``alpha``, ``beta``.
    """
    shape = (int(shape[0]), int(shape[1]))
    npix = shape[0] * shape[1]
    g = settings_spectral_beams(shape, pixel_arcmin, settings)
    u = solve_noise(noise_power, g)
    u[:, 0, 0] = 0.0  # drop the DC mode: the mean of a tile carries no cluster information
    q = np.einsum("iyx,iyx->yx", g, u)
    wts = rfft_mode_weights(shape)[None, :]
    kx2 = (2 * np.pi * np.fft.rfftfreq(shape[1]))[None, :] ** 2
    ky2 = (2 * np.pi * np.fft.fftfreq(shape[0]))[:, None] ** 2
    qa = qb = None
    if split is not None:
        qa = _quadratic_form(u, split[0])
        qb = _quadratic_form(u, split[1])
    nscale = len(settings.theta_c_arcmin)
    h = np.empty((nscale, shape[0], shape[1] // 2 + 1), dtype=np.float32)
    sigma = np.empty(nscale)
    cx, cy = np.empty(nscale), np.empty(nscale)
    alpha = np.empty(nscale) if split is not None else None
    beta = np.empty(nscale) if split is not None else None
    for s, tc in enumerate(settings.theta_c_arcmin):
        p = profile_fourier(shape, pixel_arcmin, tc, settings.beta, settings.truncate_theta_c)
        w_pq = wts * p * p * q
        inv_var = float(np.sum(w_pq)) / npix
        if not inv_var > 0:
            raise ValueError(f"filter of theta_c = {tc}' has no signal: check the noise covariance")
        sigma[s] = 1.0 / np.sqrt(inv_var)
        h[s] = sigma[s] * p
        cx[s] = float(np.sum(w_pq * kx2)) / npix / inv_var
        cy[s] = float(np.sum(w_pq * ky2)) / npix / inv_var
        if split is not None:
            hh = wts * (sigma[s] * p) ** 2
            alpha[s] = float(np.sum(hh * qa)) / npix
            beta[s] = float(np.sum(hh * qb)) / npix
    return MatchedFilterBank(shape=shape, pixel_arcmin=float(pixel_arcmin),
                             theta_c_arcmin=tuple(settings.theta_c_arcmin), u=u.astype(np.float32), h=h,
                             sigma=sigma, workers=settings.fft_workers, curv_x=cx, curv_y=cy, alpha=alpha,
                             beta=beta)


def data_filter_bank(maps: np.ndarray, pixel_arcmin: float, settings: MFSettings,
                     weight: np.ndarray | None = None, weight_applied: bool = False,
                     detect: np.ndarray | None = None) -> MatchedFilterBank:
    """Filter bank whose noise is the smoothed power of the maps themselves (as ACT's nemo does), iterated
    with the bright candidates' templates subtracted (:func:`szviewer.mf.tilefilter.filter_prepared`).

    ``weight`` is the apodisation, already applied to ``maps`` if ``weight_applied``.
    """
    from szviewer.mf.tilefilter import filter_prepared

    maps = np.asarray(maps, dtype=np.float32)
    shape = maps.shape[1:]
    if weight is None:
        weight = np.ones(shape, dtype=np.float32)
    elif not weight_applied:
        maps = maps * weight[None]
    if detect is None:
        detect = weight >= 1.0
    return filter_prepared(maps, weight, detect, pixel_arcmin, settings.replace(noise_mode="data")).bank


@lru_cache(maxsize=4)
def model_filter_bank(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                      noise_uk_arcmin: tuple[float, ...] | None = None, sky_scale: float = 1.0) -> MatchedFilterBank:
    """Filter bank for the analytic noise model, cached per (tile shape, pixel, settings, noise depth, sky scale).

    ``sky_scale`` is the mean relative hits of maps weighted by sqrt(hits) (1: unweighted maps); the bank's
    ``alpha``, ``beta`` give the S/N variance at any relative hits."""
    sky = model_sky_power(shape, pixel_arcmin, settings)
    inst = instrument_power(shape, pixel_arcmin, settings, noise_uk_arcmin)
    bank = build_filter_bank(shape, pixel_arcmin, settings, inst + sky_scale * sky, split=(inst, sky))
    for arr in (bank.u, bank.h, bank.sigma, bank.curv_x, bank.curv_y, bank.alpha, bank.beta):
        arr.setflags(write=False)  # shared through the cache: protect it
    return bank


def matched_filter(maps: np.ndarray, pixel_arcmin: float, settings: MFSettings | None = None,
                   noise_uk_arcmin: Sequence[float] | None = None,
                   noise_power: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filter periodic maps (nband, ny, nx) [uK] at every scale: returns ``(y0_maps, sigma, snr_maps)``.

    No apodisation or masking: use ``runner.run_mf`` for real maps. ``noise_power`` overrides the noise
    (otherwise the analytic model with ``noise_uk_arcmin`` depths, or the data estimate if
    ``settings.noise_mode == 'data'``).
    """
    settings = settings or MFSettings()
    maps = np.asarray(maps)
    shape = maps.shape[1:]
    if noise_power is None:
        if settings.noise_mode == "data":
            return data_filter_bank(maps, pixel_arcmin, settings).apply(maps)
        else:
            nz = None if noise_uk_arcmin is None else tuple(float(v) for v in noise_uk_arcmin)
            return model_filter_bank(shape, float(pixel_arcmin), settings, nz).apply(maps)
    return build_filter_bank(shape, pixel_arcmin, settings, noise_power).apply(maps)
