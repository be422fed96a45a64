"""Peak finding in the matched-filter S/N maps (DeepSZ paper section 2.1), with sub-pixel positions.

For each of the filter scales, pixels above the S/N threshold are grouped into connected sets
(``scipy.ndimage.label``, 8-connectivity). Groups from different scales that share a pixel are the same
candidate; of those the group with the highest peak S/N is kept (greedy, in order of decreasing S/N).

Positions (``position``):

* ``'peak'`` (default): the vertex of a quadratic surface fitted (least squares) to the 3 x 3 pixels around the
  group's peak at the winning scale -- the maximum of the matched-filter likelihood ``ln L = nu(x)^2 / 2`` in
  position (Melin et al. 2006 locate clusters at the filtered map's maximum; nemo and szifi do likewise). Its
  1-sigma error per axis is ``1 / (nu sqrt(c))`` with ``c`` the filter's expected peak curvature
  (:attr:`szviewer.mf.filter.MatchedFilterBank.curv_x`). The S/N is the quadratic's value at the vertex, then
  interpolated over scale: the peak S/N of the winning scale and of its two neighbours (the groups merged into
  the candidate) are fitted by a parabola in ln theta_c, whose vertex gives ``theta_c_fit_arcmin`` and the S/N;
  y0 is interpolated there linearly in ln theta_c. This removes the loss of a core radius between the grid's.
* ``'centroid'``: the paper's S/N-weighted mean of the group's pixel positions (optionally of only its core, the
  pixels above ``centroid_core_frac`` times its peak S/N), with the peak pixel's S/N.

Each candidate reports both positions (``x``, ``y`` the chosen one; ``x_cen``, ``y_cen`` the centroid), the
S/N, the core radius of the winning scale, and y0 with its error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Structured dtype of candidates. Positions in pixels (x = column, y = row) of the array given to the finder.
CANDIDATE_DTYPE = np.dtype([
    ("x", "f8"), ("y", "f8"),            # position [pixel]: sub-pixel peak ('peak') or centroid ('centroid')
    ("x_cen", "f8"), ("y_cen", "f8"),    # S/N-weighted centroid of the group [pixel]
    ("x_peak", "i4"), ("y_peak", "i4"),  # pixel of the highest S/N
    ("snr", "f8"),                       # S/N: refined ('peak') or of the peak pixel ('centroid')
    ("snr_peak", "f8"),                  # S/N of the peak pixel of the winning scale
    ("scale", "i2"),                     # index of the winning scale
    ("theta_c_arcmin", "f8"),            # its core radius [arcmin]
    ("theta_c_fit_arcmin", "f8"),        # core radius interpolated between the scales [arcmin]
    ("y0", "f8"), ("y0_err", "f8"),      # central Compton y and its noise
    ("pos_err_pix", "f8"),               # 1-sigma position error per axis [pixel] (NaN: unknown)
    ("npix", "i4"),                      # pixels in the group
    ("touches_mask", "?"),               # the group reaches the edge of the detection region
])

#: least-squares fit of a + b x + c y + d x^2 + e y^2 + f xy to the 3 x 3 pixels (rows dy, columns dx)
_OFF = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=float)
_DESIGN = np.column_stack([np.ones(9), _OFF[:, 1], _OFF[:, 0], _OFF[:, 1] ** 2, _OFF[:, 0] ** 2,
                           _OFF[:, 0] * _OFF[:, 1]])
_PINV = np.linalg.pinv(_DESIGN)  # (6, 9)


def quadratic_vertex(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel maxima of (n, 3, 3) patches centred on peak pixels: ``(dx, dy, value)``.

    The vertex of the least-squares quadratic, where it is a maximum within 1 pixel of the centre; otherwise the
    separable parabolas' vertices along each axis (clipped to +-0.5 pixel), and the centre value where neither
    curves down."""
    f = patches.reshape(len(patches), 9).astype(float)
    a, b, c, d, e, fxy = (f @ _PINV.T).T
    det = 4 * d * e - fxy * fxy
    ok = (d < 0) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = np.where(ok, (-2 * e * b + fxy * c) / det, 0.0)
        dy = np.where(ok, (-2 * d * c + fxy * b) / det, 0.0)
    ok &= (np.abs(dx) <= 1.0) & (np.abs(dy) <= 1.0)
    # fallback: 1-D parabolas through the centre row and column
    left, mid, right = f[:, 3], f[:, 4], f[:, 5]
    down, up = f[:, 1], f[:, 7]
    with np.errstate(divide="ignore", invalid="ignore"):
        den_x = left - 2 * mid + right
        den_y = down - 2 * mid + up
        fx = np.where(den_x < 0, np.clip(0.5 * (left - right) / den_x, -0.5, 0.5), 0.0)
        fy = np.where(den_y < 0, np.clip(0.5 * (down - up) / den_y, -0.5, 0.5), 0.0)
    dx = np.where(ok, dx, fx)
    dy = np.where(ok, dy, fy)
    quad = a + b * dx + c * dy + d * dx * dx + e * dy * dy + fxy * dx * dy
    sep = mid + 0.5 * (right - left) * fx + 0.5 * den_x * fx * fx + 0.5 * (up - down) * fy + 0.5 * den_y * fy * fy
    val = np.where(ok, quad, sep)
    return dx, dy, np.maximum(val, mid)


