"""Peak finding in the matched-filter S/N maps (DeepSZ paper section 2.1).

For each of the filter scales, pixels above the S/N threshold are grouped into connected sets
(``scipy.ndimage.label``, 8-connectivity); a group's position is the S/N-weighted mean of its pixel positions
(optionally of only its core, the pixels above ``centroid_core_frac`` times its peak S/N: for large bright
clusters the wings of a big group carry CMB-distorted noise; with 0.5 the position scatter of 2' clusters at
S/N 15 drops from 0.13' to 0.06' rms in CMB + white noise).
Groups from different scales that share a pixel are the same candidate; of those the group with the highest
peak S/N is kept (greedy, in order of decreasing S/N). Each candidate reports the position (fractional
pixels), the peak S/N, the core radius of the winning scale, and y0 with its error at the peak pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Structured dtype of candidates. Positions in pixels (x = column, y = row) of the array given to the finder.
CANDIDATE_DTYPE = np.dtype([
    ("x", "f8"), ("y", "f8"),            # S/N-weighted centroid [pixel]
    ("x_peak", "i4"), ("y_peak", "i4"),  # pixel of the highest S/N
    ("snr", "f8"),                       # peak S/N of the winning scale
    ("scale", "i2"),                     # index of the winning scale
    ("theta_c_arcmin", "f8"),            # its core radius [arcmin]
    ("y0", "f8"), ("y0_err", "f8"),      # central Compton y at the peak and its analytic noise
    ("npix", "i4"),                      # pixels in the group
    ("touches_mask", "?"),               # the group reaches the edge of the detection region
])

_EIGHT = np.ones((3, 3), dtype=bool)


class PeakFinder:
    """Collect groups scale by scale (so only one S/N map is in memory at a time), then merge across scales.

    ``detect`` (ny, nx) bool restricts detections (apodised edges and holes excluded); ``None`` = everywhere.
    """

    def __init__(self, shape: tuple[int, int], threshold: float, theta_c_arcmin: Sequence[float],
                 detect: np.ndarray | None = None, centroid_core_frac: float = 0.0):
        if not threshold > 0:
            raise ValueError("the S/N threshold must be positive")
        self.shape = (int(shape[0]), int(shape[1]))
        self.threshold = float(threshold)
        self.theta_c_arcmin = tuple(float(t) for t in theta_c_arcmin)
        self.detect = detect
        self.centroid_core_frac = float(centroid_core_frac)
        self._border = None
        if detect is not None:
            self._border = detect & ~ndimage.binary_erosion(detect, structure=_EIGHT, border_value=0)
        self._groups: list[dict[str, np.ndarray]] = []

    def add(self, scale: int, snr: np.ndarray, sigma: float) -> int:
        """Find the groups of one scale's S/N map; returns how many were found."""
        if snr.shape != self.shape:
            raise ValueError(f"S/N map of shape {snr.shape}, expected {self.shape}")
        above = snr > self.threshold
        if self.detect is not None:
            above &= self.detect
        lab, n = ndimage.label(above, structure=_EIGHT)
        if n == 0:
            return 0
        idx = np.flatnonzero(lab)
        labs = lab.ravel()[idx]
        vals = snr.ravel()[idx].astype(np.float64)
        order = np.lexsort((-vals, labs))  # by group, highest S/N first within each group
        idx, labs, vals = idx[order], labs[order], vals[order]
        starts = np.flatnonzero(np.r_[True, labs[1:] != labs[:-1]])
        counts = np.diff(np.r_[starts, len(idx)])
        yy, xx = np.divmod(idx, self.shape[1])
        gid = np.repeat(np.arange(n), counts)
        w = vals
        if self.centroid_core_frac > 0:  # only the group's core: S/N >= frac x its peak
            w = np.where(vals >= self.centroid_core_frac * vals[starts][gid], vals, 0.0)
        wsum = np.bincount(gid, w, minlength=n)
        cx = np.bincount(gid, w * xx, minlength=n) / wsum
        cy = np.bincount(gid, w * yy, minlength=n) / wsum
        touches = np.zeros(n, dtype=bool)
        if self._border is not None:
            touches = np.bincount(gid, self._border.ravel()[idx], minlength=n) > 0
        self._groups.append(dict(scale=np.full(n, scale, dtype=np.int16), sigma=np.full(n, float(sigma)),
                                 snr=vals[starts], x_peak=xx[starts], y_peak=yy[starts], x=cx, y=cy,
                                 npix=counts, touches=touches, pix=idx, starts=starts))
        return n

    def candidates(self) -> np.ndarray:
        """Merged candidates (structured array of ``CANDIDATE_DTYPE``), by decreasing S/N."""
        if not self._groups:
            return np.zeros(0, dtype=CANDIDATE_DTYPE)
        cat = {k: np.concatenate([g[k] for g in self._groups])
               for k in ("scale", "sigma", "snr", "x_peak", "y_peak", "x", "y", "npix", "touches")}
        # pixel lists of every group, in the concatenated numbering
        pix_lists = []
        for g in self._groups:
            bounds = np.r_[g["starts"], len(g["pix"])]
            pix_lists.extend(g["pix"][bounds[j]:bounds[j + 1]] for j in range(len(g["starts"])))
        occupied = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        keep = []
        for j in np.argsort(-cat["snr"], kind="stable"):
            pix = pix_lists[j]
            if occupied[pix].any():
                continue  # overlaps a stronger group at another scale: same candidate
            occupied[pix] = True
            keep.append(j)
        keep = np.asarray(keep, dtype=int)
        out = np.zeros(len(keep), dtype=CANDIDATE_DTYPE)
        for k in ("x", "y", "x_peak", "y_peak", "snr", "scale", "npix"):
            out[k] = cat[k][keep]
        out["theta_c_arcmin"] = np.asarray(self.theta_c_arcmin)[cat["scale"][keep]]
        out["y0_err"] = cat["sigma"][keep]
        out["y0"] = cat["snr"][keep] * cat["sigma"][keep]
        out["touches_mask"] = cat["touches"][keep]
        return out


def find_candidates(snr_maps: np.ndarray, sigma: Sequence[float], theta_c_arcmin: Sequence[float],
                    threshold: float = 3.0, detect: np.ndarray | None = None,
                    centroid_core_frac: float = 0.0) -> np.ndarray:
    """Candidates from a stack of S/N maps (nscale, ny, nx) with the y0 noise ``sigma`` of each scale."""
    finder = PeakFinder(snr_maps.shape[1:], threshold, theta_c_arcmin, detect, centroid_core_frac)
    for s in range(snr_maps.shape[0]):
        finder.add(s, snr_maps[s], sigma[s])
    return finder.candidates()
