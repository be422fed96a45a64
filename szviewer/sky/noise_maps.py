"""The instrument noise of a synthetic sky, as a survey has it: one realisation per band, an ivar map, a mask.

Pure functions over numpy arrays (no storage): :func:`relative_hits` (a smooth hit-count pattern on the sphere),
:func:`realise_noise` (white + atmospheric 1/f, correlated between bands, anisotropic if the instrument says so,
scaled by 1/sqrt(hits)), :func:`ivar_map`, :func:`footprint_mask` (apodised edges and holes around bright
sources), and the measurements the sky card reports: :func:`measure_noise` (white level, ell_knee and slope per
band, fitted to the binned power spectrum), :func:`measure_correlation` (cross-band correlation of the 1/f part)
and :func:`depth_summary` (depth range of the ivar map).

Conventions and sources:

- The noise model is that of :mod:`szviewer.sky.instruments`: ``N_ell = N_w (1 + (ell/ell_knee)^alpha)``, the
  form of the SO forecasts (Ade et al. 2019, sec. 2.2) and of ACT/SPT noise fits; the 1/f part of band a and b is
  correlated with coefficient r (SO V3 noise calculator: r = 0.9 within a dichroic tube).
- A Gaussian field with power P [uK^2 per pixel, rfft2 convention of ``szviewer.mf.noise``] is
  ``irfft2(rfft2(w) sqrt(P))`` with w unit white noise (SCIENCE.md section 6); white noise of per-pixel sigma s
  has P = s^2, so the white part is drawn directly in pixel space.
- Inhomogeneous depth: the noise of a pixel is ``n = g / sqrt(hits)`` with g stationary, so the inverse variance of
  the white part is ``hits / sigma_pix^2`` (ACT/SO ivar maps are 1/uK^2 per pixel, Naess et al. 2025).
- A footprint with cosine-apodised edges and holes of ``radius`` around sources brighter than a flux cut, with a
  cosine ramp back to 1 (as ACT DR6's power-spectrum masks: 15 mJy at 150 GHz, 5' holes; PSpipe
  ``global_dr6v4_release.dict``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from szviewer.errors import InputError
from szviewer.sky import geometry
from szviewer.sky.instruments import Instrument, one_over_f_amplitudes
from szviewer.sky.spectra import ARCMIN_RAD, ell_grid

#: spawn key of the hit-pattern stream, so it is independent of every other stream drawn from the same seed
HITS_STREAM = 0x48495453  # "HITS"
#: random Fourier features of the hit pattern (Rahimi & Recht 2007): enough for a Gaussian-looking field
HITS_FEATURES = 128
#: their wavenumbers |k| s / pi, uniform in this band: deep and shallow patches (half-waves) of typical size s
HITS_BAND = (0.5, 1.5)
#: coarse-grid step of the hit pattern in units of its scale s (cubic-spline error ~1e-7, checked)
HITS_NODE_STEP = 1.0 / 60.0
HITS_TOLERANCE = 1e-6
_CHUNK = 1 << 16


# ---------------------------------------------------------------------------------------------- hits

def _hits_features(inst: Instrument, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(HITS_STREAM,)))
    direction = rng.standard_normal((HITS_FEATURES, 3))
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    k = direction * (rng.uniform(*HITS_BAND, HITS_FEATURES) * np.pi / math.radians(inst.depth_scale_deg))[:, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, HITS_FEATURES)
    return k, phase


def _field_at(vec: np.ndarray, k: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """g(v) = sqrt(2/M) sum_m cos(k_m . v + phase_m) at unit vectors (..., 3), in chunks; float64."""
    flat = vec.reshape(-1, 3)
    out = np.empty(flat.shape[0])
    norm = math.sqrt(2.0 / k.shape[0])
    for s in range(0, flat.shape[0], _CHUNK):
        out[s:s + _CHUNK] = norm * np.cos(flat[s:s + _CHUNK] @ k.T + phase).sum(axis=1)
    return out.reshape(vec.shape[:-1])


def _spacing_arcmin(ra: np.ndarray, dec: np.ndarray) -> float:
    """Angular step between neighbouring entries of a 2-D position grid, at its centre [arcmin]."""
    cy, cx = ra.shape[0] // 2, ra.shape[1] // 2
    dx = geometry.separation_arcmin(ra[cy, cx], dec[cy, cx], ra[cy, cx + 1], dec[cy, cx + 1])
    dy = geometry.separation_arcmin(ra[cy, cx], dec[cy, cx], ra[cy + 1, cx], dec[cy + 1, cx])
    return float(max(dx, dy))


def _interpolated_field(ra: np.ndarray, dec: np.ndarray, k, phase, scale_arcmin: float) -> np.ndarray | None:
    """g on a 2-D grid of positions from exact values on a coarse sub-grid and a bicubic spline, or None when the
    grid is too small or not smooth enough for the spline to reach HITS_TOLERANCE (checked at random pixels)."""
    from scipy.interpolate import RectBivariateSpline

    ny, nx = ra.shape
    if ny < 16 or nx < 16:
        return None
    step = int(scale_arcmin * HITS_NODE_STEP / max(_spacing_arcmin(ra, dec), 1e-9))
    if step < 2:
        return None
    iy = np.unique(np.r_[np.arange(0, ny, step), ny - 1])
    ix = np.unique(np.r_[np.arange(0, nx, step), nx - 1])
    nodes = _field_at(geometry.radec_to_vec(ra[np.ix_(iy, ix)], dec[np.ix_(iy, ix)]), k, phase)
    spline = RectBivariateSpline(iy, ix, nodes, kx=3, ky=3, s=0)
    g = spline(np.arange(ny), np.arange(nx))
    # check the spline against the exact field at a few pixels (deterministic choice)
    py = np.linspace(0, ny - 1, 17).astype(int)[1:-1:2] + 1
    px = np.linspace(0, nx - 1, 17).astype(int)[1:-1:2] + 1
    py, px = np.minimum(py, ny - 1), np.minimum(px, nx - 1)
    yy, xx = np.meshgrid(py, px, indexing="ij")
    exact = _field_at(geometry.radec_to_vec(ra[yy, xx], dec[yy, xx]), k, phase)
    if np.max(np.abs(exact - g[yy, xx])) > HITS_TOLERANCE:
        return None
    return g


def relative_hits(inst: Instrument, ra_deg, dec_deg, seed: int) -> np.ndarray:
    """Relative hit counts at sky positions (degrees), float32 of their shape; 1 for ``depth_pattern`` 'uniform'.

    For 'smooth': ``hits = C^(Phi(g) - 1/2)`` with C = ``depth_contrast``, Phi the normal CDF and g a unit
    Gaussian random field on the sphere, a function of the unit vector v only (so two overlapping flat tiles agree
    at the same sky position): ``g(v) = sqrt(2/M) sum_m cos(k_m . v + phi_m)``, M = 128 random Fourier features
    (Rahimi & Recht 2007) with isotropic directions and |k_m| uniform in [0.5, 1.5] pi / s, s = ``depth_scale_deg``
    in radians: deep and shallow patches (half-wavelengths) of typical size s and no power on scales beyond 4 s, so
    over areas of many s the hits are log-uniform in [1/sqrt(C), sqrt(C)] with median 1. Deterministic from
    ``seed``. On a 2-D grid of positions (a tile) g is evaluated exactly every s/60 and interpolated with a bicubic
    spline (error < 1e-6, checked at 49 pixels; exact evaluation otherwise).
    """
    ra = np.asarray(ra_deg, dtype=float)
    dec = np.asarray(dec_deg, dtype=float)
    if inst.depth_pattern == "uniform" or inst.depth_contrast == 1.0:
        return np.ones(ra.shape, dtype=np.float32)
    from scipy.special import ndtr

    k, phase = _hits_features(inst, seed)
    g = None
    if ra.ndim == 2:
        g = _interpolated_field(ra, dec, k, phase, inst.depth_scale_deg * 60.0)
    if g is None:
        g = _field_at(geometry.radec_to_vec(ra, dec), k, phase)
    return np.exp(math.log(inst.depth_contrast) * (ndtr(g) - 0.5)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- noise

def _check_hits(hits, shape) -> np.ndarray:
    hits = np.asarray(hits)
    if hits.shape != tuple(shape):
        raise ValueError(f"hits has shape {hits.shape}, the map {tuple(shape)}")
    if not np.all(np.isfinite(hits)) or np.any(hits <= 0):
        raise ValueError("hits must be finite and > 0 everywhere")
    return hits


def realise_noise(inst: Instrument, shape: tuple[int, int], pixel_arcmin: float, rng: np.random.Generator,
                  hits: np.ndarray | None = None, workers: int = 1) -> np.ndarray:
    """One noise realisation of the instrument, (nb, ny, nx) float32 in uK: ``n_b = g_b / sqrt(hits)``.

    g is a Gaussian realisation of ``inst.noise_power``: per band white noise drawn in pixel space
    (``rng.standard_normal(shape, float32) * sigma_b``, band by band); then, for instruments with 1/f noise, one
    unit white map per 1/f band (in band order), mixed with the Cholesky factor of the bands' correlation matrix
    (coefficient ``atmosphere_correlation``) and shaped by sqrt of each band's (anisotropic) 1/f power, on the
    FFT-friendly periodic grid :func:`fft_shape` and cropped to ``shape`` (so the 1/f field does not wrap around
    the tile). Deterministic for a given ``rng`` state. Memory: the output plus one complex64 half-plane per 1/f
    band.
    """
    ny, nx = shape
    pix = float(pixel_arcmin)
    out = np.empty((len(inst.bands), ny, nx), dtype=np.float32)
    for i, b in enumerate(inst.bands):
        rng.standard_normal((ny, nx), dtype=np.float32, out=out[i])
        out[i] *= np.float32(b.white_sigma_uk(pix))
    if inst.has_one_over_f:
        _add_one_over_f(out, inst, pix, rng, workers)
    if hits is not None:
        out /= np.sqrt(_check_hits(hits, shape), dtype=np.float32)
    return out


def fft_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The smallest FFT-friendly (2, 3, 5 ... factors) shape at least ``shape``; tile sides such as 1268 = 4 x 317
    would otherwise make each FFT several times slower."""
    return (sfft.next_fast_len(int(shape[0]), real=True), sfft.next_fast_len(int(shape[1]), real=True))


