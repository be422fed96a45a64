"""Benchmark of the evaluation engine (szviewer.evaluate) at the paper's scale, 808,201 cutouts.

Targets (issue 4): F1 curve <= 0.5 s, one threshold change via ``counts_at`` <= 1 ms, AND heat map at
200 x 200 <= 1 s. Reference timings in the same process: sklearn's ``precision_recall_curve`` and
``roc_auc_score`` on the same data, a direct numpy recount per threshold, and a brute-force AND grid
(extrapolated from a sample of cells).

Run: ``python benchmarks/bench_evaluate.py [n]``; ``python benchmarks/bench_evaluate.py --objects WS [WS ...]``
prints the object-level table (candidates matched one-to-one to halos within 1', thresholds on val, counts on
test), the learned ensemble beside PROD and AND, the Arnaud mass scatter and the wall time of each workspace.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from timing import best_time

from szviewer.evaluate.curves import confusion, f1_curve, roc_curve
from szviewer.evaluate.ensembles import and_grid, and_predict, prod_score
from szviewer.evaluate.table1 import table1

N_PAPER = 808_201


def synthetic_scores(n: int = N_PAPER, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Scores shaped like the paper's (Fig. 5): ~1.9% positives, CNN probabilities piled at 0, MF S/N NaN
    (no detection) for most cutouts; split by RA as in SCIENCE.md section 2."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.0185
    cnn = np.where(y, rng.beta(1.5, 1.5, n), rng.beta(0.2, 30, n))
    mf = np.where(y, rng.normal(9, 5, n), rng.normal(0, 1.6, n))
    mf[mf < 3] = np.nan
    ra_frac = rng.random(n)
    split = np.where(ra_frac < 0.13, "test", np.where(ra_frac < 0.2, "val", "train"))
    return {"cnn_prob": cnn, "mf_snr": mf}, y, split




def run(n: int = N_PAPER, seed: int = 0) -> list[dict]:
    """Time each operation; rows of name, seconds, throughput (items/s), target_s, ref (name), ratio."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score

    cols, y, split = synthetic_scores(n, seed)
    cnn, mf = cols["cnn_prob"], cols["mf_snr"]
    rows: list[dict] = []

    def add(name, seconds, items, unit, target=None, ref=None, ref_seconds=None):
        rows.append(
            {
                "name": name,
                "seconds": seconds,
                "throughput": items / seconds if seconds > 0 else np.inf,
                "unit": unit,
                "target_s": target,
                "ref": ref,
                "ratio": (ref_seconds / seconds) if ref_seconds else None,
            }
        )

    t_sk = best_time(lambda: precision_recall_curve(y, cnn, drop_intermediate=False))
    add("sklearn precision_recall_curve (reference)", t_sk, n, "cutouts/s")
    t_f1 = best_time(lambda: f1_curve(cnn, y))
    add(f"f1_curve, {n:,} cutouts", t_f1, n, "cutouts/s", 0.5, "sklearn PR curve", t_sk)
    t_mf = best_time(lambda: f1_curve(mf, y))
    add(f"f1_curve on MF S/N ({np.isnan(mf).mean():.0%} NaN)", t_mf, n, "cutouts/s", 0.5)

    curve = f1_curve(cnn, y)
    rng = np.random.default_rng(seed + 1)
    thresholds = rng.random(100_000)
    t0 = time.perf_counter()
    for t in thresholds:
        curve.counts_at(t)
    per_call = (time.perf_counter() - t0) / thresholds.size
    n_direct = 20
    t0 = time.perf_counter()
    for t in thresholds[:n_direct]:
        confusion(cnn >= t, y)
    direct = (time.perf_counter() - t0) / n_direct
    add("direct numpy recount per threshold (reference)", direct, 1, "calls/s")
    add("counts_at, one threshold change", per_call, 1, "calls/s", 1e-3, "direct recount", direct)

    t_auc_sk = best_time(lambda: roc_auc_score(y, cnn))
    add("sklearn roc_auc_score (reference)", t_auc_sk, n, "cutouts/s")
    t_roc = best_time(lambda: roc_curve(cnn, y))
    add("roc_curve + AUC", t_roc, n, "cutouts/s", None, "sklearn roc_auc_score", t_auc_sk)

    t_prod = best_time(lambda: prod_score(cnn, mf, split))
    add("prod_score (ranks within each split)", t_prod, n, "cutouts/s")

    t_and = best_time(lambda: and_grid(cnn, mf, y, levels=200))
    g = and_grid(cnn, mf, y, levels=200)
    cells = g.tp.size
    sample = [(k, l) for k in range(0, g.t_a.size, 40) for l in range(0, g.t_b.size, 40)][:20]
    t0 = time.perf_counter()
    for k, l in sample:
        confusion(and_predict(cnn, mf, g.t_a[k], g.t_b[l]), y)
    brute = (time.perf_counter() - t0) / len(sample) * cells
    add(f"brute-force AND grid, {cells} cells (extrapolated, reference)", brute, cells, "cells/s")
    add(f"and_grid {g.t_a.size}x{g.t_b.size}", t_and, cells, "cells/s", 1.0, "brute force", brute)

    t_tab = best_time(lambda: table1(cols, y, split), repeat=1)
    add("table1, all 5 methods (val -> test)", t_tab, n, "cutouts/s")
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'operation':<62} {'time':>11} {'throughput':>22} {'target':>9} {'speed-up vs ref':>22}"
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["seconds"]
        t = f"{s * 1e6:.2f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
        tp = f"{r['throughput']:.3g} {r['unit']}"
        tgt = ""
        if r["target_s"] is not None:
            ok = "ok" if s <= r["target_s"] else "MISS"
            tgt = f"{r['target_s'] * 1e3:g}ms {ok}"
        ratio = f"{r['ratio']:.3g}x ({r['ref']})" if r["ratio"] else ""
        lines.append(f"{r['name']:<62} {t:>11} {tp:>22} {tgt:>9} {ratio:>22}")
    return "\n".join(lines)


def objects_report(path: str) -> str:
    """The object-level evaluation of one workspace (szviewer.jobs.catalogue / szviewer.evaluate.objects)."""
    from szviewer.evaluate import objects
    from szviewer.evaluate.mass import mass_scatter
    from szviewer.jobs.catalogue import load_objects
    from szviewer.workspace import Workspace

    t0 = time.perf_counter()
    o = load_objects(Workspace(path))
    t_load = time.perf_counter() - t0
    res = objects.evaluate_objects(o.cands, o.halos, o.of_halo)
    m = np.asarray(o.cands["matched"], bool)
    ms = mass_scatter(np.asarray(o.cands["m500_arnaud"])[m], np.asarray(o.cands["halo_m500"])[m])
    src = {s: int((np.asarray(o.cands["source"]) == s).sum()) for s in ("MF", "CNN", "MF+CNN")}
    return (f"{path}: {len(o.cands)} candidates {src}, {len(o.halos)} qualifying halos; load + learned fit "
            f"{t_load:.1f} s\n" + objects.format_objects(res)
            + f"\nAUC (test candidates): {objects.object_auc(o.cands)}"
            + f"\nArnaud M500 vs truth ({ms['n']} matched): bias {ms['bias_dex']:+.3f} dex, "
              f"scatter {ms['scatter_dex']:.3f} dex")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--objects":
        for ws in sys.argv[2:]:
            print(objects_report(ws))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else N_PAPER
        print(format_rows(run(n)))
