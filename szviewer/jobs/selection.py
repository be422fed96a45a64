"""The MF selection function of a workspace as stored by ``szviewer mf WS --inject N`` (product ``mf_injection``):
its tables and summary, and its figures, for the report, ``szviewer info`` and the app."""

from __future__ import annotations

from pathlib import Path

from szviewer.workspace import Workspace

#: the stored tables of :func:`szviewer.mf.selection_tables.selection_tables`, by key
TABLES = ("snr_true", "y0_theta_c", "m500_z")


def load_selection(ws: Workspace) -> tuple[dict, dict] | None:
    """({key: astropy Table}, summary) of the workspace's injection run, or None when it has none."""
    from astropy.table import Table

    if not ws.has("mf_injection"):
        return None
    names = {Path(f).name for f in ws.products["mf_injection"].get("files", [])}
    tables = {key: Table.read(ws.file("mf_injection", f"mf_selection_{key}.ecsv"), format="ascii.ecsv")
              for key in TABLES if f"mf_selection_{key}.ecsv" in names}
    return tables, dict(ws.products["mf_injection"].get("summary", {}))


def selection_summary_line(summary: dict) -> str:
    """One line of the selection function: counts, completeness at noise-free S/N >= 5, S/N ratio, offsets."""
    def f(key, fmt="{:.3f}"):
        v = summary.get(key)
        return "?" if v is None else fmt.format(v)

    return (f"selection function: {summary.get('n_injected', '?')} injected ({summary.get('n_beta', '?')} beta, "
            f"{summary.get('n_arnaud', '?')} Arnaud), {summary.get('noise_mode', '?')} noise; completeness "
            f"{f('completeness_snr_true_ge_5')} at noise-free S/N >= 5; S/N ratio {f('snr_ratio_median')} "
            f"({f('snr_ratio_p16')}-{f('snr_ratio_p84')}); offsets median "
            f"{f('offset_median_arcmin', '{:.2f}')}', 90% {f('offset_p90_arcmin', '{:.2f}')}'; a real candidate "
            f"already within the match radius of {f('chance_match_fraction', '{:.0%}')} of the positions")


def selection_figures_of(ws: Workspace) -> dict[str, bytes]:
    """The PNG figures {title: bytes} of the workspace's selection function ({} without an injection run)."""
    from szviewer.evaluate.selection_figures import selection_figures

    got = load_selection(ws)
    return {} if got is None else selection_figures(*got)
