"""Object catalogues (one row per candidate, with its own position) and their evaluation against halos (issue 13).

**Candidates.** :func:`merge_candidates` joins the MF catalogue (``mf_catalog.fits``: name, ra, dec, snr,
theta_c_arcmin, y0, y0_err, flags, pos_err_arcmin) and the CNN candidates (``dense_candidates.fits``: ra, dec,
prob, and where present x, y, pos_err_arcmin, logit) one-to-one within 1' (:mod:`.matching`). A merged row
takes the MF position and error when it has an MF candidate (the MF fits sub-pixel positions), otherwise the
CNN's (error: the CNN's ``pos_err_arcmin``, else 6' / sqrt(12) per axis: a window is positive for a cluster
anywhere in its central 6' cell). An MF
candidate without a CNN candidate takes the CNN probability of the cutout cell it falls in (``cnn_from_cell``),
so every MF candidate has a CNN score; a CNN-only candidate has no MF S/N (NaN: below the MF's detection
threshold, as the paper treats cutouts without a detection). ``flags``: the MF's bits (1 near a bright point
source, 2 the candidate touches a mask edge); CNN-only rows get bit 1 from the source list when one is given
and bit 2 from the CNN catalogue's ``flags`` (its window reaches into the mask or its apodisation).

**Regions.** A candidate (and a halo) belongs to the split of the cutout cell its position falls in
(:meth:`szviewer.cutouts.grid.CutoutGrid.cell_of` and the split of that cell, the RA bands of
:func:`szviewer.cutouts.labels.label_grid`); a candidate matched to a halo takes the halo's region. Rows outside
the grid have region ``''`` and are not evaluated. So thresholds are chosen on the same validation sky the
cutout-level Table 1 uses and counted on the same test sky.

**Truth.** Qualifying halos are those of the cutout label rule (e.g. M_vir >= 2e14 Msun, z >= 0.25). Each is
matched to at most one candidate within 1' (closest first): that candidate is a true positive when it passes
a method's thresholds; others are false positives; a qualifying halo whose candidate fails (or which has none)
is a false negative. Purity = TP / (TP + FP), completeness = TP / N_halos, F1 = 2 TP / (2 TP + FP + FN).
The one count is :func:`object_counts`; :class:`ObjectCounter` prepares a region once to count it at any
thresholds (the app's live object-level F1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import policy
from .curves import _ratio, roc_curve
from .matching import MATCH_RADIUS_ARCMIN, match_one_to_one

__all__ = [
    "ObjectSettings",
    "COLUMN_UNITS",
    "merge_candidates",
    "qualifying_halos",
    "attach_truth",
    "add_method_scores",
    "object_counts",
    "method_object_scores",
    "ObjectCounter",
    "evaluate_objects",
    "completeness_bins",
    "apply_units",
]

SOURCE_MF, SOURCE_CNN, SOURCE_BOTH = "MF", "CNN", "MF+CNN"
FLAG_NEAR_SOURCE, FLAG_NEAR_MASK = 1, 2  # the MF's (szviewer.mf.catalog)


@dataclass(frozen=True)
class ObjectSettings:
    """Object-level settings: match radius [arcmin] of MF to CNN candidates and of candidates to halos, the
    bright-source flag radius [arcmin], and whether MF-only rows take their cell's cutout CNN probability."""

    radius_arcmin: float = MATCH_RADIUS_ARCMIN
    source_radius_arcmin: float = 2.0
    cnn_from_cell: bool = True
    #: A 32 x 32 window is positive for a cluster anywhere in its central 6' cell, so a window peak without a
    #: fitted position is uniform over it: 6' / sqrt(12) = 1.7' per axis (measured on a 100 deg^2 sky: 1.6-1.9').
    window_cell_arcmin: float = 6.0


