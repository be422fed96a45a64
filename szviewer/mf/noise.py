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

from szviewer.mf.settings import MFSettings
from szviewer.sky.bands import NOISE_UK_ARCMIN, tsz_uk_per_y
from szviewer.sky.spectra import ARCMIN_RAD, cmb_lensed_dl, dl_to_cl, ell_grid

ELL_PIVOT = 3000.0


def _flat_dl_cl(ell: np.ndarray, dl: float) -> np.ndarray:
    return dl_to_cl(ell, np.full_like(ell, dl))


#: Spectral indices (flux density S ~ nu^alpha) of the two source populations of the paper's point-source term:
#: radio galaxies (SCIENCE.md section 6: S ~ nu^-0.6) and dusty star-forming galaxies (S ~ nu^3.3-3.6; 3.5 here).
RADIO_ALPHA = -0.6
DUSTY_ALPHA = 3.5


def _source_shape(nu_ghz: float, alpha: float) -> float:
    """D_ell in uK_CMB^2 of a population with S ~ nu^alpha, relative to 148 GHz: (S / dB/dT)^2."""
    from szviewer.sky.bands import db_dt_jy_sr_per_uk

    return float(((nu_ghz / 148.0) ** alpha * db_dt_jy_sr_per_uk(148.0) / db_dt_jy_sr_per_uk(nu_ghz)) ** 2)


def point_source_dl3000(bands_ghz: Sequence[float]) -> np.ndarray:
    """Point-source D_3000 [uK^2] per band: the paper's 2.7, 8.8, 71 at 90/148/219 GHz, and at
    any other effective frequency the sum of a radio (S ~ nu^-0.6) and a dusty (S ~ nu^3.5) population whose two
    amplitudes are fitted (least squares in log D) to the paper's three values. The fit reproduces them to
    about 10%; its residuals there are interpolated in log frequency, so the law is exact at the paper's bands and
    continuous between them. The paper calls its sources one population flat in C_ell, which this keeps."""
    from scipy.optimize import least_squares

    from szviewer.mf.settings import PAPER_PS_DL3000_UK2

    nus = np.array(sorted(PAPER_PS_DL3000_UK2), dtype=float)
    target = np.log([PAPER_PS_DL3000_UK2[int(n)] for n in nus])

    def model(p, nu):
        return np.log(np.exp(p[0]) * _source_shape(nu, RADIO_ALPHA) + np.exp(p[1]) * _source_shape(nu, DUSTY_ALPHA))

    fit = least_squares(lambda p: [model(p, n) - t for n, t in zip(nus, target, strict=True)], x0=[0.0, 1.0])
    # the fit's residuals at the paper's bands, interpolated in log frequency (constant beyond), so that the law
    # passes through the paper's values exactly and stays continuous
    resid = np.array([t - model(fit.x, n) for n, t in zip(nus, target, strict=True)])
    nu = np.asarray(bands_ghz, dtype=float)
    corr = np.interp(np.log(nu), np.log(nus), resid)
    return np.exp(np.array([model(fit.x, v) for v in nu]) + corr)


def ps_dl3000(settings: MFSettings) -> np.ndarray:
    """The point-source D_3000 [uK^2] per band of ``settings`` (given, or :func:`point_source_dl3000`)."""
    if settings.ps_dl3000_uk2:
        return np.array(settings.ps_dl3000_uk2, dtype=float)
    return point_source_dl3000(settings.bands_ghz)


def _depths(settings: MFSettings, noise_uk_arcmin: Sequence[float] | None) -> list[float]:
    nb = settings.nband
    if noise_uk_arcmin is None:
        missing = [b for b in settings.bands_ghz if int(round(b)) not in NOISE_UK_ARCMIN]
        if missing:
            raise ValueError(f"no white-noise depth for band(s) {missing} GHz: give noise_uk_arcmin (the paper's "
                             f"depths are for 90/148/219 GHz only)")
        noise_uk_arcmin = [NOISE_UK_ARCMIN[int(round(b))] for b in settings.bands_ghz]
    if len(noise_uk_arcmin) != nb:
        raise ValueError(f"noise_uk_arcmin has {len(noise_uk_arcmin)} entries for {nb} bands")
    return [float(v) for v in noise_uk_arcmin]


