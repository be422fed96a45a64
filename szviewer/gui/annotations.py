"""The annotations model (pure Python, no Qt): flag, note and vetting class per cutout, saved in the workspace
at every change (:mod:`szviewer.workspace.vetting`, atomic) and announced with ``changed(row)``."""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from szviewer.workspace import vetting as store
from szviewer.workspace.vetting import VET_CLASSES, VET_LABELS

__all__ = ["Annotations", "VET_CLASSES", "VET_LABELS", "VET_KEYS"]

#: Single keys of the vetting classes (also 1 / 2 / 3), and 0 to clear the class.
VET_KEYS = {"c": "cluster", "n": "not", "u": "unsure", "1": "cluster", "2": "not", "3": "unsure"}


class Annotations:
    """Annotations of the open workspace's cutouts; rows are cutout-table rows, entries keyed by cutout id."""

    changed = Signal(int)  # the row whose annotation changed

    def __init__(self):
        self.root = None
        self.ids: np.ndarray = np.zeros(0, np.int64)
        self.ra: np.ndarray | None = None
        self.dec: np.ndarray | None = None
        self.entries: dict[str, dict] = {}
        self._id_to_row: dict[int, int] | None = None
        self._arrays: dict[str, np.ndarray] = {}

    def open(self, root, ids, ra=None, dec=None) -> None:
        """Read the annotations of the workspace at ``root`` (None: none) for the cutouts ``ids``."""
        self.root = root
        self.ids = np.asarray(ids, np.int64) if ids is not None else np.zeros(0, np.int64)
        self.ra, self.dec = ra, dec
        self.entries = store.load(root) if root is not None else {}
        self._id_to_row = None
        self._arrays = {}

    def row_of_id(self, cutout_id: int) -> int:
        if self._id_to_row is None:
            self._id_to_row = {int(i): k for k, i in enumerate(self.ids)}
        return self._id_to_row[int(cutout_id)]

    def get(self, row: int) -> dict:
        e = self.entries.get(str(int(self.ids[row])))
        return dict(e) if e else {"flag": False, "note": ""}

    def set(self, row: int, flag: bool | None = None, note: str | None = None, vet: str | None = ...) -> None:
        """Change a cutout's flag, note or vetting class (``vet=None`` clears it); saved at once."""
        from szviewer.workspace import now_iso

        if vet is not ... and vet is not None and vet not in VET_CLASSES:
            raise ValueError(f"vetting class {vet!r}: use one of {', '.join(VET_CLASSES)}")
        key = str(int(self.ids[row]))
        e = dict(self.entries.get(key, {"flag": False, "note": ""}))
        if flag is not None:
            e["flag"] = bool(flag)
        if note is not None:
            e["note"] = str(note)
        if vet is not ...:
            if vet is None:
                e.pop("vet", None)
            else:
                e["vet"] = vet
        if store.empty(e):
            self.entries.pop(key, None)
        else:
            e["modified"] = now_iso()
            if self.ra is not None and self.dec is not None:
                e["ra"], e["dec"] = float(self.ra[row]), float(self.dec[row])
            self.entries[key] = e
        self._arrays = {}
        if self.root is not None:
            store.save(self.root, self.entries)
        self.changed.emit(int(row))

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            n = self.ids.size
            flags = np.zeros(n, bool)
            vet = np.full(n, "", dtype="U7")
            for key, e in self.entries.items():
                try:
                    r = self.row_of_id(int(key))
                except (KeyError, ValueError):
                    continue  # an annotation of a cutout that no longer exists
                flags[r] = bool(e.get("flag"))
                vet[r] = e.get("vet") or ""
            self._arrays = {"flag": flags, "vet": vet}
        return self._arrays[name]

    def flags(self) -> np.ndarray:
        """(n,) bool: flagged cutouts."""
        return self._array("flag")

    def vet_classes(self) -> np.ndarray:
        """(n,) str: each cutout's vetting class ('' = not vetted)."""
        return self._array("vet")

    def vet_mask(self, vet: str) -> np.ndarray:
        """Cutouts of a vetting class; ``'unvetted'`` for those without one, ``'vetted'`` for those with one."""
        v = self.vet_classes()
        if vet == "unvetted":
            return v == ""
        if vet == "vetted":
            return v != ""
        return v == vet