#: Units of the catalogue columns (astropy unit strings; '' = dimensionless).
COLUMN_UNITS: dict[str, str] = {
    "ra": "deg", "dec": "deg", "pos_err_arcmin": "arcmin", "mf_snr": "", "theta_c_arcmin": "arcmin", "y0": "",
    "y0_err": "", "cnn_prob": "", "cnn_logit": "", "rank_product": "", "learned_prob": "", "score": "",
    "sep_mf_cnn_arcmin": "arcmin", "halo_m_vir": "solMass", "halo_m500": "solMass", "halo_z": "",
    "halo_offset_arcmin": "arcmin", "m500_arnaud": "solMass", "m500_arnaud_err": "solMass", "m500_cnn": "solMass",
    "z_used": "",
    "flags": "", "cutout_id": "", "halo_id": "",
}


def apply_units(table) -> None:
    """Set the unit of every known numeric column of ``table`` in place (dimensionless ones get ``u.one``)."""
    from astropy import units as u

    for name in table.colnames:
        if name in COLUMN_UNITS and table[name].dtype.kind in "fiub":
            table[name].unit = u.Unit(COLUMN_UNITS[name]) if COLUMN_UNITS[name] else u.dimensionless_unscaled


def _col(t, name, n, default=np.nan, dtype=float):
    if t is not None and name in t.colnames:
        return np.asarray(t[name], dtype=dtype)
    return np.full(n, default, dtype=dtype)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    with np.errstate(invalid="ignore"):
        return np.log(p) - np.log1p(-p)