def _add_one_over_f(out: np.ndarray, inst: Instrument, pixel_arcmin: float, rng: np.random.Generator,
                    workers: int) -> None:
    """Add the 1/f part, drawn on the periodic grid :func:`fft_shape` (no smaller than the map) and cropped.

    The n bands with 1/f share the correlation matrix C = (1 - r) I + r 1 1^T at every mode, so with L its
    Cholesky factor ``F_i = amp_i sum_{j <= i} L_ij W_j`` from n unit white maps W_j (rfft2), drawn in band order.
    """
    ny, nx = out.shape[1:]
    big = fft_shape((ny, nx))
    red = one_over_f_amplitudes(inst, big, pixel_arcmin)
    which = [i for i, a in enumerate(red) if a is not None]
    r = inst.atmosphere_correlation
    n = len(which)
    chol = np.linalg.cholesky((1.0 - r) * np.eye(n) + r * np.ones((n, n)) + 1e-12 * np.eye(n))
    fields = []
    for k, i in enumerate(which):
        fields.append(sfft.rfft2(rng.standard_normal(big, dtype=np.float32), workers=workers))
        f = fields[k] * np.float32(chol[k, k])
        for j in range(k):
            if chol[k, j] != 0.0:
                f += np.float32(chol[k, j]) * fields[j]
        f *= red[i]
        out[i] += sfft.irfft2(f, s=big, workers=workers)[:ny, :nx]


