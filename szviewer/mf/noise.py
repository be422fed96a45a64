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

* :func:`data_noise_power` -- the smoothed 2-D auto- and cross-power spectra of the maps themselves (what ACT's
  nemo does), for real, non-white, anisotropic data: whitened by smooth ring models in a basis aligned with the
  CMB before the smoothing and re-coloured after, so that steep atmospheric 1/f is not blurred. It contains the
  clusters' own signal, which lowers the S/N of bright clusters; :mod:`szviewer.mf.tilefilter` iterates it with
  the clusters subtracted.

Units: both functions return ``P_ij(k) = <M_i(k) M_j(k)^*> / N_pix`` for the unnormalised DFT ``M`` of the
maps, i.e. uK^2 per pixel. A white map of per-pixel standard deviation s has ``P = s^2``; a sky C_ell
[uK^2 sr] gives ``P = C_ell / Omega_pix``. Layout (nband, nband, ny, nx // 2 + 1), float64.
"""

from __future__ import annotations

import math
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
                     min_smooth_pix: float = 3.0, transfer: np.ndarray | None = None,
                     whiten: bool = True) -> np.ndarray:
    """Smoothed 2-D auto/cross power of the maps [uK^2 per pixel], rfft2 layout (nband, nband, ny, nx//2+1).

    ``maps`` (nband, ny, nx) in uK, finite; ``weight`` (ny, nx) the window (NaN-free, 0 in holes; use
    :func:`noise_window`), applied here unless ``weight_applied`` says the maps already carry it. The power is
    normalised by ``mean(weight^2)`` so that it estimates the power of the unmasked sky.

    How the per-mode sample covariance ``p(k) = Re(m(k) m(k)^H) / N`` becomes an estimate (ACT's nemo smooths the
    2-D power too, Hilton et al. 2021; szifi bins it in rings, Zubeldia et al. 2023):

    1. ``transfer`` (nband, ny, nx//2+1): the bands' beams (times pixel window). The Fourier maps are divided by it
       and the estimate multiplied back by ``T_i T_j``: on the sky the CMB is the same vector (1, ..., 1) in every
       band, so with the beams out it stays exactly rank one under any averaging over modes (with the beams in,
       its direction turns across the kernel and ~30% spurious noise appears in the CMB-cancelling combination).
    2. ``whiten`` (default): the modes are rotated to an orthonormal basis whose first vector is the CMB direction
       ``(1, ..., 1) / sqrt(nband)`` (the others span the CMB-free combinations) and each component is divided by a
       smooth model of its own power: its ring profile in |ell| (mean over rings of +-10% in radius, at least +-1
       Fourier pixel), and below ``PL_ELL`` a power law in ell fitted to the rings of the CMB-free components
       up to 2 ``PL_ELL`` (few modes there: a ring profile would follow their scatter). The whitened covariance
       is nearly flat, so the Gaussian smoothing (step 3) no longer biases it where the noise is steep
       (atmospheric 1/f, ``(ell/ell_knee)^-3``: a Gaussian of 300 in ell raises the power by ~40% at ell = 1000);
       it is re-coloured after. The rescaling is diagonal in that basis, so the estimate stays a positive
       weighted sample covariance and the CMB stays exactly along its vector (a rescaling in the band basis would
       turn it and break the CMB cancellation). Measured on non-periodic 4.8 deg tiles cut from larger skies
       (3 seeds, 0.5'-3' filters, :mod:`szviewer.mf.injection` skies): filter efficiency against the true-power
       filter 0.984-0.993 for spt3g (1/f, anisotropy 4), act-dr6 and SPT-3G white noise with beams, against
       0.89-0.99 with the plain smoothing (it fails on the steep 1/f).
    3. Gaussian smoothing of every element by the same kernel of ``smooth_ell`` in ell, but at least
       ``min_smooth_pix`` Fourier pixels (~4 pi min_smooth_pix^2 modes: the estimate is made from the data it then
       weights, and a mode whose power is high by chance is down-weighted; averaging over ~110 modes keeps that
       bias of the S/N normalisation at the per cent level), on the periodic Fourier plane.

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
    tr = None
    if transfer is not None:
        tr = np.maximum(np.asarray(transfer, dtype=np.float32), np.float32(1e-3))
        fk /= tr
    norm = np.float32(1.0 / (ny * nx * w2))
    dl_y = 2 * np.pi / (ny * pixel_arcmin * ARCMIN_RAD)  # ell step along y
    dl_x = 2 * np.pi / (nx * pixel_arcmin * ARCMIN_RAD)
    sig_y = max(smooth_ell / dl_y, min_smooth_pix, 0.0)
    sig_x = max(smooth_ell / dl_x, min_smooth_pix, 0.0)
    nxh = nx // 2 + 1
    if whiten:
        basis = cmb_basis(nb)
        comp = np.einsum("ai,ayx->iyx", basis.astype(np.float32), fk)
        scale = np.sqrt(whitening_profiles(comp, norm, (ny, nx), max(dl_x, dl_y), dl_y, dl_x))
        comp /= scale.astype(np.float32)
    else:
        basis, comp, scale = None, fk, None
    pairs = [(i, j) for i in range(nb) for j in range(i, nb)]
    smoothed = {}
    for i, j in pairs:
        p = (comp[i] * np.conj(comp[j])).real * norm  # float32: smoothing is 2x faster; whitened: O(1)
        q = _smooth_half_plane(p, nx, sig_y, sig_x).astype(np.float64)
        if scale is not None:
            q *= scale[i] * scale[j]  # float64: the CMB component is ~1e6 times the others
        smoothed[i, j] = q
    out = np.empty((nb, nb, ny, nxh))
    for a, b in pairs:
        if basis is None:
            acc = smoothed[a, b]
        else:  # (U Q U^T)_ab over the unique elements of the symmetric Q, in float64
            acc = np.zeros((ny, nxh))
            for i, j in pairs:
                c = basis[a, i] * basis[b, j] + (basis[a, j] * basis[b, i] if i != j else 0.0)
                if abs(c) > 1e-12:
                    acc += c * smoothed[i, j]
        if tr is not None:
            acc = acc * (tr[a] * tr[b])
        out[a, b] = acc
        out[b, a] = acc
    return out


#: below this multipole the whitening model of the CMB-free components is a power law (see data_noise_power)
PL_ELL = 800.0
#: ring-profile half width, as a fraction of the radius (at least one Fourier pixel)
RING_HALF_WIDTH = 0.1


def cmb_basis(nb: int) -> np.ndarray:
    """Orthonormal (nb, nb) basis whose first column is the CMB direction (1, ..., 1) / sqrt(nb)."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(nb), np.eye(nb)]))
    q = q[:, :nb]
    return q if q[0, 0] > 0 else -q


def whitening_profiles(comp: np.ndarray, norm: float, shape: tuple[int, int], dl: float, dl_y: float,
                       dl_x: float) -> np.ndarray:
    """Smooth positive models (nb, ny, nx//2+1) float64 of the power of each component ``comp`` (nb, ny, nxh) of the
    Fourier maps in the CMB basis (:func:`cmb_basis`): ring profiles in |ell| (rings of width ``dl``, averaged over
    +-``RING_HALF_WIDTH`` of the radius), and for the CMB-free components (all but the first) below ``PL_ELL`` a
    power law fitted to their rings up to 2 ``PL_ELL`` (joined continuously)."""
    ny, nx = shape
    nb, _, nxh = comp.shape
    ly = np.fft.fftfreq(ny) * ny * dl_y
    lx = np.fft.rfftfreq(nx) * nx * dl_x
    r = np.hypot(ly[:, None], lx[None, :]) / dl  # radius in rings
    ring = np.floor(r + 0.5).astype(np.int64).ravel()
    nring = int(ring.max()) + 2
    wts = np.broadcast_to(rfft_mode_weights_1d(nx)[None, :], r.shape).ravel()
    cnt = np.bincount(ring, wts, nring)
    cnt[0] = 0.0  # the DC mode carries nothing
    centres = np.arange(nring, dtype=float)
    half = np.maximum(1, np.round(RING_HALF_WIDTH * centres)).astype(int)
    lo = np.clip(np.arange(nring) - half, 1, nring)
    hi = np.clip(np.arange(nring) + half + 1, 1, nring)
    ccnt = np.concatenate([[0.0], np.cumsum(cnt)])
    r0 = max(PL_ELL / dl, 2.0)
    fit_sel = (centres >= 1) & (centres <= 2 * r0) & (cnt > 0)
    rf = r.ravel()
    i0 = np.clip(np.floor(rf).astype(np.int64), 0, nring - 2)
    frac = rf - i0
    out = np.empty((nb, ny, nxh))
    for c in range(nb):
        sums = np.bincount(ring, (np.abs(comp[c]) ** 2).ravel().astype(np.float64) * wts, nring) * float(norm)
        sums[0] = 0.0
        csum = np.concatenate([[0.0], np.cumsum(sums)])
        n = ccnt[hi] - ccnt[lo]
        prof = (csum[hi] - csum[lo]) / np.maximum(n, 1e-300)
        good = n > 0
        prof = np.interp(centres, centres[good], prof[good]) if good.any() else np.ones(nring)
        prof = np.maximum(prof, 1e-30 * max(prof.max(), 1e-300))
        if c > 0 and fit_sel.sum() >= 3:
            means = sums[fit_sel] / cnt[fit_sel]
            ok = means > 0
            x = np.log(centres[fit_sel][ok])
            wf = np.sqrt(cnt[fit_sel][ok])
            coef = np.linalg.lstsq(np.column_stack([np.ones_like(x), x]) * wf[:, None], np.log(means[ok]) * wf,
                                   rcond=None)[0]
            at_r0 = float(np.interp(r0, centres, prof))
            low = centres < r0
            prof[low] = at_r0 * np.exp(coef[1] * (np.log(np.maximum(centres[low], 0.5)) - math.log(r0)))
        out[c] = (prof[i0] * (1.0 - frac) + prof[i0 + 1] * frac).reshape(ny, nxh)
    return out


def rfft_mode_weights_1d(nx: int) -> np.ndarray:
    """Full-plane modes that each rfft2 column stands for: 1 for kx = 0 and Nyquist, else 2; shape (nx//2+1,)."""
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w


#: cosine taper of the noise window, as a fraction of the tile on each side
NOISE_TAPER_FRAC = 0.15


def noise_window(shape: tuple[int, int], holes: np.ndarray | None = None,
                 taper_frac: float = NOISE_TAPER_FRAC, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The window of the data noise estimate: a separable Tukey window (flat, with cosine-squared tapers over
    ``taper_frac`` of its side at each end) over ``box`` = (row0, row1, col0, col1), the part of the tile that holds
    data (default: the whole tile; 0 outside it), times ``holes`` (the apodised hole mask, 1 away from holes).

    The tapers are wide enough that the CMB's low multipoles and the atmosphere's 1/f do not leak into the clusters'
    band (the tile's own 8' edges leak them: S/N normalisation +4%), and the window keeps mean(w^2) = 0.66 of the
    box's modes: a Hann window (0.14) made the estimate so noisy that filters lost 2% efficiency and read
    pure-noise S/N maps with an rms of 1.03 (white noise, 4.8 deg tiles, measured)."""
    ny, nx = shape
    r0, r1, c0, c1 = box if box is not None else (0, ny, 0, nx)
    ws = []
    for n, a, b in ((ny, r0, r1), (nx, c0, c1)):
        m = max(b - a, 0)
        t = int(round(taper_frac * m))
        w = np.zeros(n)
        seg = np.ones(m)
        if t > 0:
            seg[:t] = np.sin(0.5 * np.pi * (np.arange(t) + 0.5) / t) ** 2
            seg[m - t:] = seg[:t][::-1]
        w[a:b] = seg
        ws.append(w)
    w = np.outer(ws[0], ws[1]).astype(np.float32)
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