def merge_candidates(mf, cnn, *, grid=None, cell_split=None, cell_cnn_prob=None, bright_sources=None,
                     settings: ObjectSettings = ObjectSettings()):
    """One table of MF and CNN candidates merged one-to-one within ``settings.radius_arcmin`` (module docstring).

    ``mf`` / ``cnn``: astropy Tables or None. ``grid`` (a :class:`CutoutGrid`) with ``cell_split`` (split of
    every grid cell) gives each row its ``region`` and ``cutout_id``; ``cell_cnn_prob`` (per grid cell, NaN
    where no score) fills ``cnn_prob`` of MF-only rows; ``bright_sources`` = (ra, dec) [deg] of the sources the
    MF flags against sets bit 1 of CNN-only rows; a ``flags`` column of ``cnn`` gives them bit 2.
    """
    from astropy.table import Table

    from szviewer.mf.catalog import jname

    n_mf = 0 if mf is None else len(mf)
    n_cnn = 0 if cnn is None else len(cnn)
    mf_ra, mf_dec = _col(mf, "ra", n_mf), _col(mf, "dec", n_mf)
    cn_ra, cn_dec = _col(cnn, "ra", n_cnn), _col(cnn, "dec", n_cnn)
    to_cnn, sep = match_one_to_one(mf_ra, mf_dec, cn_ra, cn_dec, settings.radius_arcmin)
    cnn_only = np.setdiff1d(np.arange(n_cnn), to_cnn[to_cnn >= 0])
    n = n_mf + cnn_only.size
    has_mf = np.arange(n) < n_mf
    cnn_idx = np.concatenate([to_cnn, cnn_only]).astype(np.int64)  # -1: no CNN candidate
    has_cnn = cnn_idx >= 0
    pick = np.maximum(cnn_idx, 0)

    def from_cnn(name, default=np.nan):
        v = _col(cnn, name, n_cnn, default)
        return np.where(has_cnn, v[pick] if n_cnn else default, default)

    def from_mf(name, default=np.nan, dtype=float):
        return np.concatenate([_col(mf, name, n_mf, default, dtype), np.full(cnn_only.size, default, dtype)])

    cnn_err = from_cnn("pos_err_arcmin", settings.window_cell_arcmin / np.sqrt(12.0))
    ra = np.where(has_mf, from_mf("ra"), from_cnn("ra"))
    dec = np.where(has_mf, from_mf("dec"), from_cnn("dec"))
    pos_err = np.where(has_mf, from_mf("pos_err_arcmin"), cnn_err)
    cnn_prob = from_cnn("prob")
    logit = from_cnn("logit") if cnn is not None and "logit" in cnn.colnames else _logit(cnn_prob)
    cutout_id = np.full(n, -1, np.int64)
    region = np.full(n, "", dtype="U5")
    if grid is not None and n:
        cutout_id = np.asarray(grid.cell_of(ra, dec), dtype=np.int64)
        if cell_split is not None:
            cs = np.asarray(cell_split).astype("U5")
            region = np.where(cutout_id >= 0, cs[np.maximum(cutout_id, 0)], "")
    from_cell = np.zeros(n, bool)
    if settings.cnn_from_cell and cell_cnn_prob is not None and n:
        cp = np.asarray(cell_cnn_prob, float)
        fill = ~has_cnn & (cutout_id >= 0)
        cnn_prob = cnn_prob.copy()
        cnn_prob[fill] = cp[cutout_id[fill]]
        logit = np.where(fill, _logit(cnn_prob), logit)
        from_cell = fill & np.isfinite(cnn_prob)
    flags = from_mf("flags", 0, np.int32)
    if cnn is not None and "flags" in cnn.colnames and cnn_only.size:  # the CNN's own mask bit (jobs.dense)
        flags[~has_mf] |= np.asarray(cnn["flags"], np.int32)[cnn_only] & FLAG_NEAR_MASK
    if bright_sources is not None and cnn_only.size and len(bright_sources[0]):
        near, _ = _near(ra[~has_mf], dec[~has_mf], *bright_sources, settings.source_radius_arcmin)
        flags[~has_mf] |= np.where(near, FLAG_NEAR_SOURCE, 0).astype(np.int32)
    source = np.where(has_mf & has_cnn, SOURCE_BOTH, np.where(has_mf, SOURCE_MF, SOURCE_CNN))
    names = [jname(r, d) for r, d in zip(ra, dec, strict=True)]
    t = Table()
    t["name"] = np.asarray(names, dtype="U24") if n else np.zeros(0, "U24")
    t["ra"] = ra
    t["dec"] = dec
    t["pos_err_arcmin"] = pos_err
    t["mf_snr"] = from_mf("snr")
    t["theta_c_arcmin"] = from_mf("theta_c_arcmin")
    t["y0"] = from_mf("y0")
    t["y0_err"] = from_mf("y0_err")
    t["cnn_prob"] = cnn_prob
    t["cnn_logit"] = logit
    t["cnn_from_cell"] = from_cell
    t["sep_mf_cnn_arcmin"] = np.concatenate([sep, np.full(cnn_only.size, np.nan)])
    t["source"] = source.astype("U6")
    t["flags"] = flags
    t["near_source"] = (flags & FLAG_NEAR_SOURCE) > 0
    t["near_mask"] = (flags & FLAG_NEAR_MASK) > 0
    t["cutout_id"] = cutout_id
    t["region"] = region
    t.meta["radius_arcmin"] = settings.radius_arcmin
    return t


def _near(ra, dec, sra, sdec, radius_arcmin):
    from scipy.spatial import cKDTree

    from szviewer.sky.geometry import radec_to_vec

    tree = cKDTree(radec_to_vec(np.asarray(sra, float), np.asarray(sdec, float)))
    chord = 2 * np.sin(np.deg2rad(radius_arcmin / 60.0) / 2)
    d, i = tree.query(radec_to_vec(np.asarray(ra, float), np.asarray(dec, float)), k=1, distance_upper_bound=chord)
    return np.isfinite(d), i


