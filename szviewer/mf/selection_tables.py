"""The selection function's tables from an injection run (:mod:`szviewer.mf.selection`): the recovered fraction
binned against (y0, theta_c), (M500, z) and the noise-free S/N, and a summary of completeness, S/N ratio and
position offsets.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

#: recovered-fraction bins: snr_true edges, and numbers of bins in log y0, theta_c, log M500, z
SNR_TRUE_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0, 1e9)
N_Y0_BINS, N_THETA_BINS, N_M_BINS, N_Z_BINS = 8, 6, 6, 5


def _binned(values_x, values_y, rec, edges_x, edges_y) -> list[dict]:
    rows = []
    for a in range(len(edges_x) - 1):
        for b in range(len(edges_y) - 1):
            m = ((values_x >= edges_x[a]) & (values_x < edges_x[a + 1]) & (values_y >= edges_y[b])
                 & (values_y < edges_y[b + 1]))
            n = int(m.sum())
            k = int(rec[m].sum())
            rows.append({"x_lo": float(edges_x[a]), "x_hi": float(edges_x[a + 1]), "y_lo": float(edges_y[b]),
                         "y_hi": float(edges_y[b + 1]), "n_injected": n, "n_recovered": k,
                         "fraction": (k / n) if n else float("nan")})
    return rows


def _edges(v: np.ndarray, nbin: int, log: bool) -> np.ndarray:
    v = v[np.isfinite(v)]
    if not v.size:
        return np.array([0.0, 1.0])
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo * 1.001 + 1e-12
    e = np.geomspace(lo, hi, nbin + 1) if log and lo > 0 else np.linspace(lo, hi, nbin + 1)
    e[-1] = np.nextafter(e[-1], np.inf)
    return e


def selection_tables(table: Table, snr_cut: float) -> tuple[dict[str, Table], dict]:
    """Recovered fraction (recovered within the match radius at S/N >= ``snr_cut``) binned against (y0, theta_c)
    of the beta injections, (M500, z) of the Arnaud ones, and snr_true of all; and a summary: counts, the S/N ratio
    (recovered / true) and offset distributions of the recovered clusters with snr_true >= 5."""
    rec = np.asarray(table["recovered"], bool) & (np.nan_to_num(np.asarray(table["snr"], float)) >= snr_cut)
    kind = np.asarray(table["kind"])
    beta, arn = kind == "beta", kind == "arnaud"
    y0 = np.asarray(table["y0"], float)
    tc = np.asarray(table["theta_c_arcmin"], float)
    m = np.asarray(table["m500_msun"], float)
    z = np.asarray(table["z"], float)
    st = np.asarray(table["snr_true"], float)
    out = {}
    t = Table(rows=_binned(y0[beta], tc[beta], rec[beta], _edges(y0[beta], N_Y0_BINS, True),
                           _edges(tc[beta], N_THETA_BINS, False))) if beta.any() else Table()
    if len(t):
        t.rename_columns(["x_lo", "x_hi", "y_lo", "y_hi"], ["y0_lo", "y0_hi", "theta_c_lo_arcmin", "theta_c_hi_arcmin"])
    out["y0_theta_c"] = t
    t = Table(rows=_binned(m[arn], z[arn], rec[arn], _edges(m[arn], N_M_BINS, True),
                           _edges(z[arn], N_Z_BINS, False))) if arn.any() else Table()
    if len(t):
        t.rename_columns(["x_lo", "x_hi", "y_lo", "y_hi"], ["m500_lo_msun", "m500_hi_msun", "z_lo", "z_hi"])
    out["m500_z"] = t
    rows = []
    for a in range(len(SNR_TRUE_EDGES) - 1):
        sel = (st >= SNR_TRUE_EDGES[a]) & (st < SNR_TRUE_EDGES[a + 1])
        n = int(sel.sum())
        rows.append({"snr_true_lo": SNR_TRUE_EDGES[a], "snr_true_hi": SNR_TRUE_EDGES[a + 1], "n_injected": n,
                     "n_recovered": int(rec[sel].sum()), "fraction": float(rec[sel].mean()) if n else float("nan")})
    out["snr_true"] = Table(rows=rows)
    near_real = np.asarray(table["real_dist_arcmin"], float) if "real_dist_arcmin" in table.colnames else None
    good = rec & (st >= 5.0)
    ratio = np.asarray(table["snr"], float)[good] / st[good]
    off = np.asarray(table["offset_arcmin"], float)[good]

    def q(v, p):
        return None if not v.size else round(float(np.percentile(v, p)), 4)

    summary = {
        "n_injected": len(table), "n_beta": int(beta.sum()), "n_arnaud": int(arn.sum()),
        "n_recovered": int(rec.sum()), "snr_cut": float(snr_cut),
        "completeness_snr_true_ge_5": None if not (st >= 5).any() else round(float(rec[st >= 5].mean()), 4),
        "completeness_snr_true_ge_7": None if not (st >= 7).any() else round(float(rec[st >= 7].mean()), 4),
        # lost although bright, within 30' of a real candidate: blending (the finder merges touching groups)
        "n_lost_bright_near_real": None if near_real is None else int(np.sum(~rec & (st >= 7) & (near_real < 30))),
        "n_lost_bright": int(np.sum(~rec & (st >= 7))),
        # the chance that a real candidate sits within the match radius of an injection before injecting: the
        # floor of the recovered fraction at low noise-free S/N (confusion with faint real clusters)
        "chance_match_fraction": None if "pre_matched" not in table.colnames or not len(table)
        else round(float(np.mean(np.asarray(table["pre_matched"], bool))), 4),
        "snr_ratio_median": q(ratio, 50), "snr_ratio_p16": q(ratio, 16), "snr_ratio_p84": q(ratio, 84),
        "offset_median_arcmin": q(off, 50), "offset_p90_arcmin": q(off, 90), "offset_max_arcmin": q(off, 100),
        "snr_ratio_hist": np.histogram(ratio, bins=np.linspace(0.5, 1.5, 21))[0].tolist(),
        "snr_ratio_hist_edges": [round(float(v), 3) for v in np.linspace(0.5, 1.5, 21)],
        "offset_hist": np.histogram(off, bins=np.linspace(0.0, 1.0, 11))[0].tolist(),
        "offset_hist_edges_arcmin": [round(float(v), 2) for v in np.linspace(0.0, 1.0, 11)],
    }
    return out, summary


__all__ = ["SNR_TRUE_EDGES", "selection_tables"]
