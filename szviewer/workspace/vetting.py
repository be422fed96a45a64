"""A workspace's vetting annotations: per cutout a flag, a note and a class (cluster / not a cluster / unsure).

Stored in ``WS/annotations.json`` (``{"format": "szviewer-annotations", "version": 2, "cutouts": {id: entry}}``),
replaced atomically on every change (:func:`szviewer.atomic.write_json`), so a crash never leaves half a file.
An entry holds ``flag`` (bool), ``note`` (str), ``vet`` (one of :data:`VET_CLASSES` or absent), ``modified``
(ISO time) and the cutout centre ``ra``, ``dec`` [deg] so that object catalogues can match vetting to their
candidates by position. Version 1 files (no classes) read as they are.

:func:`vetting_table` is what catalogue export reads: one row per vetted cutout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FILENAME = "annotations.json"
FORMAT = "szviewer-annotations"
VERSION = 2
#: Vetting classes and the keys the app gives them.
VET_CLASSES = ("cluster", "not", "unsure")
VET_LABELS = {"cluster": "cluster", "not": "not a cluster", "unsure": "unsure"}


def path_of(root: str | os.PathLike) -> Path:
    return Path(root) / FILENAME


def empty(entry: dict) -> bool:
    """True when an entry says nothing (no flag, no note, no class): it is dropped rather than stored."""
    return not entry.get("flag") and not entry.get("note") and not entry.get("vet")


def load(root: str | os.PathLike) -> dict[str, dict]:
    """The annotations of the workspace at ``root`` (cutout id as a string -> entry); {} when there are none.

    An unreadable file gives {} (the next save replaces it)."""
    p = path_of(root)
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("cutouts"), dict):
        return {}
    out = {}
    for k, v in doc["cutouts"].items():
        if isinstance(v, dict):
            e = dict(v)
            if e.get("vet") not in VET_CLASSES:
                e.pop("vet", None)
            out[str(k)] = e
    return out


def save(root: str | os.PathLike, annotations: dict[str, dict]) -> Path:
    """Write every annotation at once (atomically); empty entries are left out."""
    from szviewer.atomic import write_json

    keep = {str(k): v for k, v in annotations.items() if not empty(v)}
    p = path_of(root)
    write_json(p, {"format": FORMAT, "version": VERSION, "cutouts": keep})
    return p


def vetting_table(root: str | os.PathLike):
    """The vetting of a workspace as an astropy Table, one row per annotated cutout (sorted by id).

    Columns: ``cutout_id`` (int64), ``ra``, ``dec`` [deg] (NaN where not recorded), ``vet_class`` (str:
    ``cluster``, ``not``, ``unsure`` or empty), ``vet_flag`` (bool), ``vet_note`` (str), ``vet_modified`` (str,
    ISO time). Join to a cutout-level catalogue on ``cutout_id``; match object-level candidates by position.
    """
    import astropy.units as u
    from astropy.table import Table

    ann = load(root)
    ids = sorted(int(k) for k in ann)
    rows = [ann[str(i)] for i in ids]

    def col(key, default):
        return [r.get(key, default) for r in rows]

    t = Table()
    t["cutout_id"] = np.asarray(ids, dtype=np.int64)
    t["ra"] = np.asarray(col("ra", np.nan), dtype=float) * u.deg
    t["dec"] = np.asarray(col("dec", np.nan), dtype=float) * u.deg
    t["vet_class"] = np.asarray([str(v or "") for v in col("vet", "")], dtype="U7")
    t["vet_flag"] = np.asarray(col("flag", False), dtype=bool)
    t["vet_note"] = np.asarray([str(v) for v in col("note", "")], dtype=str) if rows else np.zeros(0, "U1")
    t["vet_modified"] = np.asarray([str(v) for v in col("modified", "")], dtype=str) if rows else np.zeros(0, "U1")
    t.meta["vet_classes"] = list(VET_CLASSES)
    return t


def vetting_columns(root: str | os.PathLike, cutout_ids) -> dict[str, np.ndarray]:
    """``vet_class``, ``vet_flag``, ``vet_note`` aligned with ``cutout_ids`` (empty / False where not vetted)."""
    ann = load(root)
    ids = np.asarray(cutout_ids, dtype=np.int64)
    cls = np.array([str(ann.get(str(i), {}).get("vet", "") or "") for i in ids], dtype="U7")
    flag = np.array([bool(ann.get(str(i), {}).get("flag", False)) for i in ids], dtype=bool)
    note = np.array([str(ann.get(str(i), {}).get("note", "")) for i in ids], dtype=str)
    return {"vet_class": cls, "vet_flag": flag, "vet_note": note}


def add_vetting_columns(table, root: str | os.PathLike, cell_arcmin: float = 6.0) -> None:
    """Add ``vet_class``, ``vet_flag``, ``vet_note`` to a catalogue (in place) from the workspace's vetting.

    Rows with a ``cutout_id`` take that cutout's vetting; other rows (objects) take the vetting of the cutout
    whose central ``cell_arcmin`` x ``cell_arcmin`` cell they fall in (the cell that labels a cutout, paper
    Sec. 2.2), when that cutout's position was recorded. Empty / False where there is none."""
    n = len(table)
    if "cutout_id" in table.colnames:
        cols = vetting_columns(root, np.asarray(table["cutout_id"], dtype=np.int64))
    else:
        cols = {"vet_class": np.full(n, "", dtype="U7"), "vet_flag": np.zeros(n, bool),
                "vet_note": np.full(n, "", dtype=object)}
        ann = [e for e in load(root).values() if "ra" in e and "dec" in e]
        if ann and n:
            ra = np.asarray(table["ra"], float)
            dec = np.asarray(table["dec"], float)
            half = cell_arcmin / 2.0 / 60.0
            for e in ann:
                dx = ((ra - e["ra"] + 180.0) % 360.0 - 180.0) * np.cos(np.radians(e["dec"]))
                inside = (np.abs(dx) <= half) & (np.abs(dec - e["dec"]) <= half)
                cols["vet_class"][inside] = e.get("vet", "") or ""
                cols["vet_flag"][inside] = bool(e.get("flag", False))
                cols["vet_note"][inside] = str(e.get("note", ""))
        cols["vet_note"] = np.asarray(cols["vet_note"], dtype=str) if n else np.zeros(0, "U1")
    for name, col in cols.items():
        table[name] = col