def qualifying_halos(halos, *, mass_column: str, mass_min_msun: float, z_min: float, grid=None, cell_split=None):
    """The halos of the cutout label rule (``mass_column >= mass_min_msun`` [Msun], ``z >= z_min``) inside the
    grid, as a Table: halo_id, ra, dec, m_vir, m500, z [Msun], region (the split of their cell)."""
    from astropy.table import Table

    mass = np.asarray(halos[mass_column], float)
    z = np.asarray(halos["z"], float)
    with np.errstate(invalid="ignore"):
        q = (mass >= mass_min_msun) & (z >= z_min)
    h = halos[q]
    out = Table()
    out["halo_id"] = np.asarray(h["halo_id"] if "halo_id" in h.colnames else np.flatnonzero(q), np.int64)
    out["ra"] = np.asarray(h["ra"], float)
    out["dec"] = np.asarray(h["dec"], float)
    for k in ("m_vir", "m500", "z"):
        out[k] = _col(h, k, len(h))
    if grid is not None:
        cell = np.asarray(grid.cell_of(out["ra"], out["dec"]), np.int64)
        keep = cell >= 0
        out = out[keep]
        cell = cell[keep]
        out["region"] = np.asarray(cell_split).astype("U5")[cell] if cell_split is not None else ""
    else:
        out["region"] = np.full(len(out), "", "U5")
    return out


def attach_truth(cands, halos, radius_arcmin: float = MATCH_RADIUS_ARCMIN) -> np.ndarray:
    """Match candidates one-to-one to qualifying ``halos`` (closest first, within ``radius_arcmin``); adds
    ``matched``, ``halo_id``, ``halo_m_vir``, ``halo_m500``, ``halo_z``, ``halo_offset_arcmin`` and moves a
    matched candidate into its halo's region. Returns the candidate row of each halo (-1 where none)."""
    to_halo, sep = match_one_to_one(cands["ra"], cands["dec"], halos["ra"], halos["dec"], radius_arcmin)
    m = to_halo >= 0
    k = np.maximum(to_halo, 0)
    cands["matched"] = m
    cands["halo_id"] = np.where(m, np.asarray(halos["halo_id"])[k] if len(halos) else -1, -1)
    for src, dst in (("m_vir", "halo_m_vir"), ("m500", "halo_m500"), ("z", "halo_z")):
        v = np.asarray(halos[src], float)
        cands[dst] = np.where(m, v[k] if len(halos) else np.nan, np.nan)
    cands["halo_offset_arcmin"] = sep
    if "region" in cands.colnames and m.any():
        reg = np.asarray(cands["region"]).copy()
        reg[m] = np.asarray(halos["region"])[k[m]]
        cands["region"] = reg
    of_halo = np.full(len(halos), -1, np.int64)
    of_halo[to_halo[m]] = np.flatnonzero(m)
    return of_halo


def add_method_scores(cands) -> None:
    """Add ``rank_product`` (EnsemblePROD over candidates, ranks within each region) where MF and CNN exist."""
    cols = {c: np.asarray(cands[c], float) for c in (policy.MF, policy.CNN) if c in cands.colnames}
    if len(cols) == 2 and len(cands):
        cands[policy.PROD_COLUMN] = policy.method_scores("PROD", cols, groups=np.asarray(cands["region"]))[
            policy.PROD_COLUMN]


def candidate_columns(cands, method: str | None = None) -> dict[str, np.ndarray]:
    """The policy's score columns of a candidate table (MF S/N, CNN probability, learned probability).

    For ``method='CNN'`` only rows with a CNN candidate keep ``cnn_prob`` (an MF candidate's cell probability
    makes it an ensemble row, not a CNN detection)."""
    cols = {c: np.asarray(cands[c], float) for c in (policy.MF, policy.CNN, policy.LEARNED_COLUMN)
            if c in cands.colnames}
    if method is not None and method.upper() == "CNN" and policy.CNN in cols and "cnn_from_cell" in cands.colnames:
        cols[policy.CNN] = np.where(np.asarray(cands["cnn_from_cell"], bool), np.nan, cols[policy.CNN])
    return cols


def completeness_bins(values, detected, edges) -> dict:
    """Completeness (detected / all) of halos in bins of ``values`` with ``edges``; counts per bin."""
    v = np.asarray(values, float)
    d = np.asarray(detected, bool)
    idx = np.digitize(v, edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1) & np.isfinite(v)
    n = np.bincount(idx[ok], minlength=len(edges) - 1)
    k = np.bincount(idx[ok], weights=d[ok], minlength=len(edges) - 1).astype(int)
    return {"edges": [float(e) for e in edges], "n": n.tolist(), "detected": k.tolist(),
            "completeness": [None if not nn else float(kk / nn) for kk, nn in zip(k, n, strict=True)]}


