"""Labels, halo properties and train/validation/test splits of the cutout grid (paper section 1.2).

- Positive: the cutout's central 6' x 6' cell holds a halo with M_vir >= 2e14 Msun and z >= 0.25 (the paper's
  rule, the default). The mass definition (vir, 200c, 500c, 200m: halo columns m_vir, m200c, m500, m200m) and
  both thresholds are :class:`LabelSettings`, recorded in the table's meta and the cutouts product's settings.
  When a cell holds several, the most massive (in that definition) is its halo and ``n_halos`` counts them.
- Split by the RA of the cutout centre as a fraction of the footprint's RA range: test < 0.13,
  validation 0.13-0.2, train > 0.2.
- In training only, negatives next to a positive are removed: all 8 neighbours. (The released code
  removed only the 4 diagonal ones, which looks like a bug; SCIENCE.md section 2.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from szviewer.cutouts.grid import CutoutGrid
from szviewer.errors import InputError
from szviewer.sky import geometry

SPLITS = ("train", "val", "test")
#: Mass definition -> the halo-table column that holds it [Msun] (szviewer.sky.halo_ascii.CANONICAL_UNITS).
MASS_COLUMNS: dict[str, str] = {"vir": "m_vir", "200c": "m200c", "500c": "m500", "200m": "m200m"}
_MASS_ALIASES = {"vir": "vir", "mvir": "vir", "m_vir": "vir", "200c": "200c", "m200": "200c", "m200c": "200c",
                 "500c": "500c", "m500": "500c", "m500c": "500c", "200m": "200m", "m200m": "200m"}


def mass_definition(text: str) -> str:
    """'vir', '200c', '500c' or '200m' from any of their spellings (mvir, m_vir, m200, m200c, m500, m500c, m200m);
    ValueError otherwise."""
    key = str(text).strip().lower()
    if key not in _MASS_ALIASES:
        raise ValueError(f"label mass {text!r}: expected one of vir (m_vir), 200c (m200c), 500c (m500), 200m (m200m)")
    return _MASS_ALIASES[key]


@dataclass(frozen=True)
class LabelSettings:
    """Positive-label and split definitions with the paper's values: a halo of ``mass_def`` mass >=
    ``mass_min_msun`` [Msun] at z >= ``z_min`` makes its cell positive."""

    mass_def: str = "vir"
    mass_min_msun: float = 2e14
    z_min: float = 0.25
    test_below: float = 0.13
    val_below: float = 0.20
    remove_train_neighbours: bool = True

    def __post_init__(self):
        object.__setattr__(self, "mass_def", mass_definition(self.mass_def))
        if not (isinstance(self.mass_min_msun, (int, float)) and math.isfinite(self.mass_min_msun)
                and self.mass_min_msun > 0):
            raise ValueError(f"label mass threshold {self.mass_min_msun!r}: must be a positive, finite number of Msun")
        if not (isinstance(self.z_min, (int, float)) and math.isfinite(self.z_min) and self.z_min >= 0):
            raise ValueError(f"label minimum redshift {self.z_min!r}: must be a finite number >= 0")

    @property
    def mass_column(self) -> str:
        """The halo-table column of the label mass."""
        return MASS_COLUMNS[self.mass_def]

    @classmethod
    def from_options(cls, mass: str | None = None, mass_min: str | float | None = None,
                     z_min: str | float | None = None) -> LabelSettings:
        """Settings from command-line text (None: the paper's value), e.g. ``('m500', '1e14', '0.2')``; one-line
        ValueError naming the option otherwise."""
        kw = {}
        if mass is not None:
            kw["mass_def"] = mass_definition(mass)
        for name, value, what in (("mass_min_msun", mass_min, "--label-min"), ("z_min", z_min, "--label-zmin")):
            if value is None:
                continue
            try:
                kw[name] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{what} {value!r}: not a number") from None
        return cls(**kw)

    def describe(self) -> str:
        """E.g. 'M_vir >= 2e+14 Msun, z >= 0.25'."""
        label = {"vir": "M_vir", "200c": "M200c", "500c": "M500c", "200m": "M200m"}[self.mass_def]
        return f"{label} >= {self.mass_min_msun:g} Msun, z >= {self.z_min:g}"


def label_grid(grid: CutoutGrid, halos: Table | None, settings: LabelSettings = LabelSettings()) -> Table:
    """The cutout table: id, ra, dec, row, col, split, label, halo columns, n_halos, offsets.

    Rows are in id order and include the training negatives next to a positive, flagged in
    ``train_neighbour`` (callers drop them for the DeepSZ set).
    """
    ra, dec, row, col = grid.centres()
    n = grid.size
    fp = grid.footprint
    frac = ((ra - fp.ra_min) % 360.0) / (fp.ra_max - fp.ra_min)
    split = np.where(frac < settings.test_below, "test", np.where(frac < settings.val_below, "val", "train"))
    t = Table()
    t["id"] = np.arange(n, dtype=np.int64)
    t["ra"] = ra
    t["dec"] = dec
    t["row"] = row.astype(np.int32)
    t["col"] = col.astype(np.int32)
    t["split"] = split.astype("U5")
    label = np.zeros(n, dtype=bool)
    n_halos = np.zeros(n, dtype=np.int16)
    halo_id = np.full(n, -1, dtype=np.int64)
    cols = {k: np.full(n, np.nan) for k in ("m_vir", "z", "r_vir", "m500", "y0", "theta500_arcmin")}
    dx = np.full(n, np.nan)
    dy = np.full(n, np.nan)
    mcol = settings.mass_column
    if mcol not in cols:
        cols[mcol] = np.full(n, np.nan)
    if halos is not None and len(halos):
        mass = _label_mass(halos, settings)
        with np.errstate(invalid="ignore"):
            q = (mass >= settings.mass_min_msun) & (np.asarray(halos["z"], dtype=float) >= settings.z_min)
        qi = np.nonzero(q)[0]
        cell = grid.cell_of(np.asarray(halos["ra"])[qi], np.asarray(halos["dec"])[qi])
        inside = cell >= 0
        qi, cell = qi[inside], cell[inside]
        np.add.at(n_halos, cell, 1)
        # the most massive qualifying halo of each cell
        order = np.argsort(-mass[qi], kind="stable")
        qi, cell = qi[order], cell[order]
        first = np.unique(cell, return_index=True)[1]
        cells, hi = cell[first], qi[first]
        label[cells] = True
        ids = halos["halo_id"] if "halo_id" in halos.colnames else np.arange(len(halos))
        halo_id[cells] = np.asarray(ids)[hi]
        for k in cols:
            if k in halos.colnames:
                cols[k][cells] = np.asarray(halos[k], dtype=float)[hi]
        xi, eta = geometry.radec_to_tangent(ra[cells], dec[cells], np.asarray(halos["ra"])[hi],
                                            np.asarray(halos["dec"])[hi])
        dx[cells] = xi / geometry.ARCMIN
        dy[cells] = eta / geometry.ARCMIN
    t["label"] = label
    t["n_halos"] = n_halos
    t["halo_id"] = halo_id
    for k, v in cols.items():
        t[k] = v
    t["halo_dx_arcmin"] = dx  # east of the centre
    t["halo_dy_arcmin"] = dy  # north of the centre
    t["offset_arcmin"] = np.hypot(dx, dy)
    nb = np.zeros(n, dtype=bool)
    if settings.remove_train_neighbours and label.any():
        neigh = grid.neighbours(np.nonzero(label)[0]).ravel()
        neigh = neigh[neigh >= 0]
        nb[neigh] = True
        nb &= ~label & (split == "train")
    t["train_neighbour"] = nb
    t.meta["label_settings"] = {"mass_def": settings.mass_def, "mass_column": mcol,
                                "mass_min_msun": settings.mass_min_msun, "z_min": settings.z_min,
                                "rule": settings.describe(), "test_below": settings.test_below,
                                "val_below": settings.val_below}
    return t


def _label_mass(halos: Table, settings: LabelSettings) -> np.ndarray:
    """The label mass of every halo [Msun]; a table without that mass is an InputError naming its source."""
    col = settings.mass_column
    have = [c for c in MASS_COLUMNS.values() if c in halos.colnames and np.isfinite(np.asarray(halos[c], float)).any()]
    if col not in have:
        src = halos.meta.get("source", halos.meta.get("SOURCE"))
        given = ", ".join(have) or "none"
        raise InputError(src, f"the halo catalogue has no {col} ({settings.mass_def}) masses for the label rule "
                              f"{settings.describe()}; it has {given}: choose one of those as the label mass")
    return np.asarray(halos[col], dtype=float)


def split_counts(table: Table) -> dict[str, dict[str, int]]:
    """Cutouts and positives per split."""
    out = {}
    for s in SPLITS:
        m = np.asarray(table["split"]) == s
        out[s] = {"cutouts": int(m.sum()), "positives": int(np.asarray(table["label"])[m].sum())}
    return out
