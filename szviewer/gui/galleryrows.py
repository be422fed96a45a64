"""The gallery's rows of a :class:`~szviewer.gui.state.ViewerState` (pure numpy, no Qt): its columns, the filter
(split, outcome at the thresholds, flagged, vetting) and the sort. The state caches the result
(:meth:`ViewerState.visible_rows`) until a filter field, or a threshold the filter depends on, changes."""

from __future__ import annotations

import numpy as np

from szviewer.gui.models import GalleryFilter
from szviewer.gui.scores import OUTCOMES

SPLITS = ("train", "val", "test")


def valid_filter(state, view: dict) -> dict:
    """The parts of a saved gallery filter (:meth:`GalleryFilter.to_dict`) that apply to the open data."""
    f = GalleryFilter.from_dict(dict(state.filter.to_dict(), **(view or {}))).to_dict()
    o = f.get("outcome")
    if o is not None and not (len(o) == 2 and (o[0] == "FOUND" and state.has_method("MF")
                                               and state.has_method("CNN") or state.has_method(o[0]))):
        f["outcome"] = None
    if f["split"] not in (None, *SPLITS):
        f["split"] = None
    return f


def filter_depends_on(f: GalleryFilter, method: str) -> bool:
    """Whether the rows of filter ``f`` change when ``method``'s threshold moves."""
    if f.outcome is None:
        return False
    if f.outcome[0] == "FOUND":
        return method in ("MF", "CNN")
    return f.outcome[0] == method


def column(state, name: str) -> np.ndarray:
    """A gallery column over all cutouts: table columns, score columns, 'rank_product', 'flag', 'vet',
    'outcome:METHOD'."""
    d = state.data
    if name == "flag":
        return state.flags()
    if name == "vet":
        return state.annotations.vet_classes()
    if name == "rank_product":
        return state.score("PROD")
    if name.startswith("outcome:"):
        return state.outcome(name.split(":", 1)[1])
    if name in d.scores:
        return d.scores[name]
    return d.columns[name]


def filter_mask(state) -> np.ndarray | None:
    """The rows the gallery filter keeps (None: every row)."""
    masks = []
    f = state.filter
    if f.split:
        masks.append(state.split_mask(f.split))
    if f.outcome is not None:
        kind, what = f.outcome
        if kind == "FOUND":
            if state.has_method("MF") and state.has_method("CNN"):
                mf, cnn = state.predicted("MF"), state.predicted("CNN")
                sel = {"MF_ONLY": mf & ~cnn, "CNN_ONLY": cnn & ~mf, "BOTH": mf & cnn, "NEITHER": ~mf & ~cnn}[what]
                masks.append(sel & state.labels)
            else:
                masks.append(np.zeros(state.n, dtype=bool))
        elif state.has_method(kind):
            masks.append(state.outcome(kind) == OUTCOMES.index(what))
        else:
            masks.append(np.zeros(state.n, dtype=bool))
    if f.flagged_only:
        masks.append(state.flags())
    if f.vet:
        masks.append(state.annotations.vet_mask(f.vet))
    if not masks:
        return None
    out = masks[0].copy()
    for m in masks[1:]:
        out &= m
    return out


def gallery_rows(state) -> np.ndarray:
    """Row indices the gallery shows, filtered and sorted (NaN last either way; ties keep the row order)."""
    if state.data is None:
        return np.zeros(0, dtype=np.int64)
    mask = filter_mask(state)
    idx = np.arange(state.n, dtype=np.int64) if mask is None else np.flatnonzero(mask)
    key, desc = state.filter.sort_key, state.filter.sort_descending
    if key and key != "id" and idx.size:
        try:
            vals = column(state, key)
        except KeyError:
            vals = None
        if vals is not None:
            v = vals[idx]
            if v.dtype.kind in "fc":
                order = np.argsort(-v if desc else v, kind="stable")  # NaN stays last either way
            else:
                order = np.argsort(v, kind="stable")
                if desc:
                    order = order[::-1]
            idx = idx[order]
    elif desc:
        idx = idx[::-1]
    return idx
