"""Point sources: subtraction of known bright sources before filtering, and flags near them.

The DeepSZ paper (section 2.1) subtracts point sources brighter than 2 mJy before filtering (SPT-3G practice),
instead of masking them. A source of flux S [mJy] in a band of frequency nu is a delta function whose
one-pixel amplitude is ``S 1e-3 / (Omega_pix dB/dT(nu))`` uK (Omega_pix in sr, dB/dT in Jy/sr/uK; about
933, 481, 391 uK per mJy at 90/148/219 GHz for 0.25' pixels), convolved with the band's Gaussian beam.

Here a source with a beam is painted as the beam sampled at the pixel centres around its (fractional)
position and normalised to the source's total flux; without a beam it is put into the pixel that contains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from szviewer.mf.profiles import FWHM_TO_SIGMA
from szviewer.sky.bands import db_dt_jy_sr_per_uk
from szviewer.sky.spectra import ARCMIN_RAD


@dataclass
class PointSources:
    """A source catalog in map pixel coordinates: ``x`` (column) and ``y`` (row), fractional, and
    ``flux_mjy`` of shape (nsrc, nband) in the map's bands."""

    x: np.ndarray
    y: np.ndarray
    flux_mjy: np.ndarray

    def __post_init__(self) -> None:
        self.x = np.atleast_1d(np.asarray(self.x, dtype=float))
        self.y = np.atleast_1d(np.asarray(self.y, dtype=float))
        self.flux_mjy = np.asarray(self.flux_mjy, dtype=float)
        if self.flux_mjy.ndim == 1:
            self.flux_mjy = self.flux_mjy[:, None]
        if not (len(self.x) == len(self.y) == len(self.flux_mjy)):
            raise ValueError("x, y and flux_mjy must have the same length")

    def __len__(self) -> int:
        return len(self.x)

    def select(self, keep: np.ndarray) -> PointSources:
        return PointSources(self.x[keep], self.y[keep], self.flux_mjy[keep])

    def brighter_than(self, flux_mjy: float, band: int | None = None) -> np.ndarray:
        """Boolean: flux >= ``flux_mjy`` in band index ``band``, or in any band if ``band`` is None."""
        f = self.flux_mjy if band is None else self.flux_mjy[:, [band]]
        return (f >= flux_mjy).any(axis=1)


def uk_per_mjy_pixel(band_ghz: float, pixel_arcmin: float) -> float:
    """uK_CMB in one pixel for 1 mJy: ``1e-3 / (Omega_pix [sr] dB/dT [Jy/sr/uK])``."""
    omega = (pixel_arcmin * ARCMIN_RAD) ** 2
    return 1e-3 / (omega * float(db_dt_jy_sr_per_uk(band_ghz)))


def paint_sources(shape: tuple[int, int], pixel_arcmin: float, sources: PointSources,
                  bands_ghz: Sequence[float], beam_fwhm_arcmin: Sequence[float],
                  origin: tuple[int, int] = (0, 0), chunk: int = 20000) -> np.ndarray:
    """Maps [uK] (nband, ny, nx) float32 of the sources, on a grid whose pixel (0, 0) is map pixel ``origin``
    = (row, column). Sources off the grid contribute their beam's wings that fall on it."""
    ny, nx = shape
    nb = len(bands_ghz)
    if sources.flux_mjy.shape[1] != nb:
        raise ValueError(f"sources have {sources.flux_mjy.shape[1]} bands, maps have {nb}")
    out = np.zeros((nb, ny * nx), dtype=np.float64)
    xs = sources.x - origin[1]
    ys = sources.y - origin[0]
    for i, (nu, fwhm) in enumerate(zip(bands_ghz, beam_fwhm_arcmin, strict=True)):
        amp = sources.flux_mjy[:, i] * uk_per_mjy_pixel(nu, pixel_arcmin)
        if fwhm <= 0:
            xi = np.floor(xs + 0.5).astype(np.int64)
            yi = np.floor(ys + 0.5).astype(np.int64)
            ok = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
            np.add.at(out[i], yi[ok] * nx + xi[ok], amp[ok])
            continue
        sig = fwhm * FWHM_TO_SIGMA / pixel_arcmin  # beam sigma [pixels]
        r = int(np.ceil(5 * sig)) + 1
        off = np.arange(-r, r + 1)
        for a in range(0, len(xs), chunk):
            x, y, s = xs[a:a + chunk], ys[a:a + chunk], amp[a:a + chunk]
            near = (x > -r - 1) & (x < nx + r) & (y > -r - 1) & (y < ny + r)
            x, y, s = x[near], y[near], s[near]
            if not len(x):
                continue
            xc, yc = np.floor(x + 0.5), np.floor(y + 0.5)
            gx = np.exp(-0.5 * ((xc[:, None] + off[None]) - x[:, None]) ** 2 / sig**2)  # (n, 2r+1)
            gy = np.exp(-0.5 * ((yc[:, None] + off[None]) - y[:, None]) ** 2 / sig**2)
            gx /= gx.sum(axis=1, keepdims=True)  # normalise to the total flux
            gy /= gy.sum(axis=1, keepdims=True)
            px = (xc[:, None] + off[None]).astype(np.int64)
            py = (yc[:, None] + off[None]).astype(np.int64)
            val = s[:, None, None] * gy[:, :, None] * gx[:, None, :]
            pyy = np.broadcast_to(py[:, :, None], val.shape)
            pxx = np.broadcast_to(px[:, None, :], val.shape)
            ok = (pxx >= 0) & (pxx < nx) & (pyy >= 0) & (pyy < ny)
            np.add.at(out[i], (pyy[ok] * nx + pxx[ok]), val[ok])
    return out.reshape(nb, ny, nx).astype(np.float32)


