"""The app's small evented models (pure Python, no Qt), as napari's and glue's viewer state: setting a value
emits its event (psygnal), and views bind to the models.

- :class:`DisplaySettings`: how cutouts are drawn (level, stretch, scaling, colour map, overlays, view);
- :class:`GalleryFilter`: which cutouts the gallery shows and in what order;
- :class:`Selection`: the selected cutout (a row of the cutout table, or None);
- :class:`Thresholds`: the threshold of each method (a float; for AND a pair (t_cnn, t_mf));
- :class:`PlotSettings`: the split the F1 curves are drawn on;
- :class:`SkySettings`: what colours the sky view and which markers it draws.

The jobs model is :class:`szviewer.gui.jobs.JobRunner`, the annotations model
:class:`szviewer.gui.annotations.Annotations`. Every model round-trips through ``to_dict`` / ``from_dict`` (the
session memory stores them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from psygnal import Signal, evented


def _from_dict(cls, d: dict | None):
    """An instance of the dataclass ``cls`` from ``d``, keeping only fields of the right type."""
    out = cls()
    for f in dataclasses.fields(cls):
        if not d or f.name not in d:
            continue
        v, default = d[f.name], getattr(out, f.name)
        if default is None or isinstance(v, type(default)) or v is None:
            setattr(out, f.name, tuple(v) if isinstance(v, list) else v)
    return out


class _Dict:
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict | None):
        return _from_dict(cls, d)

    def update(self, **changes) -> bool:
        """Set several fields; each one that changes emits its event. Returns whether anything changed."""
        names = {f.name for f in dataclasses.fields(self)}
        changed = False
        for k, v in changes.items():
            if k not in names:
                raise AttributeError(f"no setting {k!r} in {type(self).__name__}")
            if getattr(self, k) != v:
                setattr(self, k, v)
                changed = True
        return changed


@evented
@dataclass
class DisplaySettings(_Dict):
    """How cutouts are drawn: component level, stretch, scaling, colour map, overlays, and the inspector's view
    (``bands``: the three bands and their RGB composite; ``filtered``: 148 GHz, the MF-filtered map at the
    candidate's scale and the Compton-y ILC)."""

    level: str = "all"
    stretch: str = "linear"  # linear | asinh
    scaling: str = "percentile"  # percentile | minmax
    cmap: str = "CET-D1A"
    show_halo: bool = True
    show_cell: bool = True
    show_mf: bool = True
    view: str = "bands"  # bands | filtered


@evented
@dataclass
class GalleryFilter(_Dict):
    """The gallery's rows: ``split`` (None = all), ``outcome`` ((method, 'TP'...) or ('FOUND', 'MF_ONLY'...)),
    only flagged cutouts, only one vetting class (``vet``: 'cluster', 'not', 'unsure', 'unvetted' or None), and
    the sort."""

    split: str | None = None
    outcome: tuple | None = None
    flagged_only: bool = False
    vet: str | None = None
    sort_key: str = "id"
    sort_descending: bool = False


@evented
@dataclass
class SkySettings(_Dict):
    """The sky view: what colours the cutouts (``outcome:CNN``, ``score:MF``, ``label:``, ``split:``; None = the
    first available) and which markers are drawn over them (off by default: markers would hide the outcome
    colours)."""

    colour: str | None = None
    show_halos: bool = False
    show_mf: bool = False


@evented
@dataclass
class PlotSettings(_Dict):
    """The split the F1 curves and the AND map are drawn on."""

    curve_split: str = "val"


class Selection:
    """The selected cutout row (None: none); ``changed(row)`` on every change."""

    changed = Signal(object)

    def __init__(self):
        self._row: int | None = None

    @property
    def row(self) -> int | None:
        return self._row

    @row.setter
    def row(self, row: int | None) -> None:
        row = None if row is None else int(row)
        if row != self._row:
            self._row = row
            self.changed.emit(row)

    def reset(self) -> None:
        """Forget the selection without an event (a new workspace is being opened)."""
        self._row = None


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def threshold_value(method: str, value):
    """A threshold in its canonical form (a float; a pair of floats for AND), or None when it is not one."""
    if method == "AND":
        ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(_finite(v) for v in value)
        return (float(value[0]), float(value[1])) if ok else None
    return float(value) if _finite(value) else None


class Thresholds:
    """Method -> threshold, read like a dict; ``set(method, value)`` emits ``changed(method)``."""

    changed = Signal(str)

    def __init__(self):
        self._values: dict[str, float | tuple[float, float]] = {}

    def set(self, method: str, value) -> bool:
        v = threshold_value(method, value)
        if v is None:
            raise ValueError(f"threshold of {method}: {value!r} is not a finite number"
                             + (" pair" if method == "AND" else ""))
        if self._values.get(method) == v:
            return False
        self._values[method] = v
        self.changed.emit(method)
        return True

    def reset(self, values: dict | None = None) -> None:
        """Replace every threshold without events (a workspace is being opened)."""
        self._values = dict(values or {})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}

    def __getitem__(self, method: str):
        return self._values[method]

    def __setitem__(self, method: str, value) -> None:
        self.set(method, value)

    def __contains__(self, method) -> bool:
        return method in self._values

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other) -> bool:
        return dict(self._values) == (other._values if isinstance(other, Thresholds) else other)

    def get(self, method: str, default=None):
        return self._values.get(method, default)

    def items(self):
        return self._values.items()

    def copy(self) -> dict:
        return dict(self._values)