def ivar_map(inst: Instrument, hits: np.ndarray, pixel_arcmin: float) -> np.ndarray:
    """Inverse variance of the white part per pixel [1/uK^2], (nb, ny, nx) float32: hits / sigma_pix,b^2."""
    hits = np.asarray(hits, dtype=np.float32)
    out = np.empty((len(inst.bands),) + hits.shape, dtype=np.float32)
    for i, b in enumerate(inst.bands):
        np.multiply(hits, np.float32(1.0 / b.white_sigma_uk(pixel_arcmin) ** 2), out=out[i])
    return out


# ---------------------------------------------------------------------------------------------- mask

def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Cosine ramp 0.5 (1 - cos(pi d / width)) for 0 <= d < width, 0 below, 1 above; a step at 0 if width = 0."""
    if width <= 0:
        return (d >= 0).astype(np.float64)
    t = np.clip(d / width, 0.0, 1.0)
    return 0.5 * (1.0 - np.cos(np.pi * t))


def _edge_ramp(box, ra: np.ndarray, dec: np.ndarray, apod_arcmin: float) -> np.ndarray:
    """0 outside the RA/Dec box, a cosine ramp over ``apod_arcmin`` of angular distance inside its edges, 1 beyond.

    Dec edges are parallels (distance along the meridian); RA edges are meridians (great circles), at distance
    asin(cos dec sin dRA). A pole or a full RA ring is not an edge. Only pixels near an edge get the trigonometry.
    """
    ra_min, ra_max, dec_min, dec_max = box
    width = ra_max - ra_min
    dra = (ra - ra_min) % 360.0
    inside = (dra < width) & (dec >= dec_min) & (dec <= dec_max)
    if apod_arcmin <= 0:
        return inside.astype(np.float64)
    d = np.full(ra.shape, np.inf)
    if dec_min > -90.0:
        d = np.minimum(d, (dec - dec_min) * 60.0)
    if dec_max < 90.0:
        d = np.minimum(d, (dec_max - dec) * 60.0)
    if width < 360.0:
        off = np.minimum(dra, width - dra)
        # asin(cos dec sin x) >= (2/pi) x cos dec for x <= 90 deg: only pixels below this bound can be in the ramp
        cand = np.nonzero(inside & (off * np.cos(np.radians(dec)) * (2.0 / np.pi) * 60.0 < apod_arcmin))
        x = np.radians(np.minimum(off[cand], 90.0))
        d_ra = np.degrees(np.arcsin(np.clip(np.cos(np.radians(dec[cand])) * np.sin(x), 0.0, 1.0))) * 60.0
        d[cand] = np.minimum(d[cand], d_ra)
    return np.where(inside, _ramp(np.minimum(d, apod_arcmin), apod_arcmin), 0.0)


def _hole_factor(inst: Instrument, sources, ra: np.ndarray, dec: np.ndarray) -> np.ndarray | None:
    if sources is None or inst.hole_flux_mjy <= 0 or len(sources) == 0:
        return None
    from scipy.spatial import cKDTree

    col = f"flux_{inst.hole_band}"
    if col not in sources.colnames:
        raise InputError(None, f"source table has no column {col!r}, needed for the holes of instrument "
                               f"{inst.name!r} (columns: {', '.join(sources.colnames)})")
    bright = np.asarray(sources[col], dtype=float) > inst.hole_flux_mjy
    if not np.any(bright):
        return None
    src = geometry.radec_to_vec(np.asarray(sources["ra"], dtype=float)[bright],
                                np.asarray(sources["dec"], dtype=float)[bright])
    tree = cKDTree(src)
    reach = math.radians((inst.hole_radius_arcmin + inst.hole_apod_arcmin) / 60.0)
    bound = 2.0 * math.sin(reach / 2.0) * (1 + 1e-9)
    # pre-filter: a pixel within the chord bound of a source lies in one of the 27 cubes (side = bound) around it
    near_cells = np.unique(np.concatenate([_cell_keys(src + np.array(o) * bound, bound) for o in _OFFSETS]))
    flat_ra, flat_dec = ra.ravel(), dec.ravel()
    fac = np.ones(flat_ra.size)
    step = 4 * _CHUNK
    for s in range(0, flat_ra.size, step):
        vec = geometry.radec_to_vec(flat_ra[s:s + step], flat_dec[s:s + step])
        cand = np.nonzero(np.isin(_cell_keys(vec, bound), near_cells))[0]
        if cand.size == 0:
            continue
        chord, _ = tree.query(vec[cand], distance_upper_bound=bound)
        near = np.isfinite(chord)
        dist = np.degrees(2.0 * np.arcsin(np.minimum(chord[near] / 2.0, 1.0))) * 60.0
        fac[s + cand[near]] = _ramp(dist - inst.hole_radius_arcmin, inst.hole_apod_arcmin)
    return fac.reshape(ra.shape)


_OFFSETS = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]


def _cell_keys(vec: np.ndarray, side: float) -> np.ndarray:
    """An int64 key of the cube of side ``side`` holding each unit vector (coordinates in [-1, 1])."""
    c = np.floor((vec + 1.5) / side).astype(np.int64)
    n = int(3.0 / side) + 2
    return (c[..., 0] * n + c[..., 1]) * n + c[..., 2]


def footprint_mask(inst: Instrument, box, ra_deg, dec_deg, sources=None) -> np.ndarray:
    """Survey mask in [0, 1] at sky positions (degrees), float32 of their shape.

    0 outside ``box`` = (ra_min, ra_max, dec_min, dec_max) [deg] (RA may run past 360 as ra_max < ra_min + 360),
    rising as a cosine ramp to 1 over ``edge_apod_arcmin`` inside the box edge (1 everywhere inside if 0); times,
    if ``sources`` (astropy Table with ra, dec, flux_<band> [mJy]) is given, holes: 0 within
    ``hole_radius_arcmin`` of every source brighter than ``hole_flux_mjy`` in ``flux_<hole_band>``, a cosine ramp
    back to 1 over ``hole_apod_arcmin`` (nearest source from a KD-tree of unit vectors).
    """
    ra = np.asarray(ra_deg, dtype=float)
    dec = np.asarray(dec_deg, dtype=float)
    mask = _edge_ramp(tuple(float(v) for v in box), ra, dec, inst.edge_apod_arcmin)
    holes = _hole_factor(inst, sources, ra, dec)
    if holes is not None:
        mask *= holes
    return mask.astype(np.float32)


# ---------------------------------------------------------------------------------------------- measurement

def _hann(shape: tuple[int, int]) -> np.ndarray:
    """Separable cosine bell (Hann) window; its leakage falls fast enough for the steep 1/f spectra."""
    wy = np.hanning(shape[0] + 2)[1:-1]
    wx = np.hanning(shape[1] + 2)[1:-1]
    return np.outer(wy, wx)


def _windowed_ffts(noise: np.ndarray, hits, mask, workers: int):
    """rfft2 of each band of noise sqrt(hits), mean-subtracted, windowed and zero-padded to :func:`fft_shape`;
    the padded shape; the window's mean w^2 and w^4 over the map."""
    noise = np.asarray(noise)
    if noise.ndim == 2:
        noise = noise[None]
    w = _hann(noise.shape[1:])
    if mask is not None:
        w = w * np.asarray(mask, dtype=float)
    scale = None if hits is None else np.sqrt(np.asarray(hits, dtype=float))
    sw = float(np.sum(w))
    big = fft_shape(noise.shape[1:])  # zero-padding is harmless under a window that vanishes at the edges
    ffts = []
    for b in range(noise.shape[0]):
        m = noise[b].astype(np.float64)
        if scale is not None:
            m = m * scale
        m = (m - np.sum(m * w) / sw) * w
        ffts.append(sfft.rfft2(m, s=big, workers=workers))
    return ffts, big, float(np.mean(w**2)), float(np.mean(w**4))