def subtract_sources(maps: np.ndarray, pixel_arcmin: float, sources: PointSources | None,
                     bands_ghz: Sequence[float], beam_fwhm_arcmin: Sequence[float],
                     flux_cut_mjy: float = 2.0, origin: tuple[int, int] = (0, 0),
                     cut_band: int | None = None) -> np.ndarray:
    """Maps minus the sources brighter than ``flux_cut_mjy`` (in band index ``cut_band``, or in any band).

    A selected source is subtracted in every band with its catalogued flux. ``maps`` (nband, ny, nx) [uK]
    covers map pixels starting at ``origin`` = (row, column). Returns a new float32 array.
    """
    out = np.array(maps, dtype=np.float32, copy=True)
    if sources is None or len(sources) == 0:
        return out
    bright = sources.select(sources.brighter_than(flux_cut_mjy, cut_band))
    if len(bright) == 0:
        return out
    out -= paint_sources(out.shape[1:], pixel_arcmin, bright, bands_ghz, beam_fwhm_arcmin, origin)
    return out


def near_sources(x: np.ndarray, y: np.ndarray, sources: PointSources | None, radius_pix: float,
                 min_flux_mjy: float = 2.0) -> np.ndarray:
    """True for positions [pixels] within ``radius_pix`` of a source with flux >= ``min_flux_mjy``."""
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    if sources is None or len(sources) == 0 or len(x) == 0:
        return np.zeros(len(x), dtype=bool)
    bright = sources.select(sources.brighter_than(min_flux_mjy))
    if len(bright) == 0:
        return np.zeros(len(x), dtype=bool)
    tree = cKDTree(np.column_stack([bright.x, bright.y]))
    d, _ = tree.query(np.column_stack([x, y]), k=1, distance_upper_bound=radius_pix)
    return np.isfinite(d)


