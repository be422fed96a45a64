"""Jobs: evaluate a workspace (the paper's Table 1 per cutout, the same per object, AUCs, figures, report) and
export candidate catalogues (one row per object, or per positive cutout), all through the one evaluation policy
(:mod:`szviewer.evaluate.policy`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from szviewer.atomic import write_json
from szviewer.errors import InputError, OutputExistsError
from szviewer.workspace import Workspace

EVALUATION = "evaluation.json"
HOW = {"mf_snr": "szviewer mf WS", "cnn_prob": "szviewer predict WS"}


def _inputs(ws: Workspace, allow_stale: bool = False, columns=None) -> tuple:
    """The cutout table and the score columns (all, or those named), refusing scores made from inputs that have
    since been rebuilt unless ``allow_stale``; returns (table, scores, score products used, stale notes)."""
    ws.check_fresh(["cutouts"], allow_stale)
    with ws.cutout_store() as st:
        table = st.table.copy()
    owner = ws.column_products()
    used = sorted({owner[c] for c in (columns or owner) if c in owner})
    notes = ws.check_fresh(used, allow_stale)
    scores = ws.scores(np.asarray(table["id"]), products=used or None)
    if not scores:
        raise InputError(ws.root, "no score columns yet: run `szviewer mf WS` and/or `szviewer predict WS`")
    return table, scores, used, notes


def check_outputs(paths: dict, overwrite: bool) -> None:
    """The one overwrite policy for user files: every output is checked before anything is written."""
    for what, p in paths.items():
        if p is None:
            continue
        p = Path(p)
        if p.exists() and not overwrite:
            raise OutputExistsError(p, f"{what} exists; pass --overwrite to replace it")
        if not p.parent.is_dir():
            raise InputError(p, f"folder {p.parent} does not exist")


def _auc(scores: dict, labels, split, sel: str = "test") -> dict[str, float]:
    """Cutout-level ROC AUC on split ``sel`` of every one-score method (MF, CNN, PROD, LEARNED)."""
    from szviewer.evaluate import policy
    from szviewer.evaluate.curves import roc_curve

    out = {}
    m = split == sel
    for method in policy.available(scores):
        s = policy.method_scores(method, scores, groups=split)
        if len(s) == 1:
            out[method] = float(roc_curve(next(iter(s.values()))[m], labels[m]).auc)
    return out


def evaluate_workspace(ws: Workspace, json_path: str | os.PathLike | None = None,
                       report_dir: str | os.PathLike | None = None, overwrite: bool = False,
                       allow_stale: bool = False, objects: bool = True, seed: int = 0) -> tuple[list, str]:
    """Table 1 for the workspace (thresholds from validation, counts on test) with the learned ensemble, the
    cutout AUCs and, where candidate catalogues exist, the object-level table (:mod:`szviewer.evaluate.objects`),
    committed as the product ``evaluation`` (always refreshable: it is made only from the other products);
    ``json_path`` and ``report_dir`` are user files, refused if they exist unless ``overwrite``. Stale scores are
    refused unless ``allow_stale``."""
    from szviewer.evaluate.table1 import format_table1, table1
    from szviewer.jobs.catalogue import cutout_learned, has_candidates

    check_outputs({"JSON file": json_path, "report folder": report_dir}, overwrite)
    table, scores, used, notes = _inputs(ws, allow_stale)
    labels = np.asarray(table["label"], dtype=bool)
    split = np.asarray(table["split"]).astype(str)
    learned = cutout_learned(ws, table, scores, seed=seed)
    if learned is not None:
        scores = {**scores, "learned_prob": learned}
    rows = table1(scores, labels, split)
    from szviewer.cutouts.levels import LEVELS

    levels = {f"cnn_prob_{lv}": scores[f"cnn_prob_{lv}"] for lv, _ in LEVELS if f"cnn_prob_{lv}" in scores}
    if levels and "cnn_prob" in scores:
        levels["cnn_prob_all"] = scores["cnn_prob"]
    from szviewer.evaluate.science import per_level_summary

    per_level = per_level_summary(levels, labels, split == "val", split == "test") if levels else {}
    result = {"table1": [r.as_dict() for r in rows], "columns": sorted(scores),
              "auc_test": _auc(scores, labels, split),
              "cnn_per_level": [dict(level=lv, **d) for lv, d in per_level.items()],
              "counts": {s: {"cutouts": int((split == s).sum()), "positives": int((labels & (split == s)).sum())}
                         for s in ("train", "val", "test")}}
    obj_text = ""
    obj = None
    if objects and any(has_candidates(ws).values()) and ws.has("halos"):
        from szviewer.evaluate import objects as objmod
        from szviewer.jobs.catalogue import load_objects

        oset = load_objects(ws, allow_stale=allow_stale, seed=seed)
        notes = notes + [n for n in oset.notes if n not in notes]
        obj = objmod.evaluate_objects(oset.cands, oset.halos, oset.of_halo)
        region = np.asarray(oset.cands["region"]).astype(str)
        from szviewer.evaluate.mass import mass_scatter

        matched = np.asarray(oset.cands["matched"], bool)
        est, true = np.asarray(oset.cands["m500_arnaud"], float), np.asarray(oset.cands["halo_m500"], float)
        result["objects_mass"] = {
            "rule": "M500 from the MF's y0, theta_c and the true z (Arnaud et al. 2010 profile inside theta500) "
                    "against the matched halo's M500; log10 ratio",
            "test": mass_scatter(est[matched & (region == "test")], true[matched & (region == "test")]),
            "all": mass_scatter(est[matched], true[matched])}
        result["objects"] = {
            "methods": obj, "auc_test": objmod.object_auc(oset.cands),
            "candidates": {r: int((region == r).sum()) for r in ("train", "val", "test")},
            "halos": {r: int((np.asarray(oset.halos["region"]) == r).sum()) for r in ("train", "val", "test")},
            "learned_error": oset.learned_error,
            "rule": "candidates matched one-to-one to qualifying halos within 1'; thresholds from the val region, "
                    "counts on the test region (regions: the split of the cutout cell of the position)"}
        obj_text = ("\n\nObjects (one-to-one within 1' of qualifying halos; thresholds on val, counts on test)\n"
                    + objmod.format_objects(obj))
        if "CNN" not in obj and not has_candidates(ws).get("cnn", True):
            obj_text += ("\nCNN      no CNN candidates with positions yet: run `szviewer predict WS --dense` "
                         "(--dense --windowed for a model with per-window input scaling, e.g. act-dr6's)")
        ms = result["objects_mass"]["all"]
        if ms["n"]:
            obj_text += (f"\nM500 from y0, theta_c and the true z (Arnaud 2010), {ms['n']} matched halos: bias "
                         f"{ms['bias_dex']:+.3f} dex, scatter {ms['scatter_dex']:.3f} dex "
                         f"(MAD {ms['scatter_mad_dex']:.3f})")
    result["stale_inputs"] = notes
    if json_path is not None:
        write_json(json_path, result)
    if report_dir is not None:
        from szviewer.evaluate.report import evaluation_report

        report_dir = Path(report_dir)
        halo = {k: np.asarray(table[k], dtype=float) for k in ("m_vir", "z", "r_vir", "offset_arcmin")
                if k in table.colnames}
        from szviewer.jobs.selection import selection_figures_of

        evaluation_report(report_dir / "report.html", scores, labels, split, halo=halo,
                          provenance={"workspace": str(ws.root)}, overwrite=True, png_dir=report_dir,
                          objects=result.get("objects"), extra_figures=selection_figures_of(ws))
    with ws.writing("evaluation", inputs=("cutouts", *used), overwrite=True) as w:
        write_json(w.path(EVALUATION), result)
        w.summary = {r.method: round(float(r.f1), 4) for r in rows}
        if obj:
            w.summary.update({f"objects_{k}": round(float(v["f1"]), 4) for k, v in obj.items()})
    text = format_table1(rows, style="rows") + "\n\n" + format_table1(rows, style="paper")
    if result["auc_test"]:
        text += "\n\nAUC (test cutouts): " + ", ".join(f"{k} {v:.3f}" for k, v in result["auc_test"].items())
    text += obj_text
    if notes:
        text = "\n".join(f"WARNING: {n}" for n in notes) + "\n\n" + text
    if per_level:
        text += "\n\nCNN per component level (paper Fig. 8): level, test F1, test AUC\n" + "\n".join(
            f"  {lv:<8} {d['test_f1']:.3f}  {d['test_auc']:.3f}" for lv, d in per_level.items())
    return rows, text


def _thresholds(method: str, given, choose) -> tuple[dict, str]:
    from szviewer.evaluate import policy

    if given:
        try:
            return policy.thresholds_from_values(method, given), "given"
        except ValueError as exc:
            raise InputError(None, f"--threshold: {exc}") from None
    return choose().thresholds, "validation F1"


def export_candidates(ws: Workspace, method: str, out: str | os.PathLike, fmt: str | None = None,
                      thresholds: list[float] | None = None, regions: str | os.PathLike | None = None,
                      split: str | None = None, overwrite: bool = False, allow_stale: bool = False,
                      rows: str | None = None, seed: int = 0, redshifts: str | os.PathLike | None = None) -> dict:
    """Write the candidate catalogue of one method; thresholds default to the validation F1 optimum of the one
    policy. ``rows='objects'`` (the default where the workspace has candidate catalogues): one row per object
    (:func:`szviewer.jobs.catalogue.load_objects`); ``'cutouts'``: one row per positive cutout at its centre (the
    Table 1 view). ``redshifts``: a table of ra, dec, z (follow-up, photo-z) matched to the objects within 1',
    whose redshift then gives the Arnaud M500 (:func:`szviewer.jobs.catalogue.read_redshifts`). Every output is
    checked before anything is written; stale scores are refused unless
    ``allow_stale``. Returns rows, thresholds, the row kind and the paths written."""
    from szviewer.evaluate import policy

    try:
        m = policy.method_of(method)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    check_outputs({"catalogue": out, "region file": regions}, overwrite)
    if rows is None:
        from szviewer.jobs.catalogue import has_candidates

        rows = "objects" if any(has_candidates(ws).values()) else "cutouts"
    if rows not in ("objects", "cutouts"):
        raise InputError(None, f"--rows {rows!r}: use objects or cutouts")
    if redshifts is not None:
        if rows != "objects":
            raise InputError(redshifts, "redshifts are matched to objects: export --rows objects")
        from szviewer.jobs.catalogue import read_redshifts

        read_redshifts(redshifts)  # a bad table is refused before any work
    if rows == "objects":
        cat, t, source = _object_catalogue(ws, m, thresholds, split, allow_stale, seed, redshifts)
    else:
        cat, t, source = _cutout_catalogue(ws, m, thresholds, split, allow_stale)
    cat.meta.update(method=m.name.lower(), thresholds=t, rows=rows, threshold_source=source, workspace=str(ws.root),
                    split=split or "all")
    from szviewer.workspace.vetting import add_vetting_columns

    add_vetting_columns(cat, ws.root)  # the app's vetting (cluster / not / unsure, flag, note), issue 14.5
    from szviewer.evaluate.export import write_catalog, write_ds9_regions

    try:
        write_catalog(cat, out, format=fmt, overwrite=overwrite)
        if regions is not None:
            score_col = "score" if "score" in cat.colnames else m.thresholded[0]
            write_ds9_regions(regions, cat, score=score_col if score_col in cat.colnames else None,
                              radius_arcmin=1.0 if rows == "objects" else 3.0, overwrite=overwrite)
    except FileExistsError as exc:
        raise OutputExistsError(str(exc).split(":")[0], "pass --overwrite to replace it") from None
    except ValueError as exc:
        raise InputError(out, str(exc)) from None
    return {"rows": len(cat), "thresholds": t, "kind": rows, "out": str(out),
            "regions": None if regions is None else str(regions), "threshold_source": source}


def _need(ws, m, scores) -> None:
    need = [c for c in m.needs if c not in scores]
    if need:
        raise InputError(ws.root, f"method {m.name} needs score column(s) {', '.join(need)}: run "
                                  + " and ".join(f"`{HOW.get(c, c)}`" for c in need))


def _object_catalogue(ws, m, thresholds, split, allow_stale, seed, redshifts=None):
    from szviewer.evaluate import policy
    from szviewer.evaluate.objects import candidate_columns
    from szviewer.jobs.catalogue import load_objects

    oset = load_objects(ws, allow_stale=allow_stale, learned=m.name == "LEARNED", seed=seed,
                        redshift_file=redshifts)
    cands = oset.cands
    cols = candidate_columns(cands, m.name)
    if m.name == "LEARNED" and "learned_prob" not in cols:
        raise InputError(ws.root, "the learned ensemble needs MF and CNN candidates and truth"
                                  + (f": {oset.learned_error}" if oset.learned_error else ""))
    _need(ws, m, cols)
    region = np.asarray(cands["region"]).astype(str)
    s = policy.method_scores(m, cols, groups=region)

    def choose():
        if oset.halos is None:
            raise InputError(ws.root, "no halo catalogue to choose thresholds on: pass --threshold")
        y = np.asarray(cands["matched"], bool)
        fit = region == "val"
        n_miss = max(int((np.asarray(oset.halos["region"]) == "val").sum()) - int(y[fit].sum()), 0)
        return policy.search(m, {k: v[fit] for k, v in s.items()}, y[fit], n_missed=n_miss)

    t, source = _thresholds(m.name, thresholds, choose)
    decision = policy.decide(m, s, t)
    # the ensemble score of a row: the thresholded score; AND / OR have two, so the PROD rank product orders them
    cands["score"] = s[m.thresholded[0]] if m.n_thresholds == 1 else np.asarray(cands[policy.PROD_COLUMN], float)
    keep = decision & ((region == split) if split else np.ones(len(cands), bool))
    cat = cands[keep]
    from szviewer.evaluate.objects import apply_units

    apply_units(cat)
    return cat, t, source


def _cutout_catalogue(ws, m, thresholds, split, allow_stale):
    from szviewer.evaluate import policy
    from szviewer.evaluate.export import build_catalog

    table, scores, _, _ = _inputs(ws, allow_stale, columns=m.needs)
    _need(ws, m, scores)
    sp = np.asarray(table["split"]).astype(str)
    labels = np.asarray(table["label"], dtype=bool)
    s = policy.method_scores(m, scores, groups=sp)
    t, source = _thresholds(m.name, thresholds, lambda: policy.choose(m, scores, labels, sp))
    decision = policy.decide(m, s, t)
    cols = {c: np.asarray(scores[c], float) for c in m.needs}
    cols.update(s)
    keep = np.ones(len(table), bool) if split is None else sp == split
    halo = None
    if "halo_id" in table.colnames:
        halo = {k: np.asarray(table[k])[keep] for k in ("halo_id", "m_vir", "m500", "z") if k in table.colnames}
    cat = build_catalog(np.asarray(table["ra"])[keep], np.asarray(table["dec"])[keep],
                        {k: v[keep] for k, v in cols.items()}, decision[keep], halo=halo, method=m.name,
                        thresholds=t, provenance={"workspace": str(ws.root), "split": split or "all",
                                                  "threshold_source": source})
    cat["cutout_id"] = np.asarray(table["id"])[keep][np.asarray(decision[keep])]
    for c in ("halo_m_vir", "halo_m500"):
        if c in cat.colnames:
            cat[c].unit = "solMass"
    return cat, t, source
