"""Object-level science on skies the project never used (issue 13: object F1 >= 0.75, LEARNED >= best of PROD/AND).

Each sky is a 400 deg^2 ``spt3g-paper`` synthetic sky of its own seed, built through the job functions the CLI
uses (simulate, cutouts, MF, CNN per cutout, fully convolutional CNN at 1', CNN mass head; 4.5-6 min per sky
on 2 cores), or reused from ``--root`` where a previous run left it. Per sky and method: the object-level F1 on
the test region with thresholds chosen on validation (:func:`szviewer.evaluate.objects.evaluate_objects`, what
``szviewer evaluate`` prints), its ratio to the MF's on the same sky (the reference row), and beside it

* the **ceiling**: the F1 of the same method with its thresholds chosen on the test region itself (the one policy's
  search, :func:`szviewer.evaluate.policy.search`, at the curve's highest point for every method): what the scores
  allow at best, whatever the validation noise;
* the **false positives' census**: of the test false positives at the validation thresholds, how many lie within
  1' of a real halo that fails the label rule by mass (or by redshift), i.e. clusters the rule calls negative.

Then the mean and its standard error over the skies, and the CNN mass head's test scatter. Run
``python benchmarks/bench_objects.py --root DIR --seeds 11 12 13 14 15`` (keep DIR to reuse the skies) or
``python benchmarks/run.py objects`` (seeds 11-15 in a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SEEDS = (11, 12, 13, 14, 15)
METHODS = ("MF", "CNN", "AND", "PROD", "OR", "LEARNED")


def build(path: Path, seed: int, area_deg2: float = 400.0) -> Path:
    """The sky of ``seed`` with every product the object catalogue reads (the steps already done are skipped)."""
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cnn import predict_job
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.dense import dense_job
    from szviewer.jobs.mass import mass_job
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    if not (path / "workspace.json").is_file():
        simulate_workspace(path, SimulationSettings(seed=seed, area_deg2=area_deg2))
    ws = Workspace(path)
    steps = (("cutouts", lambda: make_cutouts(ws, CutoutSettings())), ("mf", lambda: run_mf_on_workspace(ws)),
             ("cnn", lambda: predict_job(ws, device="cpu")), ("cnn_dense", lambda: dense_job(ws, device="cpu")),
             ("cnn_mass", lambda: mass_job(ws)))
    for product, step in steps:
        if not Workspace(path).has(product):
            step()
    return path


def ceilings(cands, halos, scores: dict) -> dict[str, float]:
    """Per method (``scores``: :func:`szviewer.evaluate.objects.method_object_scores`), the test-region F1 at
    thresholds chosen on the test region itself (the policy's search)."""
    from szviewer.evaluate import policy

    region = np.asarray(cands["region"]).astype(str)
    y = np.asarray(cands["matched"], bool)
    test = region == "test"
    n_halos = int((np.asarray(halos["region"]).astype(str) == "test").sum())
    out = {}
    for method, s in scores.items():
        highest = replace(policy.method_of(method), calibrated=False)  # the curve's highest point, for every method
        choice = policy.search(highest, {k: v[test] for k, v in s.items()}, y[test],
                               n_missed=max(n_halos - int(y[test].sum()), 0))
        out[method] = float(choice.fit_f1)
    return out


def fp_census(cands, pred, halos, rule: dict) -> dict[str, int]:
    """The test false positives among ``pred`` (a method's decisions at its validation thresholds), by the
    nearest of all ``halos`` within 1': below the label mass of ``rule`` (the cutout table's label settings),
    below its redshift, a qualifying halo matched to another candidate (a second detection), or none (noise, a
    source)."""
    from szviewer.evaluate.objects import _near

    fp = pred & ~np.asarray(cands["matched"], bool) & (np.asarray(cands["region"]).astype(str) == "test")
    near, i = _near(np.asarray(cands["ra"], float)[fp], np.asarray(cands["dec"], float)[fp], halos["ra"],
                    halos["dec"], 1.0)
    k = np.minimum(i, len(halos) - 1)
    mass = np.asarray(halos[rule.get("mass_column", "m_vir")], float)[k]
    low_z = near & (np.asarray(halos["z"], float)[k] < float(rule.get("z_min", 0.25)))
    low_m = near & ~low_z & (mass < float(rule.get("mass_min_msun", 2e14)))
    return {"fp": int(fp.sum()), "below_mass": int(low_m.sum()), "below_z": int(low_z.sum()),
            "second": int((near & ~low_z & ~low_m).sum()), "no_halo": int((~near).sum())}


def sky_rows(path: Path, seed: int) -> tuple[list[dict], dict]:
    """The rows of one sky and its per-method F1 and ceilings."""
    from szviewer.evaluate import policy
    from szviewer.evaluate.objects import evaluate_objects, method_object_scores
    from szviewer.jobs.catalogue import load_objects
    from szviewer.workspace import Workspace

    ws = Workspace(path)
    t0 = time.perf_counter()
    oset = load_objects(ws)
    res = evaluate_objects(oset.cands, oset.halos, oset.of_halo)
    sec = time.perf_counter() - t0
    scores = method_object_scores(oset.cands, list(res))
    ceil = ceilings(oset.cands, oset.halos, scores)
    with ws.cutout_store() as st:
        rule = st.table.meta.get("label_settings", {})
    halos = ws.halos()
    ref = res["MF"]["f1"]
    n_halos = res["MF"]["n_halos_apply"]
    rows = []
    for method in (m for m in METHODS if m in res):
        r = res[method]
        census = fp_census(oset.cands, policy.decide(method, scores[method], r["thresholds"]), halos, rule)
        rows.append({"name": f"seed {seed}: {method}{' (reference)' if method == 'MF' else ''}",
                     "seconds": sec if method == "MF" else None, "value": r["f1"], "unit": "object F1 (test)",
                     "target": ">=0.75" if method in ("AND", "PROD", "LEARNED") else "",
                     "ratio_to_ref": r["f1"] / ref if ref else None,
                     "note": f"P {r['purity']:.2f} C {r['completeness']:.2f} of {n_halos} halos; val F1 "
                             f"{r['fit_f1']:.2f}; ceiling {ceil[method]:.2f}; FP {census['fp']}: "
                             f"{census['below_mass']} halos below the label mass, {census['below_z']} below its z, "
                             f"{census['second']} second detections, {census['no_halo']} no halo"})
    mass = ws.products.get("cnn_mass", {}).get("summary", {}).get("test")
    if mass:
        rows.append({"name": f"seed {seed}: CNN mass head, test positives", "value": mass["scatter"],
                     "unit": "dex scatter", "target": "<=0.2",
                     "note": f"n {mass['n']}, bias {mass['bias']:+.3f} dex, robust {mass['robust_scatter']:.3f}"})
    return rows, {m: (res[m]["f1"], ceil[m]) for m in res}


def run(root: str | Path | None = None, seeds=SEEDS, area_deg2: float = 400.0) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench_objects_") as tmp:
        base = Path(root) if root else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        rows, per_sky = [], []
        for seed in seeds:
            t0 = time.perf_counter()
            path = build(base / f"sky{int(area_deg2)}_s{seed}", seed, area_deg2)
            built = time.perf_counter() - t0
            r, f1 = sky_rows(path, seed)
            rows.append({"name": f"seed {seed}: build (or reuse) the sky and its products", "seconds": built,
                         "unit": "", "note": str(path)})
            rows += r
            per_sky.append(f1)
        for method in METHODS:
            got = [s[method] for s in per_sky if method in s]
            if not got:
                continue
            f1 = np.array([g[0] for g in got])
            ceil = np.array([g[1] for g in got])
            err = f1.std(ddof=1) / np.sqrt(f1.size) if f1.size > 1 else float("nan")
            rows.append({"name": f"mean over {f1.size} skies: {method}", "value": float(f1.mean()),
                         "unit": "object F1 (test)", "target": ">=0.75" if method in ("AND", "PROD", "LEARNED") else "",
                         "note": f"+- {err:.3f} (standard error); per sky {', '.join(f'{v:.3f}' for v in f1)}; "
                                 f"ceiling {ceil.mean():.3f}"})
    return rows


if __name__ == "__main__":
    from run import print_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="folder of the skies (kept, and reused by the next run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--area", type=float, default=400.0, help="deg^2 per sky")
    a = ap.parse_args()
    print_table(run(a.root, a.seeds, a.area), "objects")
