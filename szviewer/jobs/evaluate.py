"""Jobs: evaluate a workspace (the paper's Table 1, figures, report) and export candidate catalogs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from szviewer.atomic import write_json
from szviewer.errors import InputError, OutputExistsError
from szviewer.workspace import Workspace

EVALUATION = "evaluation.json"
METHOD_COLUMNS = {"mf": ("mf_snr",), "cnn": ("cnn_prob",), "prod": ("cnn_prob", "mf_snr"),
                  "and": ("cnn_prob", "mf_snr"), "or": ("cnn_prob", "mf_snr")}


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


def evaluate_workspace(ws: Workspace, json_path: str | os.PathLike | None = None,
                       report_dir: str | os.PathLike | None = None, overwrite: bool = False,
                       allow_stale: bool = False) -> tuple[list, str]:
    """Table 1 for the workspace (thresholds from validation, counts on test), committed as the product
    ``evaluation`` (always refreshable: it is made only from the other products); ``json_path`` and ``report_dir``
    are user files, refused if they exist unless ``overwrite``. Stale scores are refused unless ``allow_stale``."""
    from szviewer.evaluate.table1 import format_table1, table1

    check_outputs({"JSON file": json_path, "report folder": report_dir}, overwrite)
    table, scores, used, notes = _inputs(ws, allow_stale)
    labels = np.asarray(table["label"], dtype=bool)
    split = np.asarray(table["split"]).astype(str)
    rows = table1(scores, labels, split)
    from szviewer.cutouts.levels import LEVELS

    levels = {f"cnn_prob_{lv}": scores[f"cnn_prob_{lv}"] for lv, _ in LEVELS if f"cnn_prob_{lv}" in scores}
    if levels and "cnn_prob" in scores:
        levels["cnn_prob_all"] = scores["cnn_prob"]
    from szviewer.evaluate.science import per_level_summary

    per_level = per_level_summary(levels, labels, split == "val", split == "test") if levels else {}
    result = {"table1": [r.as_dict() for r in rows], "columns": sorted(scores),
              "cnn_per_level": [dict(level=lv, **d) for lv, d in per_level.items()],
              "counts": {s: {"cutouts": int((split == s).sum()), "positives": int((labels & (split == s)).sum())}
                         for s in ("train", "val", "test")}}
    result["stale_inputs"] = notes
    if json_path is not None:
        write_json(json_path, result)
    if report_dir is not None:
        from szviewer.evaluate.report import evaluation_report

        report_dir = Path(report_dir)
        halo = {k: np.asarray(table[k], dtype=float) for k in ("m_vir", "z", "r_vir", "offset_arcmin")
                if k in table.colnames}
        evaluation_report(report_dir / "report.html", scores, labels, split, halo=halo,
                          provenance={"workspace": str(ws.root)}, overwrite=True, png_dir=report_dir)
    with ws.writing("evaluation", inputs=("cutouts", *used), overwrite=True) as w:
        write_json(w.path(EVALUATION), result)
        w.summary = {r.method: round(float(r.f1), 4) for r in rows}
    text = format_table1(rows, style="rows") + "\n\n" + format_table1(rows, style="paper")
    if notes:
        text = "\n".join(f"WARNING: {n}" for n in notes) + "\n\n" + text
    if per_level:
        text += "\n\nCNN per component level (paper Fig. 8): level, test F1, test AUC\n" + "\n".join(
            f"  {lv:<8} {d['test_f1']:.3f}  {d['test_auc']:.3f}" for lv, d in per_level.items())
    return rows, text


def export_candidates(ws: Workspace, method: str, out: str | os.PathLike, fmt: str | None = None,
                      thresholds: list[float] | None = None, regions: str | os.PathLike | None = None,
                      split: str | None = None, overwrite: bool = False, allow_stale: bool = False) -> dict:
    """Write the candidate catalog of one method; thresholds default to the validation F1 optimum. Every output
    (catalogue, regions) is checked before anything is written; stale scores are refused unless ``allow_stale``."""
    from szviewer.evaluate.curves import f1_curve
    from szviewer.evaluate.ensembles import and_predict, or_predict, prod_score, two_score_grid
    from szviewer.evaluate.export import build_catalog, write_catalog, write_ds9_regions

    method = method.lower()
    if method not in METHOD_COLUMNS:
        raise InputError(None, f"unknown method {method!r}; choose from {', '.join(METHOD_COLUMNS)}")
    check_outputs({"catalogue": out, "region file": regions}, overwrite)
    table, scores, _, _ = _inputs(ws, allow_stale, columns=METHOD_COLUMNS[method])
    need = [c for c in METHOD_COLUMNS[method] if c not in scores]
    if need:
        how = {"mf_snr": "szviewer mf WS", "cnn_prob": "szviewer predict WS"}
        raise InputError(ws.root, f"method {method} needs score column(s) {', '.join(need)}: run "
                                  + " and ".join(f"`{how.get(c, c)}`" for c in need))
    labels = np.asarray(table["label"], dtype=bool)
    sp = np.asarray(table["split"]).astype(str)
    val = sp == "val"
    cols = {c: np.asarray(scores[c], dtype=float) for c in METHOD_COLUMNS[method]}
    if method == "prod":
        cols = {"cnn_prob": scores["cnn_prob"], "mf_snr": scores["mf_snr"],
                "rank_product": prod_score(scores["cnn_prob"], scores["mf_snr"], groups=sp)}
    single = {"mf": "mf_snr", "cnn": "cnn_prob", "prod": "rank_product"}
    if method in single:
        col = single[method]
        if thresholds:
            if len(thresholds) != 1:
                raise InputError(None, f"--threshold: method {method} takes one threshold")
            t = {col: float(thresholds[0])}
        else:
            t = {col: float(f1_curve(cols[col][val], labels[val]).best().threshold)}
        decision = cols[col] >= t[col]
    else:
        if thresholds:
            if len(thresholds) != 2:
                raise InputError(None, f"--threshold: method {method} takes two thresholds (CNN, then MF S/N)")
            t_cnn, t_mf = (float(v) for v in thresholds)
        else:
            g = two_score_grid(cols["cnn_prob"][val], cols["mf_snr"][val], labels[val], rule=method)
            t_cnn, t_mf = (float(v) for v in g.best()[:2])
        t = {"cnn_prob": t_cnn, "mf_snr": t_mf}
        predict = and_predict if method == "and" else or_predict
        decision = predict(cols["cnn_prob"], cols["mf_snr"], t_cnn, t_mf)
    keep = np.ones(len(table), bool) if split is None else sp == split
    halo = None
    if "halo_id" in table.colnames:
        halo = {k: np.asarray(table[k])[keep] for k in ("halo_id", "m_vir", "z") if k in table.colnames}
    cat = build_catalog(np.asarray(table["ra"])[keep], np.asarray(table["dec"])[keep],
                        {k: v[keep] for k, v in cols.items()}, decision[keep], halo=halo, method=method,
                        thresholds=t, provenance={"workspace": str(ws.root), "split": split or "all",
                                                  "threshold_source": "given" if thresholds else "validation F1"})
    cat["cutout_id"] = np.asarray(table["id"])[keep][np.asarray(decision[keep])]
    write_catalog(cat, out, format=fmt, overwrite=overwrite)
    if regions is not None:
        score_col = {"mf": "mf_snr", "cnn": "cnn_prob"}.get(method, "cnn_prob")
        write_ds9_regions(regions, cat, score=score_col, overwrite=overwrite)
    return {"rows": len(cat), "thresholds": t}