def find_sources(maps: np.ndarray, pixel_arcmin: float, settings, noise_power: np.ndarray,
                 snr_threshold: float = 5.0, min_flux_mjy: float | None = None,
                 detect: np.ndarray | None = None, ring_arcmin: float = 8.0,
                 ring_frac: float = 0.05) -> PointSources:
    """Find point sources in (apodised) maps with a single-band matched filter for the beam.

    In each band the template of a 1 mJy source is ``uk_per_mjy_pixel x beam`` (all its flux in one pixel, or
    the pixel-sampled beam, as :func:`paint_sources` paints it), filtered with the band's own noise power
    (``noise_power[i, i]``, uK^2 per pixel, rfft2 layout, e.g. from ``noise.model_noise_power``), so the
    filtered map is an unbiased flux estimate [mJy] with noise ``sigma_i``. Local maxima (5 x 5 pixels) of the
    highest S/N over the bands, above ``snr_threshold`` (positive: sources are emissive), are sources. Each is
    placed at the vertex of a parabola through the peak and its neighbours (in log S/N, exact for a Gaussian
    beam) in its most significant band; its flux in every band is interpolated there. Only sources with at
    least ``min_flux_mjy`` (default: the settings' flux cut) in some band are returned, in the pixels of
    ``maps``. Clusters are decrements below 217 GHz, so they are not picked up. Peaks within ``ring_arcmin``
    of a source and weaker than ``ring_frac`` of its S/N are the filter's ringing and are dropped.
    """
    import scipy.fft
    from scipy import ndimage

    from szviewer.mf.profiles import band_transfer

    maps = np.asarray(maps)
    nb, ny, nx = maps.shape
    npix = ny * nx
    if min_flux_mjy is None:
        min_flux_mjy = settings.point_source_flux_cut_mjy
    wts = np.full(nx // 2 + 1, 2.0)
    wts[0] = 1.0
    if nx % 2 == 0:
        wts[-1] = 1.0
    flux = np.empty((nb, ny, nx), dtype=np.float32)
    snr = np.empty((nb, ny, nx), dtype=np.float32)
    for i, (nu, fwhm) in enumerate(zip(settings.bands_ghz, settings.beam_fwhm_arcmin, strict=True)):
        # no pixel window: a source is painted as all its flux in one pixel (or the pixel-sampled beam)
        t = uk_per_mjy_pixel(nu, pixel_arcmin) * band_transfer((ny, nx), pixel_arcmin, fwhm, False)
        with np.errstate(divide="ignore", invalid="ignore"):
            psi = np.where(noise_power[i, i] > 0, t / noise_power[i, i], 0.0)
        psi[0, 0] = 0.0
        sigma = 1.0 / np.sqrt(np.sum(wts[None] * t * psi) / npix)
        mk = scipy.fft.rfft2(maps[i].astype(np.float32, copy=False), workers=settings.fft_workers)
        flux[i] = scipy.fft.irfft2(mk * (sigma**2 * psi).astype(np.float32), s=(ny, nx),
                                   workers=settings.fft_workers)
        snr[i] = flux[i] / sigma
    best = snr.max(axis=0)
    # local maxima (5 x 5) above threshold, so that neighbours a beam apart stay separate
    above = (best > snr_threshold) & (best == ndimage.maximum_filter(best, size=5, mode="nearest"))
    if detect is not None:
        above &= detect
    py, px = np.nonzero(above)
    n = len(py)
    if n == 0:
        return PointSources(np.zeros(0), np.zeros(0), np.zeros((0, nb)))
    band = np.argmax(snr[:, py, px], axis=0)
    pk = snr[band, py, px]
    xl, xr = np.clip(px - 1, 0, nx - 1), np.clip(px + 1, 0, nx - 1)
    yl, yr = np.clip(py - 1, 0, ny - 1), np.clip(py + 1, 0, ny - 1)
    dx = _vertex(snr[band, py, xl], pk, snr[band, py, xr])
    dy = _vertex(snr[band, yl, px], pk, snr[band, yr, px])
    xs, ys = px + dx, py + dy
    # flux at the sub-pixel peak, per band: the log-parabolas through the samples, evaluated at (dx, dy)
    f = np.empty((n, nb))
    for i in range(nb):
        mid = flux[i, py, px].astype(float)
        f[:, i] = mid * _log_parabola_gain(flux[i, py, xl], mid, flux[i, py, xr], dx) \
            * _log_parabola_gain(flux[i, yl, px], mid, flux[i, yr, px], dy)
    # the filter rings around very bright sources (its high-pass against the CMB leaves a positive annulus of
    # a few % a few arcmin out): drop peaks weaker than ``ring_frac`` of a source within ``ring_arcmin``
    peak_snr = pk
    keep = (f >= min_flux_mjy).any(axis=1)
    order = np.argsort(-peak_snr)
    tree = cKDTree(np.column_stack([xs, ys]))
    for k in order:
        if not keep[k]:
            continue
        for m in tree.query_ball_point([xs[k], ys[k]], ring_arcmin / pixel_arcmin):
            if m != k and peak_snr[m] < ring_frac * peak_snr[k]:
                keep[m] = False
    return PointSources(xs[keep], ys[keep], f[keep])


def _vertex(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sub-pixel offset of a peak from three samples: vertex of a parabola through their logarithms where all
    are positive (exact for a Gaussian), else through the values; clipped to +-0.5 pixel."""
    left, mid, right = (np.asarray(v, dtype=float) for v in (left, mid, right))
    pos = (left > 0) & (mid > 0) & (right > 0)
    a, b, c = left.copy(), mid.copy(), right.copy()
    a[pos], b[pos], c[pos] = np.log(left[pos]), np.log(mid[pos]), np.log(right[pos])
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
    return np.clip(off, -0.5, 0.5)


def _log_parabola_gain(left: np.ndarray, mid: np.ndarray, right: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Ratio of a peak's value at sub-pixel offset ``off`` to the sampled centre, from the parabola through
    the logarithms of three samples (exact for a Gaussian); 1 where a sample is not positive. At most 2."""
    left, mid, right = (np.asarray(v, dtype=float) for v in (left, mid, right))
    pos = (left > 0) & (mid > 0) & (right > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b, c = np.log(left), np.log(mid), np.log(right)
        g = np.exp(off * (c - a) / 2 + off**2 * (a - 2 * b + c) / 2)
    return np.where(pos & np.isfinite(g), np.clip(g, 0.5, 2.0), 1.0)
