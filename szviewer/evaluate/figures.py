"""PNG figures of the evaluation (paper Figs. 5, 6b, 8b, 10-12), drawn with matplotlib's Agg canvas.

matplotlib is imported inside the functions and only through ``matplotlib.figure.Figure`` with the Agg
canvas, so no pyplot state or GUI backend is touched. Each function returns the PNG bytes and, if ``path``
is given, also writes them atomically (``overwrite`` as in :func:`szviewer.atomic.atomic_write`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np

from szviewer.atomic import atomic_write_bytes

from .curves import F1Curve, RocCurve
from .ensembles import TwoScoreGrid
from .science import BinnedFraction, BinnedFraction2D, BinnedMean

__all__ = [
    "f1_threshold_figure",
    "and_heatmap_figure",
    "roc_figure",
    "completeness_figure",
    "tp_fraction_figure",
    "binned_mean_figure",
]


def _new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _finish(fig, path, overwrite: bool, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data, overwrite=overwrite)
    return data


def f1_threshold_figure(
    curves: Mapping[str, F1Curve],
    *,
    xlims: Mapping[str, tuple[float, float]] | None = None,
    bins: int = 60,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> bytes:
    """F1 vs threshold, one panel per score, over a log histogram of the scores (paper Fig. 5).

    ``xlims`` restricts a panel's range, e.g. ``{"MF S/N": (3, 30)}`` (the paper hides S/N below 3).
    The best threshold is marked with a dashed line.
    """
    fig, axes = _new_figure(5.0 * max(len(curves), 1), 3.8, max(len(curves), 1))
    for ax, (name, c) in zip(axes, curves.items(), strict=False):
        lo, hi = (xlims or {}).get(name, (None, None))
        keep = np.ones(c.thresholds.size, dtype=bool)
        if lo is not None:
            keep &= c.thresholds >= lo
        if hi is not None:
            keep &= c.thresholds <= hi
        s = c.sorted_scores
        s = s[np.isfinite(s)]
        if lo is not None or hi is not None:
            s = s[(s >= (lo if lo is not None else -np.inf)) & (s <= (hi if hi is not None else np.inf))]
        ax2 = ax.twinx()
        if s.size:
            ax2.hist(s, bins=bins, color="0.8", log=True)
        ax2.set_ylabel("cutouts")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(c.thresholds[keep], c.f1[keep], color="k", lw=1.5)
        best = c.best()
        if best.threshold == best.threshold:
            ax.axvline(best.threshold, color="C3", ls="--", lw=1)
            ax.set_title(f"{name}: best F1 {best.f1:.3f} at {best.threshold:.4g}", fontsize=10)
        else:
            ax.set_title(f"{name}: no threshold gives F1 > 0", fontsize=10)
        ax.set_xlabel(f"threshold on {name}")
        ax.set_ylabel("F1")
        ax.set_ylim(0, 1)
    return _finish(fig, path, overwrite)


def and_heatmap_figure(
    grid: TwoScoreGrid,
    *,
    names: tuple[str, str] = ("CNN probability", "MF S/N"),
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> bytes:
    """F1 over the (t_a, t_b) grid of an AND/OR ensemble, best point marked with a cross (paper Fig. 6b).

    Axes are the grid indices (the thresholds are quantiles, so evenly spaced in rank); tick labels give the
    threshold values.
    """
    fig, (ax,) = _new_figure(6.0, 5.0)
    f1 = grid.f1
    if f1.size:
        im = ax.imshow(
            f1.T, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=max(np.nanmax(f1), 1e-9)
        )
        fig.colorbar(im, ax=ax, label="F1")
        for t, set_ticks in ((grid.t_a, ax.set_xticks), (grid.t_b, ax.set_yticks)):
            idx = np.unique(np.linspace(0, t.size - 1, min(6, t.size)).astype(int))
            set_ticks(idx, [f"{t[i]:.3g}" for i in idx])
        t1, t2, best_f1, _ = grid.best()
        if t1 == t1:
            k = int(np.searchsorted(grid.t_a, t1))
            l = int(np.searchsorted(grid.t_b, t2))
            ax.plot([k], [l], "kx", ms=10, mew=2)
            ax.set_title(f"{grid.rule.upper()}: best F1 {best_f1:.3f} at ({t1:.3g}, {t2:.3g})", fontsize=10)
    ax.set_xlabel(f"threshold on {names[0]}")
    ax.set_ylabel(f"threshold on {names[1]}")
    return _finish(fig, path, overwrite)


def roc_figure(
    rocs: Mapping[str, RocCurve],
    *,
    log_x: bool = True,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> bytes:
    """ROC curves with their AUC in the legend (paper Fig. 8b)."""
    fig, (ax,) = _new_figure(5.0, 4.2)
    for name, r in rocs.items():
        x = r.fpr
        keep = x > 0 if log_x else np.ones(x.size, dtype=bool)
        ax.plot(x[keep], r.tpr[keep], label=f"{name} (AUC {r.auc:.3f})")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if rocs:
        ax.legend(loc="lower right", fontsize=9)
    return _finish(fig, path, overwrite)


def completeness_figure(
    results: Mapping[str, BinnedFraction],
    *,
    xlabel: str = "M_vir [Msun]",
    log_x: bool = True,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> bytes:
    """Completeness per bin for each method over a histogram of the halo counts (paper Figs. 10-11)."""
    fig, (ax,) = _new_figure(6.0, 4.2)
    first = next(iter(results.values()), None)
    if first is not None:
        ax2 = ax.twinx()
        ax2.stairs(first.n, first.edges, fill=True, color="C0", alpha=0.2)
        ax2.set_ylabel("halos per bin")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    for name, r in results.items():
        ax.plot(r.centers, r.fraction, marker="o", ms=3, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("completeness")
    if results:
        ax.legend(fontsize=9)
    return _finish(fig, path, overwrite)


def tp_fraction_figure(
    maps: Mapping[str, BinnedFraction2D],
    *,
    xlabel: str = "M_vir [Msun]",
    ylabel: str = "z",
    log_x: bool = True,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> bytes:
    """True-positive fraction maps side by side, one per method (a row of paper Fig. 12)."""
    fig, axes = _new_figure(4.2 * max(len(maps), 1), 3.8, max(len(maps), 1))
    mesh = None
    for ax, (name, m) in zip(axes, maps.items(), strict=False):
        mesh = ax.pcolormesh(m.x_edges, m.y_edges, m.fraction.T, vmin=0, vmax=1, cmap="Greens")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="fraction positive")
    return _finish(fig, path, overwrite)


def binned_mean_figure(
    results: Mapping[str, BinnedMean],
    *,
    xlabel: str = "offset from cutout centre [arcmin]",
    ylabel: str = "score",
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> bytes:
    """Binned mean with standard-error bars, e.g. score vs halo offset from cutout centre (paper Fig. 9c)."""
    fig, (ax,) = _new_figure(5.5, 4.0)
    for name, r in results.items():
        ax.errorbar(r.centers, r.mean, yerr=r.sem, marker="o", ms=3, capsize=2, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if results:
        ax.legend(fontsize=9)
    return _finish(fig, path, overwrite)