def _log_bins(ell: np.ndarray, ell_range, pixel_arcmin: float, nbins: int = 40):
    lo = float(ell_range[0])
    hi = min(float(ell_range[1]), math.pi / (pixel_arcmin * ARCMIN_RAD))  # the Nyquist multipole of an axis
    edges = np.geomspace(lo, hi, nbins + 1)
    idx = np.digitize(ell.ravel(), edges) - 1
    return edges, idx


def _binned(power: np.ndarray, idx: np.ndarray, nb: int):
    ok = (idx >= 0) & (idx < nb)
    s = np.bincount(idx[ok], weights=power.ravel()[ok], minlength=nb)
    n = np.bincount(idx[ok], minlength=nb).astype(float)
    return s, n


def _fit_noise(ell_c: np.ndarray, cl: np.ndarray, n_eff: np.ndarray, ell_lo: float) -> dict:
    """Fit N_w (1 + (ell/ell_knee)^alpha) to binned C_ell in log space, weights sqrt(n_eff); report ell_knee = 0
    when the 1/f term improves chi^2 by less than 25 or is under 2% of the white level at the lowest bin."""
    from scipy.optimize import least_squares

    y = np.log(cl)
    sw = np.sqrt(n_eff)
    lw = float(np.sum(y * n_eff) / np.sum(n_eff))
    chi2_white = float(np.sum(((y - lw) * sw) ** 2))
    top = ell_c >= np.quantile(ell_c, 0.7)
    nw0 = float(np.median(cl[top]))
    above = np.nonzero(cl > 2 * nw0)[0]
    knee0 = float(ell_c[above[-1]]) if above.size else ell_lo / 2

    def resid(p):
        return (y - (p[0] + np.log1p(np.exp(p[2] * (np.log(ell_c) - p[1]))))) * sw

    res = least_squares(resid, x0=[math.log(nw0), math.log(max(knee0, 1.0)), -3.0],
                        bounds=([-np.inf, 0.0, -10.0], [np.inf, math.log(1e6), -0.2]))
    lnw, lnk, alpha = res.x
    chi2 = float(np.sum(res.fun**2))
    ratio_lo = math.exp(alpha * (math.log(ell_lo) - lnk))
    if chi2_white - chi2 < 25.0 or ratio_lo < 0.02:
        return {"white_cl": math.exp(lw), "ell_knee": 0.0, "alpha_knee": 0.0}
    return {"white_cl": math.exp(lnw), "ell_knee": math.exp(lnk), "alpha_knee": float(alpha)}


