"""Candidate catalogs (ECSV, FITS, CSV, VOTable) and DS9 region files, written atomically.

The catalog's ``meta`` holds ``method``, ``thresholds`` (column -> value), ``provenance`` (free dict) and
``szviewer_version``. ECSV keeps it natively. The other formats cannot hold nested metadata, so it is also
stored as one JSON string: FITS header keyword ``SZMETA`` (plus ``METHOD``) and a VOTable ``INFO`` named
``szviewer_meta`` (plus the table description). CSV is plain (a header line, then rows), so that
``Table.read(path)`` reads it back with no options, as any spreadsheet does; it cannot hold units or metadata:
:func:`read_catalog` restores the units of the known columns (:data:`szviewer.evaluate.objects.COLUMN_UNITS`),
and ECSV, FITS or VOTable keep both. Units on the columns are kept by ECSV, FITS and VOTable.

Files are written to a temporary file in the same directory and moved into place (``os.replace``); an
existing file is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from szviewer.atomic import atomic_write, atomic_write_text

from .ensembles import rank_percentile

__all__ = ["FORMATS", "build_catalog", "write_catalog", "read_catalog", "write_ds9_regions", "catalog_format"]

#: format name -> (astropy format, file suffixes)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ecsv": ("ascii.ecsv", (".ecsv",)),
    "fits": ("fits", (".fits", ".fit", ".fts")),
    "csv": ("ascii.csv", (".csv",)),
    "votable": ("votable", (".xml", ".vot", ".votable")),
}
META_KEY = "szviewer_meta"
CSV_PREFIX = "szviewer-meta: "


def catalog_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The catalog format name for ``path``: ``format`` if given, otherwise from the file suffix."""
    path = Path(path)
    if format is not None:
        f = format.lower()
        if f not in FORMATS:
            raise ValueError(f"{path}: unknown catalog format {format!r}; choose one of {sorted(FORMATS)}")
        return f
    suffix = path.suffix.lower()
    for name, (_, suffixes) in FORMATS.items():
        if suffix in suffixes:
            return name
    known = ", ".join(s for _, sfx in FORMATS.values() for s in sfx)
    raise ValueError(
        f"{path}: cannot tell the catalog format from suffix {suffix!r}; use one of {known} or pass format="
    )


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)  # JSON has no NaN / inf
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def _restore_floats(x):
    if isinstance(x, dict):
        return {k: _restore_floats(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_restore_floats(v) for v in x]
    if x in ("nan", "inf", "-inf"):
        return float(x)
    return x


def build_catalog(
    ra,
    dec,
    scores: Mapping[str, np.ndarray],
    decision=None,
    *,
    ranks: Mapping[str, np.ndarray] | None = None,
    halo: Mapping[str, np.ndarray] | None = None,
    method: str = "",
    thresholds: Mapping[str, float] | None = None,
    provenance: Mapping | None = None,
    candidates_only: bool = True,
):
    """An astropy Table of candidates: ra, dec [deg], the score columns, their rank percentiles ``q_<name>``,
    ``decision``, and the matched halo columns ``halo_<name>`` if ``halo`` is given.

    Pass arrays over the whole evaluated set: rank percentiles are computed over it (unless ``ranks`` gives
    them) before the rows with ``decision`` True are kept (all rows if ``candidates_only`` is False or
    ``decision`` is None).
    """
    from astropy.table import Table

    from szviewer import __version__

    ra = np.asarray(ra, dtype=float).ravel()
    dec = np.asarray(dec, dtype=float).ravel()
    n = ra.size
    cols: dict[str, np.ndarray] = {"ra": ra, "dec": dec}
    for name, s in scores.items():
        cols[name] = np.asarray(s, dtype=float).ravel()
    if ranks is None:
        ranks = {name: rank_percentile(cols[name]) for name in scores}
    for name, q in ranks.items():
        cols[f"q_{name}" if not name.startswith("q_") else name] = np.asarray(q, dtype=float).ravel()
    if decision is not None:
        cols["decision"] = np.asarray(decision, dtype=bool).ravel()
    for name, v in (halo or {}).items():
        cols[name if name.startswith("halo_") else f"halo_{name}"] = np.asarray(v).ravel()
    bad = [f"{k} ({v.size})" for k, v in cols.items() if v.size != n]
    if bad:
        raise ValueError(f"columns differ in length from ra ({n}): {', '.join(bad)}")
    t = Table(cols)
    t["ra"].unit = "deg"
    t["dec"].unit = "deg"
    if decision is not None and candidates_only:
        t = t[t["decision"]]
    t.meta.update(
        method=method,
        thresholds={k: float(v) for k, v in (thresholds or {}).items()},
        provenance=_jsonable(dict(provenance or {})),
        szviewer_version=__version__,
        n_evaluated=int(n),
    )
    return t


def _meta_json(meta: Mapping) -> str:
    return json.dumps(_jsonable({k: v for k, v in meta.items() if k != "comments"}), sort_keys=True)


def write_catalog(
    table,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    required: tuple[str, ...] = ("ra", "dec"),
) -> Path:
    """Write ``table`` (from :func:`build_catalog`) to ``path`` atomically; see the module docstring.

    ``format`` is 'ecsv', 'fits', 'csv' or 'votable' (default: from the suffix). Raises ValueError for an
    unknown format or missing ``required`` columns, FileExistsError if ``path`` exists and not ``overwrite``.
    """
    path = Path(path)
    fmt = catalog_format(path, format)
    missing = [c for c in required if c not in table.colnames]
    if missing:
        raise ValueError(f"{path}: catalog lacks required column(s) {missing}; it has {table.colnames}")
    meta_json = _meta_json(table.meta)
    out = table.copy(copy_data=False)
    astropy_format = FORMATS[fmt][0]

    if fmt == "ecsv":

        def write(tmp: Path) -> None:
            out.meta = _jsonable(dict(table.meta))
            out.write(tmp, format=astropy_format, overwrite=True)
    elif fmt == "fits":

        def write(tmp: Path) -> None:
            out.meta = {"METHOD": str(table.meta.get("method", "")), "SZMETA": meta_json}
            out.write(tmp, format=astropy_format, overwrite=True)
    elif fmt == "csv":

        def write(tmp: Path) -> None:
            out.meta = {}
            out.write(tmp, format=astropy_format, overwrite=True)
    else:

        def write(tmp: Path) -> None:
            from astropy.io.votable import from_table
            from astropy.io.votable.tree import Info

            out.meta = {}
            vot = from_table(out)
            method = table.meta.get("method", "")
            thr = ", ".join(f"{k}>={v}" for k, v in table.meta.get("thresholds", {}).items())
            vot.resources[0].tables[0].description = f"szviewer candidate catalog; method {method}; {thr}"
            vot.resources[0].infos.append(Info(name=META_KEY, value=meta_json))
            vot.to_xml(str(tmp))

    return atomic_write(path, write, overwrite=overwrite)


def read_catalog(path: str | os.PathLike, *, format: str | None = None):
    """Read a catalog written by :func:`write_catalog`, restoring ``meta`` (method, thresholds, ...)."""
    from astropy.table import Table

    path = Path(path)
    fmt = catalog_format(path, format)
    if fmt == "ecsv":
        t = Table.read(path, format="ascii.ecsv")
        t.meta = _restore_floats(dict(t.meta))
        return t
    if fmt == "fits":
        t = Table.read(path, format="fits")
        raw = t.meta.get("SZMETA")
    elif fmt == "csv":
        t = Table.read(path, format="ascii.csv")
        raw = next(  # files written before CSV became plain carried the metadata as a first comment line
            (c[len(CSV_PREFIX) :] for c in t.meta.get("comments", []) if c.startswith(CSV_PREFIX)), None
        )
        for name in t.colnames:  # CSV has no booleans and no empty strings: restore them
            if t[name].dtype.kind == "U":
                v = np.asarray(t[name].filled("") if hasattr(t[name], "filled") else t[name])
                t[name] = v == "True" if len(t) and set(np.unique(v)) <= {"True", "False"} else v
    else:
        from astropy.io.votable import parse

        vot = parse(str(path))
        t = vot.get_first_table().to_table()
        raw = next((i.value for i in vot.resources[0].infos if i.name == META_KEY), None)
    t.meta = _restore_floats(json.loads(raw)) if raw else {}
    from .objects import apply_units

    apply_units(t)  # FITS drops dimensionless units, CSV all of them
    return t


def write_ds9_regions(
    path: str | os.PathLike,
    table,
    *,
    score: str | None = None,
    radius_arcmin: float = 3.0,
    color: str = "green",
    label_format: str = "{name}={value:.3g}",
    overwrite: bool = False,
) -> Path:
    """DS9 region file: one circle per catalog row (default radius 3', half the 6' central cell of a cutout),
    labelled with column ``score`` (e.g. ``"cnn_prob=0.87"``) if given. Written atomically."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from regions import CircleSkyRegion, RegionMeta, Regions, RegionVisual

    path = Path(path)
    need = ["ra", "dec"] + ([score] if score else [])
    missing = [c for c in need if c not in table.colnames]
    if missing:
        raise ValueError(
            f"{path}: cannot write regions, table lacks column(s) {missing}; it has {table.colnames}"
        )
    if not radius_arcmin > 0:
        raise ValueError(f"{path}: region radius must be positive, got {radius_arcmin}")
    ra = np.asarray(table["ra"], dtype=float)
    dec = np.asarray(table["dec"], dtype=float)
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise ValueError(f"{path}: ra/dec contain non-finite values")
    centers = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    values = np.asarray(table[score], dtype=float) if score else None
    regs = []
    for i in range(len(table)):
        meta = RegionMeta({"text": label_format.format(name=score, value=values[i])}) if score else None
        regs.append(
            CircleSkyRegion(
                center=centers[i],
                radius=radius_arcmin * u.arcmin,
                meta=meta,
                visual=RegionVisual({"color": color}),
            )
        )
    text = Regions(regs).serialize(format="ds9")
    return atomic_write_text(path, text, overwrite=overwrite)