_EIGHT = np.ones((3, 3), dtype=bool)


class PeakFinder:
    """Collect groups scale by scale (so only one S/N map is in memory at a time), then merge across scales.

    ``detect`` (ny, nx) bool restricts detections (apodised edges and holes excluded); ``None`` = everywhere.
    ``position`` 'centroid' (the paper's, default here for backward compatibility) or 'peak' (see the module
    docstring); ``curvature`` = (curv_x, curv_y) per scale [1/pixel^2] gives position errors.
    """

    def __init__(self, shape: tuple[int, int], threshold: float, theta_c_arcmin: Sequence[float],
                 detect: np.ndarray | None = None, centroid_core_frac: float = 0.0, position: str = "centroid",
                 curvature: tuple[np.ndarray, np.ndarray] | None = None):
        if not threshold > 0:
            raise ValueError("the S/N threshold must be positive")
        if position not in ("peak", "centroid"):
            raise ValueError(f"position must be 'peak' or 'centroid', not {position!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.threshold = float(threshold)
        self.theta_c_arcmin = tuple(float(t) for t in theta_c_arcmin)
        self.detect = detect
        self.centroid_core_frac = float(centroid_core_frac)
        self.position = position
        self.curvature = curvature
        self._border = None
        if detect is not None:
            self._border = detect & ~ndimage.binary_erosion(detect, structure=_EIGHT, border_value=0)
        self._groups: list[dict[str, np.ndarray]] = []

    def add(self, scale: int, snr: np.ndarray, sigma: float | np.ndarray) -> int:
        """Find the groups of one scale's S/N map; returns how many were found.

        ``sigma`` is the noise of y0 at this scale: a number, or a map (ny, nx) where it varies with depth."""
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
        px, py = xx[starts], yy[starts]
        # the 3 x 3 neighbourhood of each peak (clipped at the array edge) and its quadratic vertex
        ny, nx = self.shape
        ry = np.clip(py[:, None] + np.array([-1, 0, 1])[None, :], 0, ny - 1)
        rx = np.clip(px[:, None] + np.array([-1, 0, 1])[None, :], 0, nx - 1)
        patches = snr[ry[:, :, None], rx[:, None, :]]
        dx, dy, vfit = quadratic_vertex(patches)
        sig = np.asarray(sigma, dtype=float)
        sig_pk = np.full(n, float(sig)) if sig.ndim == 0 else sig[py, px].astype(float)
        self._groups.append(dict(scale=np.full(n, scale, dtype=np.int16), sigma=sig_pk,
                                 snr=vals[starts], x_peak=px, y_peak=py, x=cx, y=cy,
                                 x_fit=px + dx, y_fit=py + dy, snr_fit=vfit,
                                 npix=counts, touches=touches, pix=idx, starts=starts))
        return n

    def candidates(self) -> np.ndarray:
        """Merged candidates (structured array of ``CANDIDATE_DTYPE``), by decreasing S/N."""
        if not self._groups:
            return np.zeros(0, dtype=CANDIDATE_DTYPE)
        cat = {k: np.concatenate([g[k] for g in self._groups])
               for k in ("scale", "sigma", "snr", "x_peak", "y_peak", "x", "y", "x_fit", "y_fit", "snr_fit",
                         "npix", "touches")}
        # pixel lists of every group, in the concatenated numbering
        pix_lists = []
        for g in self._groups:
            bounds = np.r_[g["starts"], len(g["pix"])]
            pix_lists.extend(g["pix"][bounds[j]:bounds[j + 1]] for j in range(len(g["starts"])))
        owner = np.full(self.shape[0] * self.shape[1], -1, dtype=np.int64)
        keep = []
        members: dict[int, list[int]] = {}
        for j in np.argsort(-cat["snr"], kind="stable"):
            pix = pix_lists[j]
            hit = owner[pix]
            hit = hit[hit >= 0]
            if hit.size:  # overlaps a stronger group at another scale: same candidate
                members[int(np.bincount(hit).argmax())].append(int(j))
                continue
            owner[pix] = len(keep)
            members[len(keep)] = [int(j)]
            keep.append(j)
        keep = np.asarray(keep, dtype=int)
        out = np.zeros(len(keep), dtype=CANDIDATE_DTYPE)
        for k in ("x_peak", "y_peak", "scale", "npix"):
            out[k] = cat[k][keep]
        out["x_cen"], out["y_cen"] = cat["x"][keep], cat["y"][keep]
        out["snr_peak"] = cat["snr"][keep]
        tcs = np.asarray(self.theta_c_arcmin)
        out["theta_c_arcmin"] = tcs[cat["scale"][keep]]
        out["touches_mask"] = cat["touches"][keep]
        if self.position == "centroid":
            out["x"], out["y"] = cat["x"][keep], cat["y"][keep]
            out["snr"] = cat["snr"][keep]
            out["theta_c_fit_arcmin"] = out["theta_c_arcmin"]
            out["y0_err"] = cat["sigma"][keep]
            out["y0"] = out["snr"] * out["y0_err"]
        else:
            out["x"], out["y"] = cat["x_fit"][keep], cat["y_fit"][keep]
            for r in range(len(keep)):
                snr, tc, err = _scale_fit(members[r], cat, tcs)
                out["snr"][r], out["theta_c_fit_arcmin"][r], out["y0_err"][r] = snr, tc, err
            out["y0"] = out["snr"] * out["y0_err"]
        if self.curvature is not None:
            cxs, cys = (np.asarray(c, dtype=float) for c in self.curvature)
            sc = out["scale"].astype(int)
            out["pos_err_pix"] = np.sqrt(0.5 * (1.0 / cxs[sc] + 1.0 / cys[sc])) / np.maximum(out["snr"], 1e-6)
        else:
            out["pos_err_pix"] = np.nan
        order = np.argsort(-out["snr"], kind="stable")
        return out[order]


def _scale_fit(group_ids: list[int], cat: dict, tcs: np.ndarray) -> tuple[float, float, float]:
    """(S/N, theta_c, y0 noise) of a candidate from its groups: the parabola in ln theta_c through the vertex
    S/N of the winning scale and its two neighbours, where both are among the candidate's groups and the
    parabola has a maximum between them; else the winning scale's vertex."""
    win = group_ids[0]
    s0 = int(cat["scale"][win])
    best = {}
    for j in group_ids:
        s = int(cat["scale"][j])
        if s not in best or cat["snr_fit"][j] > cat["snr_fit"][best[s]]:
            best[s] = j
    v0 = float(cat["snr_fit"][win])
    sig0 = float(cat["sigma"][win])
    if s0 - 1 not in best or s0 + 1 not in best:
        return v0, float(tcs[s0]), sig0
    jm, jp = best[s0 - 1], best[s0 + 1]
    t = np.log(tcs[[s0 - 1, s0, s0 + 1]])
    v = np.array([cat["snr_fit"][jm], v0, cat["snr_fit"][jp]], dtype=float)
    sg = np.array([cat["sigma"][jm], sig0, cat["sigma"][jp]], dtype=float)
    coef = np.polyfit(t - t[1], v, 2)
    if coef[0] >= 0:
        return v0, float(tcs[s0]), sig0
    tv = float(np.clip(-coef[1] / (2 * coef[0]), t[0] - t[1], t[2] - t[1]))
    snr = float(np.polyval(coef, tv))
    # the y0 noise (like y0 itself) interpolated linearly in ln theta_c between the bracketing scales
    k = 0 if tv < 0 else 1
    frac = (tv + t[1] - t[k]) / (t[k + 1] - t[k])
    sig = float(sg[k] * (1 - frac) + sg[k + 1] * frac)
    return max(snr, v0), float(np.exp(tv + t[1])), sig


def find_candidates(snr_maps: np.ndarray, sigma: Sequence[float], theta_c_arcmin: Sequence[float],
                    threshold: float = 3.0, detect: np.ndarray | None = None,
                    centroid_core_frac: float = 0.0, position: str = "centroid",
                    curvature: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Candidates from a stack of S/N maps (nscale, ny, nx) with the y0 noise ``sigma`` of each scale."""
    finder = PeakFinder(snr_maps.shape[1:], threshold, theta_c_arcmin, detect, centroid_core_frac, position,
                        curvature)
    for s in range(snr_maps.shape[0]):
        finder.add(s, snr_maps[s], sigma[s])
    return finder.candidates()
