"""One tile through the matched filter: depth weighting, noise (model, or iterated from the data), local S/N
normalisation, peaks, and the S/N maps' rms check.

Inhomogeneous depth. With relative hits h(x) (the inverse-variance map over its reference, see
:func:`relative_hits`) the instrument noise is ``n = g / sqrt(h)`` with g stationary (white and atmospheric 1/f
alike: :mod:`szviewer.sky.noise_maps`), and the sky (CMB, foregrounds) is stationary. The maps are weighted by
sqrt(h), which makes the instrument part stationary (``g + sqrt(h) sky``), and filtered with the noise of the
weighted maps (Melin et al. 2006's filter on whitened maps; nemo weights its maps the same way, Hilton et al.
2021). For h smooth on the filter's scale a cluster of central y0 at x0 appears in the weighted maps as
``sqrt(h(x0)) y0 tau``, so ``y0(x) = F(x) / sqrt(h(x))`` with F the filtered weighted map, and the variance of F is
``sigma^2 (a + b h(x))``: a from the instrument, b from the sky. The model gives a, b analytically
(:attr:`MatchedFilterBank.alpha`, ``beta``); in data mode they are fitted to each S/N map in bins of h, away from
candidates (as nemo normalises its S/N in noise bins of the weight map). ``S/N = F / (sigma sqrt(a + b h))``.

Iterated data noise (szifi, Zubeldia et al. 2023; nemo DR6's second pass, Hilton et al. 2025): the noise power
estimated from the maps holds the clusters, which lowers their own S/N (bright ones most). So: filter, fit the
candidates above ``data_noise_clean_snr`` (position, y0, theta_c: :mod:`szviewer.mf.peaks`), subtract their
templates from the maps used for the noise estimate, estimate the noise again and filter the original maps
again, until the set of those candidates is stable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from szviewer.errors import Cancelled
from szviewer.mf.filter import MatchedFilterBank, build_filter_bank, model_filter_bank
from szviewer.mf.noise import data_noise_power, noise_window
from szviewer.mf.peaks import PeakFinder
from szviewer.mf.profiles import paint_templates, settings_transfers
from szviewer.mf.settings import MFSettings
from szviewer.sky.bands import tsz_uk_per_y
from szviewer.sky.spectra import cos_taper

#: quantile bins of relative hits in which data-mode S/N variances are measured
HITS_BINS = 8
#: below this spread of the relative hits (p95 / p5) a tile counts as uniform (one variance)
UNIFORM_HITS = 1.05
#: candidates at or above this S/N are cut out (a disc) of the pixels that measure S/N variances and rms
EXCLUDE_SNR = 4.0


@dataclass
class TileResult:
    """What one tile gives: ``candidates`` (``peaks.CANDIDATE_DTYPE``, tile pixels), the final ``bank``, the
    ``detect`` mask, ``snr_rms`` (nscale,) the robust rms of the final S/N maps away from candidates (NaN where
    nothing was measured), ``iterations`` (noise re-estimates made), ``norm`` (nscale, 2): the variance model
    a, b of each S/N map (``a + b h``; (1, 0) when the depth is uniform or unknown). ``maps_w``, ``weight``,
    ``hits``: the filtered (weighted, apodised) maps, the apodisation and the relative hits (None: uniform), for
    injections (:mod:`szviewer.mf.selection`)."""

    candidates: np.ndarray
    bank: MatchedFilterBank
    detect: np.ndarray
    snr_rms: np.ndarray
    iterations: int = 0
    norm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    maps_w: np.ndarray | None = None
    weight: np.ndarray | None = None
    hits: np.ndarray | None = None

    def snr_maps(self, z: np.ndarray | None = None):
        """Yield ``(scale, S/N map)`` of the final bank with the local normalisation, for the filtered maps
        (``z`` None) or for a band-combined Fourier map ``z`` of other maps weighted the same way."""
        z = self.bank.combine(self.maps_w) if z is None else z
        for s in range(self.bank.nscale):
            snr = self.bank.snr_map(z, s)
            if self.hits is not None and self.norm.shape[0] == self.bank.nscale:
                snr /= np.sqrt(np.float32(self.norm[s, 0]) + np.float32(self.norm[s, 1]) * self.hits)
            yield s, snr

    def sigma_map(self, s: int):
        """The y0 noise of scale ``s``: a number (uniform depth) or a map."""
        if self.hits is None or self.norm.shape[0] != self.bank.nscale:
            return float(self.bank.sigma[s])
        sd = np.sqrt(np.float32(self.norm[s, 0]) + np.float32(self.norm[s, 1]) * self.hits)
        return self.bank.sigma[s] * sd / np.sqrt(self.hits)


def relative_hits(ivar: np.ndarray, bad: np.ndarray, settings: MFSettings, pixel_arcmin: float,
                  depth_uk_arcmin: Sequence[float] | None = None) -> np.ndarray | None:
    """Relative hits (ny, nx) float32 of a tile from its inverse-variance maps ``ivar`` (nband, ny, nx) [1/uK^2].

    Per band ``h_i = ivar_i (depth_i / pixel)^2``: relative to the white depth the model assumes (so h = 1 at that
    depth; without depths, relative to the band's median ivar over the tile's good pixels). Bands are combined
    as the mean of h_i weighted by each band's white-noise information on y, ``f_i^2 / depth_i^2`` (the bands of
    a survey share one scan, so their h_i nearly agree; where they do not, the local normalisation absorbs the
    rest). Bad pixels get the median. None when no pixel is good."""
    ivar = np.asarray(ivar, dtype=np.float32)
    good = ~bad
    if not good.any():
        return None
    num = np.zeros(ivar.shape[1:], dtype=np.float64)
    wsum = 0.0
    for i in range(ivar.shape[0]):
        v = ivar[i]
        med = float(np.median(v[good]))
        if not med > 0:
            continue
        depth = (float(depth_uk_arcmin[i]) if depth_uk_arcmin is not None and depth_uk_arcmin[i] > 0
                 else pixel_arcmin / math.sqrt(med))
        hi = v * np.float32((depth / pixel_arcmin) ** 2)
        w = float(tsz_uk_per_y(settings.bands_ghz[i])) ** 2 / depth**2
        num += w * hi
        wsum += w
    if wsum <= 0:
        return None
    h = (num / wsum).astype(np.float32)
    med = float(np.median(h[good]))
    h[~good] = med
    lo = 1e-3 * med
    return np.maximum(h, lo)


def _sample(mask: np.ndarray, step: int = 2) -> np.ndarray:
    """Every ``step``-th pixel in each direction of ``mask`` (the S/N maps are smooth on that scale)."""
    sub = np.zeros_like(mask)
    sub[::step, ::step] = mask[::step, ::step]
    return sub


def robust_rms(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation from the median (the rms of a Gaussian; insensitive to a few % of
    clusters or sources); NaN for fewer than 100 values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 100:
        return math.nan
    med = float(np.median(v))
    return 1.4826 * float(np.median(np.abs(v - med)))


def clipped_var(values: np.ndarray, nsig: float = 4.0, iters: int = 3) -> float:
    """Variance about zero after iterative clipping at ``nsig`` standard deviations, corrected for the clipped
    Gaussian tails (at 4 sigma the correction is 0.1%)."""
    from scipy.special import erf

    v = np.asarray(values, dtype=np.float64)
    v2 = v * v
    var = float(np.mean(v2)) if v.size else math.nan
    for _ in range(iters):
        keep = v2 <= nsig * nsig * var
        var = float(np.mean(v2[keep])) if keep.any() else var
    t = nsig
    frac = erf(t / math.sqrt(2)) - 2 * t * math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # E[x^2; |x|<t]
    return var * erf(t / math.sqrt(2)) / frac


class HitsBins:
    """The quantile bins of the relative hits over the ``use`` pixels, shared by every S/N map of a pass (the
    pixels and their hits do not change between scales): :func:`fit_variance` then only gathers each map's values.
    """

    def __init__(self, hits: np.ndarray, index: np.ndarray):
        self.index = index  # flat indices of the pixels (np.flatnonzero(use)): a gather per map, not a selection
        hh = np.take(hits, index).astype(np.float64)
        self.size = hh.size
        self.uniform, self.members, self.hv = True, [], np.zeros(0)
        if hh.size < 200:
            return
        p5, p95 = np.percentile(hh, [5, 95])
        if p95 / max(p5, 1e-12) < UNIFORM_HITS:
            return
        self.uniform = False
        edges = np.quantile(hh, np.linspace(0, 1, HITS_BINS + 1))
        idx = np.clip(np.searchsorted(edges, hh, side="right") - 1, 0, HITS_BINS - 1)
        order = np.argsort(idx, kind="stable")  # each bin's members in pixel order, as a boolean selection gives
        bounds = np.searchsorted(idx[order], np.arange(HITS_BINS + 1))
        members = [order[bounds[k]:bounds[k + 1]] for k in range(HITS_BINS)]
        self.members = [m for m in members if m.size >= 50]
        self.hv = np.array([float(np.mean(hh[m])) for m in self.members])


def fit_variance(raw: np.ndarray, hits: np.ndarray | None, use: np.ndarray | None,
                 bins: HitsBins | None = None) -> tuple[float, float]:
    """(a, b) of ``var(raw) = a + b h`` fitted to the clipped variances in quantile bins of h over ``use`` pixels
    (weighted least squares, a and b >= 0); (var, 0) when h is uniform there. (1, 0) with too few pixels.
    ``bins``: the pass's :class:`HitsBins` (else made from ``hits`` and ``use``)."""
    if bins is None:
        bins = HitsBins(hits, np.flatnonzero(use))
    if bins.size < 200:
        return 1.0, 0.0
    x = np.take(raw, bins.index).astype(np.float64)
    if bins.uniform or len(bins.members) < 2:
        return clipped_var(x), 0.0
    hv = bins.hv
    vv = np.array([clipped_var(x[m]) for m in bins.members])
    nv = np.array([float(m.size) for m in bins.members])
    # the error of a variance estimate is proportional to the variance: weights n / var^2
    w = nv / np.maximum(vv, 1e-12) ** 2
    a_mat = np.column_stack([np.ones_like(hv), hv])
    coef = np.linalg.lstsq(a_mat * np.sqrt(w)[:, None], vv * np.sqrt(w), rcond=None)[0]
    a, b = float(coef[0]), float(coef[1])
    if a < 0:  # all sky-like: var proportional to h
        a, b = 0.0, float(np.sum(w * vv * hv) / np.sum(w * hv * hv))
    elif b < 0:
        a, b = float(np.sum(w * vv) / np.sum(w)), 0.0
    return a, b