M500_EDGES = np.geomspace(1e14, 2e15, 9)
Z_EDGES = np.array([0.25, 0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.5])


def _curve_summary(choice_curve, max_points: int = 200) -> dict | None:
    if choice_curve is None or choice_curve.thresholds.size == 0:
        return None
    c = choice_curve
    k = np.unique(np.rint(np.linspace(0, c.thresholds.size - 1, min(max_points, c.thresholds.size))).astype(int))
    f = lambda a: [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float)[k]]  # noqa: E731
    return {"threshold": f(c.thresholds), "purity": f(c.purity), "completeness": f(c.completeness), "f1": f(c.f1)}


def object_counts(pred, matched, n_halos: int) -> dict:
    """The object-level count of one region (module docstring): TP = passing candidates matched to a qualifying
    halo, FP = the other passing candidates, FN = the region's ``n_halos`` halos less TP; purity, completeness, F1.

    ``pred`` and ``matched`` are over the region's candidates (``matched`` from :func:`attach_truth`)."""
    pred = np.asarray(pred, bool)
    y = np.asarray(matched, bool)
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int(n_halos) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "purity": float(_ratio(tp, tp + fp)),
            "completeness": float(_ratio(tp, n_halos)), "f1": float(_ratio(2 * tp, 2 * tp + fp + fn))}