def measure_noise(noise: np.ndarray, pixel_arcmin: float, hits: np.ndarray | None = None,
                  ell_range=(200, 20000), mask: np.ndarray | None = None, bands=None,
                  workers: int = 1) -> list[dict]:
    """Per band, the white level [uK-arcmin], ell_knee and slope fitted to the power spectrum of noise sqrt(hits).

    The map is mean-subtracted and apodised with a separable Hann window (times ``mask`` if given), its 2-D power
    normalised by mean(w^2) and averaged in 40 log-spaced ell bins over ``ell_range`` (up to the Nyquist
    multipole), then fitted as ``N_w (1 + (ell/ell_knee)^alpha)`` (ell_knee = 0: no 1/f detected). Each dict holds
    band (its id if ``bands`` is given, else the index), white_uk_arcmin, ell_knee, alpha_knee, and the binned
    spectrum: ell [bin centres] and nl_uk2_sr.
    """
    ffts, big, w2, w4 = _windowed_ffts(noise, hits, mask, workers)
    shape = np.asarray(noise).shape[-2:]
    npix = shape[0] * shape[1]
    ell = ell_grid(big[0], big[1], pixel_arcmin)
    edges, idx = _log_bins(ell, ell_range, pixel_arcmin)
    nbin = len(edges) - 1
    omega = (pixel_arcmin * ARCMIN_RAD) ** 2
    # independent modes: the padded grid oversamples the map's by N_big / N_pix, the window costs w2^2 / w4
    mode_factor = npix / (big[0] * big[1]) * w2**2 / w4
    out = []
    for b, f in enumerate(ffts):
        p = (f.real**2 + f.imag**2) * (omega / (npix * w2))  # C_ell estimate per mode [uK^2 sr]
        s, n = _binned(p, idx, nbin)
        good = n > 0
        cl = s[good] / n[good]
        ell_c = np.sqrt(edges[:-1] * edges[1:])[good]
        fit = _fit_noise(ell_c, cl, n[good] * mode_factor, float(edges[0]))
        out.append({"band": b if bands is None else bands[b],
                    "white_uk_arcmin": math.sqrt(fit["white_cl"]) / ARCMIN_RAD,
                    "ell_knee": fit["ell_knee"], "alpha_knee": fit["alpha_knee"],
                    "ell": ell_c.tolist(), "nl_uk2_sr": cl.tolist()})
    return out