def exclusion_mask(shape: tuple[int, int], cands: np.ndarray, pixel_arcmin: float,
                   settings: MFSettings) -> np.ndarray:
    """True within a disc of radius max(3', 3 theta_c + 2 beam FWHM) of every candidate with S/N >= 4."""
    out = np.zeros(shape, dtype=bool)
    if cands is None or len(cands) == 0:
        return out
    c = cands[cands["snr"] >= EXCLUDE_SNR]
    if not len(c):
        return out
    fwhm = max(settings.beam_fwhm_equivalent()) if settings.nband else 0.0
    radius = np.maximum(3.0, 3.0 * c["theta_c_arcmin"] + 2.0 * fwhm) / pixel_arcmin
    ny, nx = shape
    for x, y, r in zip(c["x"], c["y"], radius, strict=True):
        r = float(r)
        y0, y1 = max(int(y - r), 0), min(int(y + r) + 2, ny)
        x0, x1 = max(int(x - r), 0), min(int(x + r) + 2, nx)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return out


def _detect_pass(bank: MatchedFilterBank, maps_w: np.ndarray, detect: np.ndarray, hits: np.ndarray | None,
                 settings: MFSettings, analytic_norm: bool, exclude: np.ndarray | None,
                 cancel: Callable[[], bool] | None) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Filter the weighted maps at every scale, normalise each S/N map locally, find the peaks; returns
    (candidates, the S/N samples away from candidates per scale (for :func:`sample_rms`, needed of the final
    pass only), variance model (a, b) per scale)."""
    finder = PeakFinder(bank.shape, settings.snr_threshold, settings.theta_c_arcmin, detect,
                        settings.centroid_core_frac, settings.position, (bank.curv_x, bank.curv_y))
    use = _sample(detect if exclude is None else detect & ~exclude)
    samples: list[np.ndarray] = [np.zeros(0, np.float32)] * bank.nscale
    norm = np.tile([1.0, 0.0], (bank.nscale, 1))
    if not detect.any():
        return finder.candidates(), samples, norm
    z = bank.combine(maps_w)
    inv_sqrt_h = None if hits is None else (1.0 / np.sqrt(hits)).astype(np.float32)
    use_index = np.flatnonzero(use)
    bins = None if hits is None or analytic_norm and bank.alpha is not None else HitsBins(hits, use_index)
    for s in range(bank.nscale):
        if cancel is not None and cancel():
            raise Cancelled("matched-filter run cancelled")
        snr = bank.snr_map(z, s)
        sigma = bank.sigma[s]
        if hits is not None:
            if analytic_norm and bank.alpha is not None:
                a, b = float(bank.alpha[s]), float(bank.beta[s])
            else:
                a, b = fit_variance(snr, hits, use, bins)
            norm[s] = (a, b)
            sd = np.sqrt(np.float32(a) + np.float32(b) * hits)
            snr /= sd
            sigma = sigma * sd * inv_sqrt_h  # the y0 noise map
        finder.add(s, snr, sigma)
        samples[s] = np.take(snr, use_index)
    return finder.candidates(), samples, norm


def sample_rms(samples: list[np.ndarray]) -> np.ndarray:
    """Robust rms per scale of a pass's S/N samples (NaN where too few)."""
    return np.array([robust_rms(v) for v in samples])


