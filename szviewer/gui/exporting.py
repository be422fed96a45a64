"""Catalogue export from the app: the same application-layer call as ``szviewer export``
(:func:`szviewer.jobs.evaluate.export_candidates`), so the same request writes the same rows and columns from
either front end; the app passes its current thresholds (the CLI's ``--thresholds``)."""

from __future__ import annotations

from pathlib import Path

from szviewer.gui.models import threshold_value


def export_catalog(state, path, method: str, thresholds=None, split: str | None = None, fmt: str | None = None,
                   regions_path=None, overwrite: bool = False, rows: str | None = None):
    """Write the candidate catalogue of ``method`` at ``thresholds`` (default: the app's current ones) with the
    CLI's export; ``split`` None / 'all' for every cutout; ``rows`` 'objects', 'cutouts' or None (the CLI's
    default). Returns ``(catalogue path, region path or None, the table as written)``."""
    from astropy.table import Table

    from szviewer.jobs.evaluate import export_candidates

    if state.missing_message(method):
        raise ValueError(state.missing_message(method))
    t = state.thresholds[method] if thresholds is None else threshold_value(method, thresholds)
    if t is None:
        raise ValueError(f"threshold of {method}: {thresholds!r} is not a finite number")
    values = list(t) if method == "AND" else [t]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. WS/exports, the dialog's default folder
    res = export_candidates(state.workspace, method, path, fmt=fmt, thresholds=values, regions=regions_path,
                            split=None if split in (None, "", "all") else split, overwrite=overwrite,
                            allow_stale=True, rows=rows)
    fmt_read = {"votable": "votable", "fits": "fits", "ecsv": "ascii.ecsv", "csv": "ascii.csv"}.get(fmt or "")
    table = Table.read(res["out"], format=fmt_read) if fmt_read else Table.read(res["out"])
    return Path(res["out"]), (None if res["regions"] is None else Path(res["regions"])), table
