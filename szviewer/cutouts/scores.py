"""The score table: one row per stored cutout (same order as ``cutouts.h5``), one column per method.

Stored as ``scores.h5`` in the workspace: ``/id`` (the cutout ids, to check alignment) and one 1-D
dataset per score column (``mf_snr``, ``cnn_prob``, ...), each with JSON attributes (settings, provenance,
what a missing value means). Adding a column rewrites the small file atomically, keeping the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from szviewer.atomic import atomic_path
from szviewer.errors import InputError

FORMAT = "szviewer-scores"


def read_scores(path: str | os.PathLike, ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All score columns as float arrays; ``{}`` when there is no file. Checks alignment with ``ids``."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError(path, "not an szviewer score table")
            stored = f["id"][...]
            cols = {k: f[k][...] for k in f.keys() if k != "id"}
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file (truncated or corrupt): {exc}") from None
    for k, v in cols.items():
        if v.shape != stored.shape:
            raise InputError(path, f"score column {k!r} has {v.size} values for {stored.size} cutouts (damaged "
                                   "file); rerun the finder that wrote it")
    if ids is not None and not np.array_equal(stored, np.asarray(ids)):
        raise InputError(path, "score rows do not match the cutout store (rebuilt cutouts?); rerun the finders")
    return cols


def score_attrs(path: str | os.PathLike) -> dict[str, dict]:
    """The JSON attributes of each score column."""
    path = Path(path)
    if not path.exists():
        return {}
    with h5py.File(path, "r") as f:
        return {k: json.loads(f[k].attrs.get("meta", "{}")) for k in f.keys() if k != "id"}


def write_score_column(path: str | os.PathLike, ids: np.ndarray, name: str, values: np.ndarray,
                       meta: dict | None = None) -> None:
    """Add or replace one column, atomically (see :func:`write_score_columns`)."""
    write_score_columns(path, ids, {name: values}, meta)


def write_score_columns(path: str | os.PathLike, ids: np.ndarray, columns: dict, meta: dict | None = None) -> None:
    """Add or replace columns in one atomic rewrite. ``values`` align with ``ids`` (the store's row order)."""
    path = Path(path)
    ids = np.asarray(ids)
    new = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != ids.shape:
            raise ValueError(f"{name}: {values.size} values for {ids.size} cutouts")
        if name == "id":
            raise ValueError("'id' is reserved")
        new[name] = values
    old = read_scores(path) if path.exists() else {}
    old_meta = score_attrs(path)
    if old:
        with h5py.File(path, "r") as f:
            if not np.array_equal(f["id"][...], ids):
                old, old_meta = {}, {}  # the cutouts were rebuilt: old scores no longer apply
    old.update(new)
    old_meta.update({name: meta or {} for name in new})
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.create_dataset("id", data=ids)
            for k, v in old.items():
                ds = f.create_dataset(k, data=v)
                ds.attrs["meta"] = json.dumps(old_meta.get(k, {}), default=str)