def measure_correlation(noise: np.ndarray, pixel_arcmin: float, hits: np.ndarray | None = None,
                        ell_range=(200, 1000), white_uk_arcmin=None, nbins: int = 8, workers: int = 1) -> np.ndarray:
    """Cross-band correlation coefficient of the 1/f part, (nb, nb).

    In each of ``nbins`` log-spaced bins of ``ell_range``, ``r = sum Re(F_a F_b*) / sqrt(sum(|F_a|^2 - W_a)
    sum(|F_b|^2 - W_b))`` over its modes, with W the white power per mode (from ``white_uk_arcmin`` per band, or
    fitted by :func:`measure_noise`); the bins are averaged weighted by their mode counts, so the few large-scale
    modes that carry most of the 1/f power do not dominate. The white part is independent between bands, so the
    cross-spectrum holds only the 1/f part; choose ``ell_range`` below the knees.
    """
    noise = np.asarray(noise)
    if white_uk_arcmin is None:
        white_uk_arcmin = [m["white_uk_arcmin"] for m in measure_noise(noise, pixel_arcmin, hits, workers=workers)]
    ffts, big, w2, _ = _windowed_ffts(noise, hits, None, workers)
    ell = ell_grid(big[0], big[1], pixel_arcmin)
    edges = np.geomspace(ell_range[0], ell_range[1], nbins + 1)
    idx = np.digitize(ell.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < nbins)
    idx_ok = idx[ok]
    counts = np.bincount(idx_ok, minlength=nbins).astype(float)
    npix = noise.shape[1] * noise.shape[2]
    flat = [f.ravel()[ok] for f in ffts]
    auto = [np.bincount(idx_ok, weights=np.abs(f) ** 2, minlength=nbins)
            - (w / pixel_arcmin) ** 2 * npix * w2 * counts for f, w in zip(flat, white_uk_arcmin, strict=True)]
    nb = len(ffts)
    r = np.eye(nb)
    for a in range(nb):
        for b in range(a + 1, nb):
            cross = np.bincount(idx_ok, weights=(flat[a] * np.conj(flat[b])).real, minlength=nbins)
            good = (counts > 0) & (auto[a] > 0) & (auto[b] > 0)
            rb = cross[good] / np.sqrt(auto[a][good] * auto[b][good])
            r[a, b] = r[b, a] = float(np.sum(rb * counts[good]) / np.sum(counts[good]))
    return r


def depth_summary(ivar: np.ndarray, pixel_arcmin: float, mask: np.ndarray | None = None, bands=None) -> list[dict]:
    """Per band, the white depth [uK-arcmin] = pixel / sqrt(ivar) over pixels with ivar > 0 (and mask > 0):
    min, 5th percentile, median, 95th percentile, max."""
    ivar = np.asarray(ivar)
    if ivar.ndim == 2:
        ivar = ivar[None]
    out = []
    for b in range(ivar.shape[0]):
        v = ivar[b]
        ok = v > 0
        if mask is not None:
            ok &= np.asarray(mask) > 0
        depth = pixel_arcmin / np.sqrt(v[ok].astype(np.float64))
        q = np.percentile(depth, [0, 5, 50, 95, 100]) if depth.size else [np.nan] * 5
        out.append({"band": b if bands is None else bands[b], "min": float(q[0]), "p5": float(q[1]),
                    "median": float(q[2]), "p95": float(q[3]), "max": float(q[4])})
    return out