def method_object_scores(cands, methods: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per method (``methods``, default every one the columns allow) its thresholded columns over all candidates
    (:func:`policy.method_scores`, PROD ranked within each region); methods without any finite score (e.g. CNN
    without CNN candidates: no such rows) are left out."""
    cols = candidate_columns(cands)
    region = np.asarray(cands["region"]).astype(str)
    have = policy.available(cols)
    out = {}
    for method in methods or have:
        if method not in have:
            continue
        s = policy.method_scores(method, candidate_columns(cands, method), groups=region)
        if all(np.isfinite(v).any() for v in s.values()):
            out[method] = s
    return out


@dataclass(frozen=True)
class ObjectCounter:
    """The candidates of one region, prepared once, to count at any thresholds (:func:`object_counts`): what the
    app shows live as a threshold is dragged (one comparison per candidate of the region)."""

    region: str
    scores: dict  # method -> thresholded column -> scores of the region's candidates
    matched: np.ndarray
    n_halos: int

    @classmethod
    def of(cls, cands, halos, region: str = "test", methods: Sequence[str] | None = None) -> ObjectCounter:
        """From candidates with truth (:func:`attach_truth`) and the qualifying ``halos`` (with ``region``)."""
        keep = np.asarray(cands["region"]).astype(str) == region
        scores = {m: {c: v[keep] for c, v in s.items()} for m, s in method_object_scores(cands, methods).items()}
        return cls(region, scores, np.asarray(cands["matched"], bool)[keep],
                   int((np.asarray(halos["region"]).astype(str) == region).sum()))

    def counts(self, method: str, thresholds: Mapping[str, float]) -> dict:
        """:func:`object_counts` of ``method`` at ``thresholds`` (column -> value); KeyError for a method not here."""
        return object_counts(policy.decide(method, self.scores[method], thresholds), self.matched, self.n_halos)


def evaluate_objects(cands, halos, of_halo: np.ndarray, methods: Sequence[str] | None = None,
                     settings: policy.PolicySettings | None = None) -> dict[str, dict]:
    """Object-level Table 1: per method, thresholds chosen on region ``settings.fit`` (F1 over candidates with
    the region's unmatched halos as false negatives, :func:`policy.search`), counted on ``settings.apply``.

    ``cands`` need ``matched`` and ``region`` (:func:`attach_truth`) and score columns; ``halos`` the
    qualifying halos (with ``region``), ``of_halo`` their candidate rows. Returns per method: thresholds,
    tp, fp, fn, purity, completeness, f1, fit_f1, the F1 curve on the apply region (one-score methods) and
    completeness against M500 and z of the apply region's halos.
    """
    settings = settings or policy.PolicySettings()
    region = np.asarray(cands["region"]).astype(str)
    y = np.asarray(cands["matched"], bool)
    h_region = np.asarray(halos["region"]).astype(str)
    out: dict[str, dict] = {}
    for method, s in method_object_scores(cands, methods).items():
        fit, app = region == settings.fit, region == settings.apply
        n_fit_halos = int((h_region == settings.fit).sum())
        n_app_halos = int((h_region == settings.apply).sum())
        choice = policy.search(method, {k: v[fit] for k, v in s.items()}, y[fit],
                               n_missed=max(n_fit_halos - int(y[fit].sum()), 0), settings=settings)
        pred = policy.decide(method, s, choice.thresholds)
        row = {"thresholds": choice.thresholds, **object_counts(pred[app], y[app], n_app_halos),
               "fit_f1": choice.fit_f1, "n_candidates_apply": int(app.sum()), "n_halos_apply": n_app_halos}
        if choice.curve is not None:
            col = next(iter(s))
            sa = s[col][app]
            ya = y[app]
            n_miss = max(n_app_halos - int(ya.sum()), 0)
            sa = np.concatenate([sa, np.full(n_miss, np.nan)])
            ya = np.concatenate([ya, np.ones(n_miss, bool)])
            from .curves import f1_curve

            row["curve_apply"] = _curve_summary(f1_curve(sa, ya))
            row["apply_best_f1"] = float(f1_curve(sa, ya).best().f1)
        hmask = h_region == settings.apply
        det = np.zeros(len(halos), bool)
        has = of_halo >= 0
        det[has] = pred[of_halo[has]]
        row["completeness_m500"] = completeness_bins(np.asarray(halos["m500"], float)[hmask], det[hmask], M500_EDGES)
        row["completeness_z"] = completeness_bins(np.asarray(halos["z"], float)[hmask], det[hmask], Z_EDGES)
        out[method] = row
    return out


def object_auc(cands, split: str = "test") -> dict[str, float]:
    """AUC of each one-score method over the candidates of region ``split`` (matched vs not; halos without a
    candidate are not in it: the ROC ranks candidates only)."""
    cols = candidate_columns(cands)
    region = np.asarray(cands["region"]).astype(str)
    y = np.asarray(cands["matched"], bool)
    m = region == split
    out = {}
    for method in policy.available(cols):
        s = policy.method_scores(method, candidate_columns(cands, method), groups=region)
        if len(s) == 1:
            out[method] = float(roc_curve(next(iter(s.values()))[m], y[m]).auc)
    return out


def format_objects(results: Mapping[str, Mapping]) -> str:
    """Text table of :func:`evaluate_objects` (thresholds from validation, counts on test)."""
    thr = {name: policy.format_thresholds(r["thresholds"]) for name, r in results.items()}
    w = max([34] + [len(t) for t in thr.values()])  # the columns stay aligned under the longest thresholds
    lines = [f"{'method':<8} {'thresholds (val)':<{w}} {'TP':>5} {'FP':>5} {'FN':>5}  {'purity':>6} "
             f"{'compl.':>6} {'F1':>5}  {'val F1':>6}"]
    lines.append("-" * len(lines[0]))
    for name, r in results.items():
        f = lambda x: "nan" if x is None or x != x else f"{x:.2f}"  # noqa: E731
        lines.append(f"{name:<8} {thr[name]:<{w}} {r['tp']:>5d} {r['fp']:>5d} "
                     f"{r['fn']:>5d}  {f(r['purity']):>6} {f(r['completeness']):>6} {f(r['f1']):>5}  "
                     f"{f(r['fit_f1']):>6}")
    return "\n".join(lines)