def _stable(prev: np.ndarray, cur: np.ndarray, tol: float, radius_pix: float = 2.0) -> bool:
    """Same bright candidates (each within ``radius_pix`` of one before) with S/N changed by less than ``tol``."""
    if len(prev) != len(cur):
        return False
    if not len(cur):
        return True
    from scipy.spatial import cKDTree

    d, i = cKDTree(np.c_[prev["x"], prev["y"]]).query(np.c_[cur["x"], cur["y"]])
    if np.any(d > radius_pix) or len(set(i.tolist())) != len(cur):
        return False
    return bool(np.all(np.abs(cur["snr"] / prev["snr"][i] - 1.0) < tol))


def mean_hits(hits: np.ndarray | None, weight: np.ndarray) -> float:
    """Mean relative hits weighted by the apodisation squared (as the weighted maps' power averages it)."""
    if hits is None:
        return 1.0
    w2 = weight.astype(np.float64) ** 2
    return float(np.sum(w2 * hits) / max(np.sum(w2), 1e-30))


def filter_prepared(prepared: np.ndarray, weight: np.ndarray, detect: np.ndarray, pixel_arcmin: float,
                    settings: MFSettings, noise_uk_arcmin: Sequence[float] | None = None,
                    hits: np.ndarray | None = None, cancel: Callable[[], bool] | None = None) -> TileResult:
    """Filter a prepared tile (mean-subtracted, apodised maps (nband, ny, nx) [uK] with their apodisation
    ``weight`` and detection mask, from :func:`szviewer.mf.tiling.prepare_tile`) and find its candidates.

    ``hits`` (ny, nx): relative hits (:func:`relative_hits`) for the depth weighting and the local S/N
    normalisation; None: uniform depth. ``noise_uk_arcmin``: the model's white depth per band (model mode)."""
    shape = prepared.shape[1:]
    if hits is not None and settings.use_ivar:
        sq = np.sqrt(hits).astype(np.float32)
        maps_w = prepared * sq[None]
    else:
        hits, sq, maps_w = None, None, prepared
    if settings.noise_mode == "model":
        hbar = mean_hits(hits, weight)
        sky_scale = float(math.exp(round(math.log(hbar) / 0.02) * 0.02)) if hits is not None else 1.0
        nz = None if noise_uk_arcmin is None else tuple(float(v) for v in noise_uk_arcmin)
        bank = model_filter_bank(shape, float(pixel_arcmin), settings, nz, sky_scale)
        cands, samples, norm = _detect_pass(bank, maps_w, detect, hits, settings, True, None, cancel)
        return TileResult(cands, bank, detect, sample_rms(samples), 0, norm, maps_w, weight, hits)

    kw = dict(smooth_ell=settings.data_noise_smooth_ell, workers=settings.fft_workers,
              min_smooth_pix=settings.data_noise_min_smooth_pix,
              transfer=settings_transfers(shape, pixel_arcmin, settings), whiten=settings.data_noise_whiten)
    # the noise is estimated through a Tukey window (noise.noise_window) of the maps before the tile's apodisation,
    # over the box of the tile that holds data (a map edge inside the tile would otherwise cut the window sharply
    # and leak the large-scale CMB and 1/f power into the clusters' band), keeping the hole ramps; inside the
    # apodised rims the division is unstable, so those pixels are set to 0
    inside = weight > 1e-3
    edges = cos_taper(shape, int(math.ceil(settings.apod_arcmin / pixel_arcmin - 1e-9)))
    holes = np.where(edges > 1e-6, weight / np.maximum(edges, 1e-6), 0.0)
    # (periodic maps, with nothing apodised, need no window)
    nwin = noise_window(shape, np.clip(holes, 0.0, 1.0), box=_data_box(inside)) if weight.min() < 1.0 - 1e-6 \
        else weight
    unapod = np.where(inside[None], maps_w / np.where(inside, weight, 1.0)[None], 0.0).astype(np.float32)
    clean = unapod
    prev = None
    exclude = None
    iterations = 0
    while True:
        power = data_noise_power(clean, pixel_arcmin, nwin, **kw)
        bank = build_filter_bank(shape, pixel_arcmin, settings, power)
        cands, samples, norm = _detect_pass(bank, maps_w, detect, hits, settings, False, exclude, cancel)
        if settings.data_noise_clean_snr <= 0 or iterations >= settings.data_noise_iterations:
            break
        bright = cands[cands["snr"] >= settings.data_noise_clean_snr]
        if prev is not None and _stable(prev, bright, settings.data_noise_tolerance):
            break
        if prev is None and not len(bright):
            break
        model = paint_templates(shape, pixel_arcmin, settings, bright["x"], bright["y"], bright["y0"],
                                bright["theta_c_fit_arcmin"]).astype(np.float32)
        if sq is not None:
            model *= sq[None]
        model[:, ~inside] = 0.0
        clean = unapod - model
        exclude = exclusion_mask(shape, cands, pixel_arcmin, settings)
        prev = bright
        iterations += 1
    return TileResult(cands, bank, detect, sample_rms(samples), iterations, norm, maps_w, weight, hits)


def _data_box(inside: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of the rows and columns of the tile that hold data; None if none."""
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    if not rows.size or not cols.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def snr_from_maps(bank: MatchedFilterBank, maps: np.ndarray, hits: np.ndarray | None = None,
                  norm: np.ndarray | None = None) -> np.ndarray:
    """All S/N maps (nscale, ny, nx) of (weighted) maps with a bank and a variance model, for tests and tools."""
    z = bank.combine(maps)
    out = np.empty((bank.nscale, *bank.shape), dtype=np.float32)
    for s in range(bank.nscale):
        out[s] = bank.snr_map(z, s)
        if hits is not None and norm is not None:
            out[s] /= np.sqrt(norm[s, 0] + norm[s, 1] * hits)
    return out


__all__ = ["TileResult", "clipped_var", "exclusion_mask", "filter_prepared", "fit_variance", "mean_hits",
           "relative_hits", "robust_rms", "snr_from_maps"]