def model_sky_cl(ell: np.ndarray, settings: MFSettings, transfer: np.ndarray | None = None) -> np.ndarray:
    """The sky part of the paper's noise model, ``C_ij(ell)`` [uK^2 sr], shape (nband, nband, *ell.shape):
    CMB + kSZ (fully correlated), point sources (correlation ``ps_correlation``), SZ background (tSZ spectrum,
    fully correlated). ``transfer`` (nband, *ell.shape) multiplies it (beam times pixel window); None means 1."""
    ell = np.asarray(ell, dtype=float)
    bands = settings.bands_ghz
    nb = len(bands)
    common = _flat_dl_cl(ell, settings.ksz_dl_uk2)
    if settings.include_cmb:
        common = common + dl_to_cl(ell, cmb_lensed_dl(ell))
    flat_pivot = 2 * np.pi / (ELL_PIVOT * (ELL_PIVOT + 1.0))  # C_ell of a D_3000 = 1 uK^2 white spectrum
    ps = ps_dl3000(settings) * flat_pivot
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
    return out


def model_noise_cl(ell: np.ndarray, settings: MFSettings,
                   noise_uk_arcmin: Sequence[float] | None = None,
                   transfer: np.ndarray | None = None) -> np.ndarray:
    """Analytic noise covariance ``C_ij(ell)`` [uK^2 sr], shape (nband, nband, *ell.shape): the sky terms of
    :func:`model_sky_cl` plus white instrument noise (isotropic; the 1/f part needs the 2-D grid, see
    :func:`model_noise_power`).

    ``transfer`` (nband, *ell.shape) multiplies the sky signals (beam times pixel window); ``None`` means 1.
    ``noise_uk_arcmin`` is the white depth per band (paper's SPT-3G values by default).
    """
    depth = _depths(settings, noise_uk_arcmin)
    out = model_sky_cl(ell, settings, transfer)
    for i in range(settings.nband):
        out[i, i] += (depth[i] * ARCMIN_RAD) ** 2  # white: C = (depth [uK rad])^2
    return out


