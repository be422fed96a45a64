"""Jobs: the object catalogue of a workspace (MF + CNN candidates merged, regions, truth, learned ensemble).

Reads the products ``mf`` (``mf_catalog.fits``), ``cnn_dense`` (``dense_candidates.fits``) and ``cnn`` (the
cutout CNN probability, for MF candidates without a CNN candidate), the cutout grid and its splits, the halos
and the point sources, and builds :func:`szviewer.evaluate.objects.merge_candidates`' table with truth columns
and the learned ensemble's ``learned_prob`` (fitted on the training region). Stale inputs are refused unless
``allow_stale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from szviewer.errors import InputError
from szviewer.workspace import Workspace

MF_CATALOG = "mf_catalog.fits"
CNN_CANDIDATES = "dense_candidates.fits"


@dataclass
class ObjectSet:
    """Candidates (astropy Table), qualifying halos (Table or None), each halo's candidate row, notes."""

    cands: object
    halos: object | None
    of_halo: np.ndarray
    notes: list[str] = field(default_factory=list)
    learned_error: str | None = None


def grid_and_splits(ws: Workspace):
    """(CutoutGrid, split of every grid cell, cutout table) of the workspace's cutout set."""
    from szviewer.cutouts.grid import CutoutGrid, GridSettings
    from szviewer.cutouts.labels import LabelSettings, label_grid
    from szviewer.sky.tiles import Footprint

    with ws.cutout_store() as st:
        table = st.table.copy()
        attrs = st.attrs()
    grid = CutoutGrid(Footprint(*attrs["footprint"]), GridSettings(npix=attrs["npix"],
                                                                   pixel_arcmin=attrs["pixel_arcmin"],
                                                                   stride_arcmin=attrs["stride_arcmin"]))
    ls = table.meta.get("label_settings", {})
    split = label_grid(grid, None, LabelSettings(test_below=ls.get("test_below", 0.13),
                                                  val_below=ls.get("val_below", 0.20)))["split"]
    return grid, np.asarray(split).astype("U5"), table


def _has_file(ws: Workspace, product: str, name: str) -> bool:
    from pathlib import Path

    return ws.has(product) and any(Path(f).name == name for f in ws.products[product].get("files", []))


def has_candidates(ws: Workspace) -> dict[str, bool]:
    """Which candidate catalogues the workspace holds: the MF's and the CNN's."""
    return {"mf": _has_file(ws, "mf", MF_CATALOG), "cnn": _has_file(ws, "cnn_dense", CNN_CANDIDATES)}


#: Column names a redshift table may use, in order of preference (case-insensitive).
RA_NAMES, DEC_NAMES, Z_NAMES = ("ra", "ra_deg", "raj2000"), ("dec", "dec_deg", "dej2000"), \
    ("z", "redshift", "z_spec", "zspec", "z_phot", "photoz")


