"""A self-contained HTML evaluation report (figures embedded as base64 PNG), written atomically.

:func:`render_report` builds the HTML from Table 1 rows, figures and notes; :func:`write_report` writes it;
:func:`evaluation_report` computes the paper's section 3 evaluation from score columns and writes it all.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from szviewer.atomic import atomic_write_text

from .table1 import Table1Row, format_table1

__all__ = ["render_report", "write_report", "evaluation_report"]

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"""


def _num(x, digits: int = 3) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return "nan" if x != x else f"{x:.{digits}g}" if abs(x) >= 1e4 else f"{x:.{digits}f}"


def _rows_html(rows: Sequence[Table1Row]) -> str:
    head = ["method", "thresholds (val)", "TP", "FP", "FN", "TN", "purity", "completeness", "F1", "val F1"]
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        thr = ", ".join(f"{k} &ge; {_num(v, 4)}" for k, v in r.thresholds.items())
        cells = [
            html.escape(r.method),
            thr,
            r.tp,
            r.fp,
            r.fn,
            r.tn,
            _num(r.purity),
            _num(r.completeness),
            _num(r.f1),
            _num(r.fit_f1),
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _objects_html(objects: Mapping) -> str:
    """The object-level table: one-to-one matches to qualifying halos within 1', thresholds on val, test counts."""
    head = ["method", "thresholds (val)", "TP", "FP", "FN", "purity", "completeness", "F1", "val F1", "AUC"]
    auc = objects.get("auc_test", {})
    out = ["<h2>Objects: candidates matched one-to-one to qualifying halos within 1&prime; "
           "(thresholds on the validation region, counts on the test region)</h2>",
           "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, r in objects["methods"].items():
        thr = ", ".join(f"{k} &ge; {_num(v, 4)}" for k, v in r["thresholds"].items())
        cells = [html.escape(name), thr, r["tp"], r["fp"], r["fn"], _num(r["purity"]), _num(r["completeness"]),
                 _num(r["f1"]), _num(r["fit_f1"]), _num(auc[name]) if name in auc else ""]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_report(
    *,
    title: str = "szviewer evaluation",
    rows: Sequence[Table1Row] = (),
    figures: Mapping[str, bytes] | None = None,
    notes: Sequence[str] = (),
    provenance: Mapping | None = None,
    objects: Mapping | None = None,
) -> str:
    """HTML text: title, notes, Table 1 (table and text), the object-level table (``objects``: the evaluate
    job's ``result['objects']``), figures (caption -> PNG bytes), provenance."""
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p>Generated {stamp}.</p>")
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    if rows:
        parts.append("<h2>Table 1: thresholds chosen on validation, counts on test</h2>")
        parts.append(_rows_html(rows))
        parts.append(f"<pre>{html.escape(format_table1(rows, style='paper'))}</pre>")
    if objects and objects.get("methods"):
        parts.append(_objects_html(objects))
    for caption, png in (figures or {}).items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if provenance:
        text = json.dumps(provenance, indent=2, sort_keys=True, default=str)
        parts.append(f"<h2>Provenance</h2><pre>{html.escape(text)}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(path: str | os.PathLike, *, overwrite: bool = False, **kwargs) -> Path:
    """Write :func:`render_report` (same keyword arguments) to ``path`` atomically."""
    return atomic_write_text(path, render_report(**kwargs), overwrite=overwrite)


def _science_figures(figs: dict, halo: Mapping, found: Mapping, scores: Mapping, sel, y, test) -> None:
    """Paper Figs. 12 and 9c and the 'found by one method only' counts, for whatever halo columns exist."""
    from . import figures as F
    from .science import angular_radius_arcmin, exclusive_finds, score_vs_offset, tp_fraction_maps

    m = np.asarray(halo["m_vir"], dtype=float).ravel()
    props = {}
    if "z" in halo:
        props["z"] = np.asarray(halo["z"], dtype=float).ravel()
    if "r_vir" in halo:
        props["r_vir"] = np.asarray(halo["r_vir"], dtype=float).ravel()
        if "z" in halo:
            ok = np.isfinite(props["r_vir"]) & np.isfinite(props["z"]) & (props["z"] > 0)
            theta = np.full(m.size, np.nan)
            theta[ok] = angular_radius_arcmin(props["r_vir"][ok], props["z"][ok])
            props["theta_vir"] = theta
    labels = {"z": "z", "r_vir": "R_vir [Mpc]", "theta_vir": "angular R_vir [arcmin]"}
    if props and sel.sum() >= 10:
        maps = tp_fraction_maps(m, found, mask=sel, bins=8, **props)
        for prop, lab in labels.items():
            per = {name: d[prop] for name, d in maps.items() if prop in d}
            if per:
                figs[f"True-positive fraction over (M_vir, {lab}), test positives (paper Fig. 12)"] = (
                    F.tp_fraction_figure(per, ylabel=lab)
                )
    if "offset_arcmin" in halo and sel.any():
        off = np.asarray(halo["offset_arcmin"], dtype=float).ravel()
        res = score_vs_offset(off, {k: v for k, v in scores.items() if k != "PROD"}, bins=8, mask=sel)
        figs["Score vs offset of the cluster from the cutout centre, test positives (paper Fig. 9c)"] = (
            F.binned_mean_figure(res)
        )
    if "CNN" in found and "MF" in found:
        cnn_only, mf_only = exclusive_finds(found["CNN"] & test, found["MF"] & test, labels=y)
        figs.setdefault("_notes", [])
        figs["_notes"].append(f"test clusters found by the CNN only: {int(cnn_only.sum())}; "
                              f"by the MF only: {int(mf_only.sum())} (at the validation thresholds)")


def evaluation_report(
    path: str | os.PathLike,
    columns: Mapping[str, np.ndarray],
    labels,
    split,
    *,
    mf: str = "mf_snr",
    cnn: str = "cnn_prob",
    halo: Mapping[str, np.ndarray] | None = None,
    provenance: Mapping | None = None,
    levels: int = 200,
    overwrite: bool = False,
    png_dir: str | os.PathLike | None = None,
    objects: Mapping | None = None,
    extra_figures: Mapping[str, bytes] | None = None,
) -> Path:
    """Compute Table 1 and the paper's section 3 figures from score columns and write the HTML report.

    With ``png_dir``, each figure is also written there as a PNG file (atomically). ``extra_figures`` ({title: PNG
    bytes}, e.g. the MF selection function of :mod:`szviewer.evaluate.selection_figures`) are appended.

    Figures: F1 vs threshold on validation (Fig. 5, plus PROD), AND heat map on validation (Fig. 6b), ROC on
    test (Fig. 8b), and, if ``halo`` holds ``m_vir`` (and ``z``) per cutout (NaN where none), completeness
    of each method on the test positives vs mass and redshift (Figs. 10-11).
    """
    from . import figures as F
    from .curves import f1_curve, roc_curve
    from .ensembles import and_grid, and_predict, or_predict, prod_score
    from .science import completeness_by_method
    from .table1 import table1

    y = np.asarray(labels).ravel().astype(bool)
    sp = np.asarray(split).ravel().astype(str)
    rows = table1(columns, y, sp, mf=mf, cnn=cnn, levels=levels)
    val, test = sp == "val", sp == "test"
    scores = {
        name: np.asarray(columns[col], dtype=float).ravel()
        for name, col in (("MF", mf), ("CNN", cnn))
        if col in columns
    }
    if len(scores) == 2:
        scores["PROD"] = prod_score(scores["CNN"], scores["MF"], groups=sp)
    figs: dict[str, bytes] = {}
    if scores and val.any():
        curves = {name: f1_curve(s[val], y[val]) for name, s in scores.items()}
        figs["F1 vs threshold on the validation split (paper Fig. 5, 6a)"] = F.f1_threshold_figure(curves)
    if "PROD" in scores and val.any():
        g = and_grid(scores["CNN"][val], scores["MF"][val], y[val], levels=levels)
        figs["EnsembleAND F1 on the validation split (paper Fig. 6b)"] = F.and_heatmap_figure(g)
    if scores and test.any():
        figs["ROC on the test split (paper Fig. 8b)"] = F.roc_figure(
            {name: roc_curve(s[test], y[test]) for name, s in scores.items()}
        )
    if halo is not None and "m_vir" in halo and rows and test.any():
        found = {}
        for r in rows:
            if r.method in ("MF", "CNN", "PROD"):
                col = next(iter(r.thresholds))
                s = scores[r.method]
                found[r.method] = s >= r.thresholds[col]
            elif r.method in ("AND", "OR"):
                pred = and_predict if r.method == "AND" else or_predict
                found[r.method] = pred(scores["CNN"], scores["MF"], r.thresholds[cnn], r.thresholds[mf])
        sel = test & y
        m = np.asarray(halo["m_vir"], dtype=float).ravel()
        res = completeness_by_method(m, found, 12, log=True, mask=sel)
        figs["Completeness vs M_vir, test positives (paper Fig. 10)"] = F.completeness_figure(res)
        if "z" in halo:
            z = np.asarray(halo["z"], dtype=float).ravel()
            res = completeness_by_method(z, found, 12, mask=sel)
            figs["Completeness vs z, test positives (paper Fig. 11)"] = F.completeness_figure(
                res, xlabel="z", log_x=False
            )
        _science_figures(figs, halo, found, scores, sel, y, test)
    level_order = ("cmb_tsz", "ksz", "ir", "radio")
    level_cols = {f"cnn_prob_{lv}": np.asarray(columns[f"cnn_prob_{lv}"], dtype=float).ravel()
                  for lv in level_order if f"cnn_prob_{lv}" in columns}
    if level_cols and val.any() and test.any():
        from .science import per_level_summary

        if cnn in columns:
            level_cols["cnn_prob_all"] = np.asarray(columns[cnn], dtype=float).ravel()
        per_level = per_level_summary(level_cols, y, val, test)
        figs["ROC of the CNN per component level, test split (paper Fig. 8)"] = F.roc_figure(
            {lv: roc_curve(v[test], y[test]) for lv, v in zip(per_level, level_cols.values(), strict=True)}
        )
        figs.setdefault("_notes", []).append(
            "CNN per component level (threshold from validation, test F1 / AUC): "
            + "; ".join(f"{lv} {d['test_f1']:.3f} / {d['test_auc']:.3f}" for lv, d in per_level.items())
        )
    extra_notes = figs.pop("_notes", [])
    figs.update(extra_figures or {})  # e.g. the MF selection function by injection
    if png_dir is not None:
        import re

        from szviewer.atomic import atomic_write_bytes

        Path(png_dir).mkdir(parents=True, exist_ok=True)
        for title, png in figs.items():
            slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:60]
            atomic_write_bytes(Path(png_dir) / f"{slug}.png", png, overwrite=True)
    notes = [
        f"{y.size} cutouts: "
        + ", ".join(
            f"{s} {int((sp == s).sum())} ({int((y & (sp == s)).sum())} positive)"
            for s in ("train", "val", "test")
        )
    ] + extra_notes
    return write_report(
        path, rows=rows, figures=figs, notes=notes, provenance=provenance, overwrite=overwrite, objects=objects
    )
