"""Figures of the MF selection function measured by injection (``szviewer mf WS --inject N``; the MF issue).

Inputs are the tables and summary of :func:`szviewer.mf.selection_tables.selection_tables` as the workspace stores them
(product ``mf_injection``): the recovered fraction against the noise-free S/N (all injections), against (y0,
theta_c) of the beta-model injections and against (M500, z) of the Arnaud et al. (2010) ones, and histograms of the
recovered S/N over the noise-free S/N and of the position offsets [arcmin]. Drawn with matplotlib's Agg canvas
(:mod:`szviewer.evaluate.figures`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .figures import _finish, _new_figure

__all__ = ["selection_figures"]


def _fraction_errors(n_rec: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fraction and its 68% Wilson interval half-widths (lower, upper) for binomial counts."""
    n = np.asarray(n, float)
    k = np.asarray(n_rec, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z = 1.0
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, np.vstack([np.clip(p - (centre - half), 0, None), np.clip(centre + half - p, 0, None)])


def _heat(ax, t, xlo: str, xhi: str, ylo: str, yhi: str, xlabel: str, ylabel: str, logx: bool,
          xscale: float = 1.0) -> None:
    """Recovered fraction in 2-D bins with n_recovered/n_injected written in each; x values divided by ``xscale``."""
    t = t.copy()
    t[xlo] = np.asarray(t[xlo], float) / xscale
    t[xhi] = np.asarray(t[xhi], float) / xscale
    xe = np.unique(np.r_[np.asarray(t[xlo], float), np.asarray(t[xhi], float)])
    ye = np.unique(np.r_[np.asarray(t[ylo], float), np.asarray(t[yhi], float)])
    img = np.full((ye.size - 1, xe.size - 1), np.nan)
    for r in t:
        i = int(np.searchsorted(ye, float(r[ylo])))
        j = int(np.searchsorted(xe, float(r[xlo])))
        if i < img.shape[0] and j < img.shape[1] and r["n_injected"] > 0:
            img[i, j] = float(r["fraction"])
    mesh = ax.pcolormesh(xe, ye, img, vmin=0.0, vmax=1.0, cmap="viridis")
    for r in t:
        if r["n_injected"] > 0:
            xc = np.sqrt(r[xlo] * r[xhi]) if logx else 0.5 * (r[xlo] + r[xhi])
            ax.text(xc, 0.5 * (r[ylo] + r[yhi]), f"{int(r['n_recovered'])}/{int(r['n_injected'])}", ha="center",
                    va="center", fontsize=6, color="w" if float(r["fraction"]) < 0.6 else "k")
    if logx:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.figure.colorbar(mesh, ax=ax, label="recovered fraction")


def selection_figures(tables: Mapping, summary: Mapping) -> dict[str, bytes]:
    """PNG figures {title: bytes} of one injection run: the completeness panels and the S/N-ratio and offset
    histograms. ``tables``: {'snr_true', 'y0_theta_c', 'm500_z'} as stored; ``summary``: the run's summary."""
    figs: dict[str, bytes] = {}
    panels = [k for k in ("snr_true", "y0_theta_c", "m500_z") if k in tables and len(tables[k])]
    if panels:
        fig, axes = _new_figure(4.2 * len(panels), 3.6, ncols=len(panels))
        for ax, key in zip(axes, panels, strict=True):
            t = tables[key]
            if key == "snr_true":
                lo, hi = np.asarray(t["snr_true_lo"], float), np.asarray(t["snr_true_hi"], float)
                hi = np.where(hi > 1e3, 1.5 * lo, hi)  # the open last bin drawn half as wide again
                keep = np.asarray(t["n_injected"]) > 0
                x = 0.5 * (lo + hi)
                p, err = _fraction_errors(np.asarray(t["n_recovered"]), np.asarray(t["n_injected"]))
                ax.errorbar(x[keep], p[keep], yerr=err[:, keep], xerr=0.5 * (hi - lo)[keep], fmt="o", ms=3)
                chance = summary.get("chance_match_fraction")
                if chance is not None:
                    ax.axhline(float(chance), color="C3", ls=":", lw=1,
                               label=f"a real candidate within the match radius: {float(chance):.2f}")
                cut = summary.get("snr_cut")
                if cut is not None:
                    ax.axvline(float(cut), color="0.5", ls="--", lw=1, label=f"S/N cut {float(cut):g}")
                if chance is not None or cut is not None:
                    ax.legend(loc="lower right", fontsize=7)
                ax.set_ylim(-0.03, 1.05)
                ax.set_xlabel("noise-free S/N of the injection")
                ax.set_ylabel("recovered fraction")
            elif key == "y0_theta_c":
                _heat(ax, t, "y0_lo", "y0_hi", "theta_c_lo_arcmin", "theta_c_hi_arcmin", "y0 (beta model)",
                      "theta_c [arcmin]", True)
            else:
                _heat(ax, t, "m500_lo_msun", "m500_hi_msun", "z_lo", "z_hi", "M500 [1e14 Msun] (Arnaud profile)",
                      "z", True, xscale=1e14)
        figs["MF selection function by injection: recovered fraction"] = _finish(fig, None, False)
    hist = [(k, e, lab) for k, e, lab in (("snr_ratio_hist", "snr_ratio_hist_edges", "recovered S/N / noise-free S/N"),
                                          ("offset_hist", "offset_hist_edges_arcmin", "position offset [arcmin]"))
            if summary.get(k) is not None and summary.get(e) is not None]
    if hist:
        fig, axes = _new_figure(4.2 * len(hist), 3.2, ncols=len(hist))
        for ax, (k, e, lab) in zip(axes, hist, strict=True):
            edges = np.asarray(summary[e], float)
            ax.stairs(np.asarray(summary[k], float), edges, fill=True, alpha=0.6)
            ax.set_xlabel(lab)
            ax.set_ylabel("injections")
            ax.set_title("recovered, noise-free S/N >= 5", fontsize=9)
        med = summary.get("snr_ratio_median")
        if med is not None:
            axes[0].axvline(float(med), color="k", lw=1, label=f"median {float(med):.3f}")
            axes[0].legend(fontsize=8)
        figs["MF injections: S/N ratio and position offsets"] = _finish(fig, None, False)
    return figs