def read_redshifts(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec [deg], z) of a user's redshift table (any format astropy reads: FITS, ECSV, CSV, VOTable), e.g.
    spectroscopic follow-up or a photometric-redshift catalogue; a one-line InputError naming the file if it
    cannot be read or lacks the columns."""
    from astropy.table import Table

    try:
        t = Table.read(path)
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for an unreadable table
        raise InputError(path, f"not a table astropy can read ({exc})") from None

    def col(names, what):
        lower = {c.lower(): c for c in t.colnames}
        for n in names:
            if n in lower:
                return np.asarray(t[lower[n]], float)
        raise InputError(path, f"no {what} column (one of {', '.join(names)}; it has {', '.join(t.colnames)})")

    ra, dec, z = col(RA_NAMES, "RA [deg]"), col(DEC_NAMES, "Dec [deg]"), col(Z_NAMES, "redshift")
    if np.any(~np.isfinite(ra) | ~np.isfinite(dec)):
        raise InputError(path, "RA/Dec must be finite numbers of degrees in every row")
    return ra, dec, z


def redshifts_for(cands, ra, dec, z, radius_arcmin: float = 1.0) -> np.ndarray:
    """Each candidate's redshift from a user's table: the table row matched one to one within ``radius_arcmin``
    (closest first, :func:`szviewer.evaluate.matching.match_one_to_one`), NaN where none."""
    from szviewer.evaluate.matching import match_one_to_one

    pick, _ = match_one_to_one(np.asarray(cands["ra"], float), np.asarray(cands["dec"], float), ra, dec,
                               radius_arcmin)
    return np.where(pick >= 0, np.asarray(z, float)[np.maximum(pick, 0)], np.nan) if len(z) else \
        np.full(len(cands), np.nan)


def add_masses(cands, redshift=None) -> None:
    """``z_used`` (``redshift`` per row where given and finite, else the matched halo's z), ``z_source`` ('user',
    'truth' or 'none') and ``m500_arnaud`` [Msun] from the MF's y0 and theta_c through the Arnaud et al. (2010) profile
    (:mod:`szviewer.evaluate.mass`)."""
    from szviewer.evaluate.mass import m500_from_y0

    z = np.asarray(cands["halo_z"], float) if "halo_z" in cands.colnames else np.full(len(cands), np.nan)
    source = np.where(np.isfinite(z), "truth", "none")
    if redshift is not None:
        r = np.asarray(redshift, float)
        z = np.where(np.isfinite(r), r, z)
        source = np.where(np.isfinite(r), "user", source)
    cands["z_used"] = z
    cands["z_source"] = source.astype("U5")
    cands["m500_arnaud"] = m500_from_y0(cands["y0"], cands["theta_c_arcmin"], z)


def load_objects(ws: Workspace, allow_stale: bool = False, learned: bool = True, seed: int = 0,
                 redshift=None, redshift_file=None) -> ObjectSet:
    """The workspace's object catalogue with truth (where halos exist), scores and Arnaud masses (for rows with a
    redshift: ``redshift`` per merged row, or the redshifts of ``redshift_file`` (:func:`read_redshifts`,
    matched within 1'), or the matched halo's); see the module docstring."""
    from astropy.table import Table

    from szviewer.evaluate import objects
    from szviewer.evaluate.learned import LearnedSettings, learned_scores

    have = has_candidates(ws)
    if not any(have.values()):
        raise InputError(ws.root, "no candidate catalogues yet: run `szviewer mf WS` and/or "
                                  "`szviewer predict WS --dense`")
    used = ["cutouts"] + [p for p, k in (("mf", "mf"), ("cnn_dense", "cnn")) if have[k]]
    used += [p for p in ("cnn", "cnn_mass") if ws.has(p)]
    notes = ws.check_fresh(used, allow_stale)
    grid, cell_split, table = grid_and_splits(ws)
    mf = Table.read(ws.file("mf", MF_CATALOG)) if have["mf"] else None
    cnn = Table.read(ws.file("cnn_dense", CNN_CANDIDATES)) if have["cnn"] else None
    scores = ws.scores(np.asarray(table["id"])) if ws.score_products() else {}

    def per_cell(column: str) -> np.ndarray | None:
        """A cutout score column over every grid cell (NaN where the cell has no cutout), or None."""
        if column not in scores:
            return None
        out = np.full(grid.size, np.nan)
        out[np.asarray(table["id"])] = scores[column]
        return out

    cell_cnn = per_cell("cnn_prob")
    bright = None
    if ws.has("sources"):
        src = Table.read(ws.path("sources.fits"))
        flux = [np.asarray(src[c], float) for c in src.colnames if c.startswith("flux_")]
        if flux:
            keep = np.max(flux, axis=0) >= 2.0  # the MF's source_flag_flux_mjy
            bright = (np.asarray(src["ra"], float)[keep], np.asarray(src["dec"], float)[keep])
    cands = objects.merge_candidates(mf, cnn, grid=grid, cell_split=cell_split, cell_cnn_prob=cell_cnn,
                                     bright_sources=bright)
    halos = ws.halos()
    hq, of_halo = None, np.zeros(0, np.int64)
    if halos is not None:
        ls = table.meta.get("label_settings", {})
        hq = objects.qualifying_halos(halos, mass_column=ls.get("mass_column", "m_vir"),
                                      mass_min_msun=float(ls.get("mass_min_msun", 2e14)),
                                      z_min=float(ls.get("z_min", 0.25)), grid=grid, cell_split=cell_split)
        of_halo = objects.attach_truth(cands, hq)
    objects.add_method_scores(cands)
    if redshift_file is not None and redshift is None:
        redshift = redshifts_for(cands, *read_redshifts(redshift_file))
        notes.append(f"redshifts of {int(np.isfinite(redshift).sum())} candidates from {redshift_file}")
    add_masses(cands, redshift)
    cell_m = per_cell("log10_m500_cnn")
    if cell_m is not None:  # `szviewer mass WS`: the CNN's log10 M500 of the candidate's cell
        cid = np.asarray(cands["cutout_id"], np.int64)
        cands["m500_cnn"] = np.where(cid >= 0, 10.0 ** cell_m[np.maximum(cid, 0)], np.nan)
    err = None
    if learned and hq is not None and mf is not None and "cnn_prob" in cands.colnames and \
            np.isfinite(np.asarray(cands["cnn_prob"], float)).any():
        cols = {c: np.asarray(cands[c], float) for c in ("mf_snr", "theta_c_arcmin", "y0", "y0_err", "cnn_logit",
                                                           "flags")}
        try:
            cands["learned_prob"], _ = learned_scores(cols, cands["matched"], cands["region"],
                                                      LearnedSettings(seed=seed))
        except ValueError as exc:
            err = str(exc)
    objects.apply_units(cands)
    return ObjectSet(cands, hq, of_halo, notes, err)


def cutout_learned(ws: Workspace, table, scores: dict, seed: int = 0) -> np.ndarray | None:
    """The learned ensemble at cutout level (for Table 1): features of each cutout (its MF S/N and CNN
    probability, and theta_c, y0, y0_err, flags of its highest-S/N MF candidate), fitted on the train split."""
    from astropy.table import Table

    from szviewer.evaluate.learned import LearnedSettings, learned_scores

    if "mf_snr" not in scores or "cnn_prob" not in scores:
        return None
    ids = np.asarray(table["id"])
    cols = {"mf_snr": np.asarray(scores["mf_snr"], float), "cnn_prob": np.asarray(scores["cnn_prob"], float)}
    extra = {k: np.full(ids.size, np.nan) for k in ("theta_c_arcmin", "y0", "y0_err", "flags")}
    if _has_file(ws, "mf", MF_CATALOG):
        mf = Table.read(ws.file("mf", MF_CATALOG))
        if len(mf) and "cutout_id" in mf.colnames:
            order = np.argsort(np.asarray(mf["snr"], float))  # ascending: the highest S/N is written last
            cid = np.asarray(mf["cutout_id"])[order]
            pos = np.searchsorted(ids, cid)
            ok = (cid >= 0) & (pos < ids.size)
            ok[ok] &= ids[pos[ok]] == cid[ok]
            for k in extra:
                extra[k][pos[ok]] = np.asarray(mf[k], float)[order][ok]
    cols.update(extra)
    try:
        prob, _ = learned_scores(cols, np.asarray(table["label"], bool), np.asarray(table["split"]).astype(str),
                                 LearnedSettings(seed=seed))
    except ValueError:
        return None
    return prob
