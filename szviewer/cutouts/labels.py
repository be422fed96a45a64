"""Labels, halo properties and train/validation/test splits of the cutout grid (paper section 1.2).

- Positive: the cutout's central 6' x 6' cell holds a halo with M_vir >= 2e14 Msun and z >= 0.25.
  When a cell holds several, the most massive is its halo and ``n_halos`` counts them.
- Split by the RA of the cutout centre as a fraction of the footprint's RA range: test < 0.13,
  validation 0.13-0.2, train > 0.2.
- In training only, negatives next to a positive are removed: all 8 neighbours. (The released code
  removed only the 4 diagonal ones, which looks like a bug; SCIENCE.md section 2.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from szviewer.cutouts.grid import CutoutGrid
from szviewer.sky import geometry

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelSettings:
    """Positive-label and split definitions with the paper's values."""

    m_vir_min_msun: float = 2e14
    z_min: float = 0.25
    test_below: float = 0.13
    val_below: float = 0.20
    remove_train_neighbours: bool = True


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
    if halos is not None and len(halos):
        q = (np.asarray(halos["m_vir"]) >= settings.m_vir_min_msun) & (np.asarray(halos["z"]) >= settings.z_min)
        qi = np.nonzero(q)[0]
        cell = grid.cell_of(np.asarray(halos["ra"])[qi], np.asarray(halos["dec"])[qi])
        inside = cell >= 0
        qi, cell = qi[inside], cell[inside]
        np.add.at(n_halos, cell, 1)
        # the most massive qualifying halo of each cell
        order = np.argsort(-np.asarray(halos["m_vir"])[qi], kind="stable")
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
    t.meta["label_settings"] = {"m_vir_min_msun": settings.m_vir_min_msun, "z_min": settings.z_min,
                                "test_below": settings.test_below, "val_below": settings.val_below}
    return t


def split_counts(table: Table) -> dict[str, dict[str, int]]:
    """Cutouts and positives per split."""
    out = {}
    for s in SPLITS:
        m = np.asarray(table["split"]) == s
        out[s] = {"cutouts": int(m.sum()), "positives": int(np.asarray(table["label"])[m].sum())}
    return out