def instrument_power(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                     noise_uk_arcmin: Sequence[float] | None = None) -> np.ndarray:
    """The instrument noise of the model at unit relative hits, (nband, nband, ny, nx//2+1) uK^2 per pixel:
    white at ``noise_uk_arcmin`` and, with ``settings.noise_ell_knee``, atmospheric 1/f as
    :meth:`szviewer.sky.instruments.Instrument.noise_power` models it (correlated, anisotropic)."""
    depth = _depths(settings, noise_uk_arcmin)
    if not settings.noise_ell_knee or not any(k > 0 for k in settings.noise_ell_knee):
        out = np.zeros((settings.nband, settings.nband, shape[0], shape[1] // 2 + 1))
        for i in range(settings.nband):
            out[i, i] = (depth[i] / pixel_arcmin) ** 2
        return out
    from szviewer.sky.beams import Beam
    from szviewer.sky.instruments import BandSpec, Instrument

    bands = tuple(BandSpec(band=i + 1, freq_ghz=float(nu), white_uk_arcmin=depth[i], beam=Beam.none(),
                           ell_knee=float(settings.noise_ell_knee[i]), alpha_knee=float(settings.noise_alpha_knee[i]))
                  for i, nu in enumerate(settings.bands_ghz))
    inst = Instrument(name="mf-model", description="", pixel_arcmin=float(pixel_arcmin), bands=bands,
                      atmosphere_correlation=settings.noise_atm_correlation, anisotropy=settings.noise_anisotropy)
    return inst.noise_power(shape, pixel_arcmin)


def model_sky_power(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings) -> np.ndarray:
    """The sky terms of the model on an (ny, nx) grid [uK^2 per pixel], beamed and pixel-windowed."""
    from szviewer.mf.profiles import settings_transfers

    ell = ell_grid(shape[0], shape[1], pixel_arcmin)
    omega_pix = (pixel_arcmin * ARCMIN_RAD) ** 2
    return model_sky_cl(ell, settings, settings_transfers(shape, pixel_arcmin, settings)) / omega_pix


def model_noise_power(shape: tuple[int, int], pixel_arcmin: float, settings: MFSettings,
                      noise_uk_arcmin: Sequence[float] | None = None, sky_scale: float = 1.0) -> np.ndarray:
    """The paper's analytic noise model on an (ny, nx) grid, in uK^2 per pixel (see module docstring):
    ``sky_scale`` x sky terms + instrument noise (:func:`instrument_power`). ``sky_scale`` is the mean relative
    hits of a tile whose maps are weighted by sqrt(hits) (the sky is then amplified, the noise made stationary)."""
    return sky_scale * model_sky_power(shape, pixel_arcmin, settings) + instrument_power(
        shape, pixel_arcmin, settings, noise_uk_arcmin)


def data_noise_power(maps: np.ndarray, pixel_arcmin: float, weight: np.ndarray | None = None,
                     smooth_ell: float = 300.0, workers: int = 2, weight_applied: bool = False,
                     min_smooth_pix: float = 3.0, transfer: np.ndarray | None = None) -> np.ndarray:
    """Smoothed 2-D auto/cross power of the maps [uK^2 per pixel], rfft2 layout (nband, nband, ny, nx//2+1).

    ``maps`` (nband, ny, nx) in uK, finite; ``weight`` (ny, nx) the window (NaN-free, 0 in holes), applied here
    unless ``weight_applied`` says the maps already carry it. The power is normalised by ``mean(weight^2)`` so
    that it estimates the power of the unmasked sky, then smoothed by a Gaussian of ``smooth_ell`` (in ell), but
    at least ``min_smooth_pix`` Fourier pixels, on the periodic Fourier plane, the same kernel for every (i, j)
    so that the estimate stays a (weighted) sample covariance: its near-singular cross-band structure (the CMB
    is the same in every band) is what lets the filter cancel the CMB, and scaling the elements differently
    (e.g. smoothing relative to a radial reference) breaks it (measured: +50% sigma at 3').
    The floor matters on small tiles: the estimate is made from the data it then weights, so a mode whose
    power is high by chance is down-weighted; averaging over ~4 pi min_smooth_pix^2 (about 110) modes keeps
    that bias of the S/N normalisation at the per cent level.
    Use a smooth window (:func:`noise_window`): a box with narrow tapers leaks the CMB's low multipoles, 10^3
    times stronger, into the clusters' band through its sidelobes and biases the noise high by ~4%.
    ``transfer`` (nband, ny, nx//2+1): the bands' beams (times pixel window). The Fourier maps are divided by it
    before the smoothing and the power multiplied back by ``T_i T_j`` after: on the sky the CMB is the same vector
    (1, ..., 1) in every band at every multipole, so the smoothing (and the window's mode mixing) keeps it exactly
    rank one; with the beams left in, its direction ``B_i(ell)`` turns across the smoothing kernel and ~30% of
    spurious noise appears, at ell ~ 1000, in the combination that cancels the CMB (measured: 3' filters 5% worse
    than with the true noise power for 1.6'/1.2'/1.1' beams; with the beams divided out, ~1%).
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
    if transfer is not None:
        tr = np.asarray(transfer, dtype=np.float32)
        floor = np.float32(1e-3)
        fk /= np.maximum(tr, floor)
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
            if transfer is not None:
                out[i, j] *= np.maximum(tr[i], floor) * np.maximum(tr[j], floor)
            out[j, i] = out[i, j]
    return out


def noise_window(shape: tuple[int, int], holes: np.ndarray | None = None) -> np.ndarray:
    """The window of the data noise estimate: a separable Hann window over the tile (sidelobes falling as k^-3
    from a main lobe two Fourier pixels wide, so the CMB's low multipoles do not leak into the clusters' band;
    measured on a 4 deg tile of CMB + white noise: S/N normalisation within 1.5% of the true noise's, against
    +4% with the tile's 8' cosine edges), times ``holes`` (the apodised hole mask, 1 away from holes)."""
    wy = np.sin(np.pi * (np.arange(shape[0]) + 0.5) / shape[0]) ** 2
    wx = np.sin(np.pi * (np.arange(shape[1]) + 0.5) / shape[1]) ** 2
    w = np.outer(wy, wx).astype(np.float32)
    if holes is not None:
        w *= holes.astype(np.float32)
    return w


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
