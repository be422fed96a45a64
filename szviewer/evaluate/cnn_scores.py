"""Evaluation of CNN scores: a model's validation and test F1 (paper section 3.2) and the edge effect of the
DeepSZ grid against dense scoring (section 3.4.2, Fig. 9c). torch is imported only inside the functions."""

from __future__ import annotations

import numpy as np

from szviewer.progress import CancelFn, ProgressFn


def best_f1(scores, labels) -> float:
    """The F1-maximising threshold's F1 (paper section 3.2); 0 when undefined."""
    from szviewer.evaluate.curves import f1_curve

    f1 = f1_curve(scores, labels).best().f1
    return float(f1) if f1 == f1 else 0.0


def evaluate_model(store, model, level: str = "all", progress: ProgressFn | None = None,
                   cancelled: CancelFn | None = None) -> dict:
    """Score the store's 'val' and 'test' rows: validation F1 and threshold, test F1 at it, best test F1, AUCs.

    The threshold is the one maximising F1 on the validation set, then applied to the test set (paper 3.2).
    """
    from szviewer.cnn.predict import predict
    from szviewer.evaluate import policy
    from szviewer.evaluate.curves import f1_curve, roc_curve

    t = store.table
    split = np.asarray(t["split"])
    labels = np.asarray(t["label"], dtype=bool)
    out: dict = {}
    rows = np.nonzero(np.isin(split, ("val", "test")))[0]
    prob = np.full(len(t), np.nan)
    prob[rows] = predict(store, model, level=level, rows=rows, progress=progress, cancelled=cancelled)["cnn_prob"]
    best = policy.choose("CNN", {"cnn_prob": prob}, labels, split)  # the one evaluation policy (paper 3.2)
    threshold = best.thresholds["cnn_prob"]
    out["val_f1"] = float(best.fit_f1)
    out["val_threshold"] = float(threshold)
    out["val_positives"] = int(labels[split == "val"].sum())
    out["val_cutouts"] = int((split == "val").sum())
    tc = f1_curve(prob[split == "test"], labels[split == "test"])
    c = tc.counts_at(threshold)
    out["test_f1"] = float(c.f1) if c.f1 == c.f1 else 0.0
    out["test_counts"] = {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn}
    out["test_best_f1"] = float(tc.best().f1)
    out["test_positives"] = int(labels[split == "test"].sum())
    out["test_cutouts"] = int((split == "test").sum())
    for name in ("val", "test"):
        sel = split == name
        if labels[sel].any() and (~labels[sel]).any():
            out[f"{name}_auc"] = float(roc_curve(prob[sel], labels[sel]).auc)
    return out


def edge_effect(table, scores: dict, bins=(0.0, 1.0, 2.0, 3.0, 4.25)) -> dict:
    """Mean score vs the halo's offset from the cutout centre over positive cutouts (paper Fig. 9c).

    Uses :func:`szviewer.evaluate.science.score_vs_offset`. Offsets run from 0 to 3 sqrt(2) = 4.24' (corner of the
    central 6' cell). Returns per score {bin edges, counts, means, sems, the drop (mean in the last bin over the
    first; 1 = no edge effect), best F1 and AUC over all cutouts, and per bin the completeness at the best-F1
    threshold}.
    """
    from szviewer.evaluate.curves import f1_curve, roc_curve
    from szviewer.evaluate.science import score_vs_offset

    pos = np.asarray(table["label"], dtype=bool)
    off = np.asarray(table["offset_arcmin"], dtype=float)
    out = {}
    valid = pos.copy()
    for v in scores.values():
        valid &= np.isfinite(np.asarray(v, dtype=float))
    res = score_vs_offset(off, scores, np.asarray(bins), mask=valid)
    for name, bm in res.items():
        means = [float(m) for m in bm.mean]
        out[name] = {"edges": [float(e) for e in bm.edges], "count": [int(c) for c in bm.n], "mean": means,
                     "sem": [float(s) for s in bm.sem],
                     "last_over_first": means[-1] / means[0] if means[0] and means[0] == means[0] else None}
        v = np.asarray(scores[name], dtype=float)
        best = f1_curve(v, pos).best()
        edges = out[name]["edges"]
        out[name].update({
            "best_f1": float(best.f1), "best_threshold": float(best.threshold),
            "auc": float(roc_curve(v, pos).auc),
            "completeness_at_best_threshold": [
                float(np.mean(v[valid & (off >= lo) & (off < hi)] >= best.threshold))
                if np.any(valid & (off >= lo) & (off < hi)) else None
                for lo, hi in zip(edges[:-1], edges[1:], strict=True)],
        })
    out["positives"] = int(valid.sum())
    return out
