"""Reproduce the shipped CNN model ``models/deepsz_synthetic.pt`` with one command (paper section 2.2).

    python scripts/train_shipped_model.py [--work /tmp/szviewer-shipped] [--area 1000] [--seed 1] [--instrument NAME]
                                          [--eval-seed 2] [--eval-area 300] [--out models/deepsz_synthetic.pt]
                                          [--preset long] [--batch B] [--ratios 1,2,4] [--max-batches-per-ratio N]
                                          [--max-seconds S] [--resume] [--edge-only] [--no-edge]
                                          [--label-mass {vir,200c,500c,200m}] [--label-min MSUN]
                                          [--init-from MODEL] [--device {auto,cpu,cuda}] [--no-eval | --eval-only]

1. simulates a synthetic sky with the default generator (``--area`` deg^2, ``--seed``, ``--instrument``: a model
   for another preset, e.g. ``--instrument act-dr6 --out models/deepsz_act-dr6.pt``) and cuts it with the paper's
   label rule or ``--label-mass`` / ``--label-min`` (a sky already cut with another rule is re-cut);
2. trains with the ``--preset`` (default 'long'; ``szviewer.jobs.cnn.train_job``), from the weights of
   ``--init-from`` if given (the act-dr6 model: ``--init-from models/deepsz_synthetic.pt --preset finetune``),
   Platt-calibrates on its validation split and measures validation/test F1 on it;
3. simulates an independent sky (``--eval-seed``), scores all its cutouts and records F1 (at the training sky's
   validation threshold, and the best F1) and AUC there in the model card;
4. writes the model (float16 weights) to ``--out`` and a JSON summary beside it;
5. scores the independent sky densely (2' stride, :func:`szviewer.jobs.dense.dense_job`) and records in the card
   the mean score vs the halo's offset from the cutout centre for grid and dense scoring (the edge effect,
   paper section 3.4.2). ``--edge-only`` redoes just this step for the model at ``--out``; ``--no-edge`` skips
   it (a 'detrend' model is scored window by window, ~10 min for 300 deg^2 at 0.5').

Takes about an hour on 2 CPU cores (44 minutes of it training; simulating and cutting the two skies ~6 minutes).
``--resume`` continues an interrupted training. On a GPU: ``--device cuda --no-eval`` trains there and skips the
independent sky (which needs no GPU); ``--eval-only`` scores it later with the model at ``--out``, anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from szviewer.cnn.settings import PRESETS  # torch-free

ROOT = Path(__file__).resolve().parents[1]


def make_sky(path: Path, area: float, seed: int, instrument: str = "spt3g-paper", labels=None) -> None:
    """Simulate and cut a sky (``labels``: a LabelSettings, default the paper's rule), or reuse it when cut with
    the same label rule."""
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    labels = labels or LabelSettings()
    if (path / "workspace.json").is_file() and Workspace(path).has("cutouts"):
        with Workspace(path).cutout_store() as st:
            rule = st.table.meta.get("label_settings", {})
        if rule.get("mass_def") == labels.mass_def and rule.get("mass_min_msun") == labels.mass_min_msun \
                and rule.get("z_min") == labels.z_min:
            print(f"reusing {path}", flush=True)
            return
        make_cutouts(Workspace(path), CutoutSettings(labels=labels), overwrite=True)
        return
    simulate_workspace(path, SimulationSettings(area_deg2=area, seed=seed, instrument=instrument), overwrite=True)
    make_cutouts(Workspace(path), CutoutSettings(labels=labels), overwrite=True)


def other_sky_metrics(ws_path: Path, model, threshold: float) -> dict:
    import numpy as np

    from szviewer.cnn.predict import predict
    from szviewer.evaluate.curves import f1_curve, roc_curve
    from szviewer.workspace import Workspace

    with Workspace(ws_path).cutout_store() as store:
        out = predict(store, model)
        labels = np.asarray(store.table["label"], dtype=bool)
        split = np.asarray(store.table["split"])
    res = {}
    for name, sel in (("all", np.ones(labels.size, bool)), ("val", split == "val"), ("test", split == "test")):
        c = f1_curve(out["cnn_prob"][sel], labels[sel])
        at = c.counts_at(threshold)
        res[name] = {"cutouts": int(sel.sum()), "positives": int(labels[sel].sum()),
                     "f1_at_val_threshold": float(at.f1), "purity": float(at.purity),
                     "completeness": float(at.completeness), "best_f1": float(c.best().f1),
                     "auc": float(roc_curve(out["cnn_prob"][sel], labels[sel]).auc)}
    return res


def measure_edge(eval_ws: Path, model_path: Path) -> dict:
    """Score the independent sky on the DeepSZ grid and densely (2' stride); the edge effect of both (Fig. 9c)."""
    from szviewer.jobs.cnn import predict_job
    from szviewer.jobs.dense import dense_job
    from szviewer.workspace import Workspace

    ws = Workspace(eval_ws)
    pred = predict_job(ws, model_path=model_path, device="cpu", overwrite=True)
    dense = dense_job(ws, model_path=model_path, stride_arcmin=2.0, threshold=0.5, device="cpu", overwrite=True,
                      method="windowed")
    return {"grid_scoring": {k: pred[k] for k in ("cutouts_per_s", "val_best_f1", "test_best_f1") if k in pred},
            "dense": {k: dense[k] for k in ("stride_arcmin", "threshold", "candidates", "seconds")},
            "edge_effect": dense.get("edge_effect")}


def add_to_card(path: Path, extra: dict) -> None:
    from szviewer.cnn.modelfile import load_model, save_model

    model = load_model(path)
    card = dict(model.card)
    card.update(card_safe(extra))
    save_model(path, model.net, model.platt, card)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/szviewer-shipped"))
    ap.add_argument("--area", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-area", type=float, default=300.0)
    ap.add_argument("--eval-seed", type=int, default=2)
    ap.add_argument("--train-seed", type=int, default=0, help="seed of the network initialisation and sampler")
    ap.add_argument("--instrument", default="spt3g-paper",
                    help="instrument preset of both skies (a model for another preset: --out models/deepsz_NAME.pt)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "deepsz_synthetic.pt")
    ap.add_argument("--preset", default="long", choices=list(PRESETS))
    ap.add_argument("--init-from", type=Path, help="start from this model's weights (fine-tuning)")
    ap.add_argument("--no-edge", action="store_true", help="skip the dense edge-effect measurement")
    ap.add_argument("--label-mass", default=None, metavar="{vir,200c,500c,200m}",
                    help="mass definition of the label rule of both skies (default vir, the paper's)")
    ap.add_argument("--label-min", type=float, default=None, metavar="MSUN", help="label mass threshold (2e14)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--batch", type=int, help="override the preset's batch size")
    ap.add_argument("--ratios", help="override the preset's ratios, e.g. 1,2,4")
    ap.add_argument("--max-batches-per-ratio", type=int, help="override the preset's cap of batches per ratio")
    ap.add_argument("--max-seconds", type=float, help="training time budget: stop after the ratio that exceeds it")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                    help="where to train (cpu by default, so the shipped models reproduce anywhere; cuda on a GPU)")
    ap.add_argument("--no-eval", action="store_true",
                    help="skip the independent sky (steps 3 and 5); score it later with --eval-only")
    ap.add_argument("--eval-only", action="store_true",
                    help="only (re)score the independent sky with the model at --out and update its card")
    ap.add_argument("--edge-only", action="store_true",
                    help="only (re)measure the edge effect of the model at --out on the evaluation sky")
    a = ap.parse_args(argv)

    from szviewer.cnn.modelfile import load_model, save_model
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.jobs.cnn import train_job
    from szviewer.progress import TqdmProgress
    from szviewer.workspace import Workspace

    try:
        labels = LabelSettings.from_options(a.label_mass, a.label_min, None)
    except ValueError as exc:
        ap.error(str(exc))  # one line and exit 2, before any sky is touched
    t0 = time.perf_counter()
    tag = "" if a.instrument == "spt3g-paper" else f"{a.instrument}_"
    train_ws = a.work / f"train_{tag}{a.area:g}deg2_seed{a.seed}"
    eval_ws = a.work / f"eval_{tag}{a.eval_area:g}deg2_seed{a.eval_seed}"
    if a.edge_only:
        make_sky(eval_ws, a.eval_area, a.eval_seed, a.instrument, labels)
        edge = measure_edge(eval_ws, a.out)
        add_to_card(a.out, {"edge_effect_other_sky": edge})
        print(json.dumps(edge, indent=1, default=str))
        return 0
    if a.eval_only:
        model = load_model(a.out)
        threshold = (model.card.get("metrics_same_sky") or {}).get("val_threshold")
        if threshold is None:
            ap.error(f"{a.out}: the model card has no validation threshold (metrics_same_sky.val_threshold)")
        evaluate_other_sky(a, eval_ws, labels, model, threshold, argv)
        return 0
    make_sky(train_ws, a.area, a.seed, a.instrument, labels)
    print(f"training sky ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    last = [0.0]

    def progress(done, total, msg):
        now = time.perf_counter()
        if now - last[0] > 30:
            last[0] = now
            print(f"[{now - t0:7.0f} s] {done}/{total} {msg}", flush=True)

    overrides = {}
    if a.batch:
        overrides["batch"] = a.batch
    if a.ratios:
        overrides["ratios"] = tuple(int(r) for r in a.ratios.split(","))
    if a.max_batches_per_ratio:
        overrides["max_batches_per_ratio"] = a.max_batches_per_ratio
    if a.max_seconds:
        overrides["max_seconds"] = a.max_seconds
    summary = train_job(Workspace(train_ws), preset=a.preset, device=a.device, resume=a.resume, seed=a.train_seed,
                        overrides=overrides, overwrite=not a.resume,  # the scratch workspace's last model goes
                        init_from=a.init_from,
                        progress=progress if not sys.stderr.isatty() else TqdmProgress("train"))
    print(json.dumps(summary, indent=1), flush=True)

    model = load_model(summary["model"])
    card = dict(model.card)
    card["reproduce"] = reproduce_line(argv)
    card.pop("workspace", None)
    save_model(a.out, model.net, model.platt, card)
    other = edge = None
    if not a.no_eval:
        other = evaluate_other_sky(a, eval_ws, labels, model, summary["val_threshold"], argv)
    if not (a.no_edge or a.no_eval):
        edge = measure_edge(eval_ws, a.out)
        add_to_card(a.out, {"edge_effect_other_sky": edge})
    total = time.perf_counter() - t0
    out = {"model": str(a.out), "bytes": a.out.stat().st_size, "seconds": round(total, 1), "train": summary,
           "other_sky": other, "edge_effect_other_sky": edge}
    (a.out.parent / (a.out.stem + ".summary.json")).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out, indent=1, default=str))
    return 0


def reproduce_line(argv) -> str:
    return " ".join(["python scripts/train_shipped_model.py"] + list(sys.argv[1:] if argv is None else argv))


def evaluate_other_sky(a, eval_ws: Path, labels, model, threshold: float, argv) -> dict:
    """Step 3: simulate the independent sky, score it with ``model`` and record the scores in the card at
    ``a.out``."""
    from szviewer.cnn.modelfile import save_model

    make_sky(eval_ws, a.eval_area, a.eval_seed, a.instrument, labels)
    other = other_sky_metrics(eval_ws, model, threshold)
    card = dict(model.card)
    card["other_sky"] = {"area_deg2": a.eval_area, "seed": a.eval_seed, "generator": "szviewer.sky.synthetic",
                         "instrument": a.instrument, "threshold": threshold, "metrics": card_safe(other)}
    card["other_sky_f1"] = other["all"]["f1_at_val_threshold"]
    card.pop("workspace", None)
    save_model(a.out, model.net, model.platt, card)
    print(json.dumps({"other_sky": other}, indent=1), flush=True)
    return other


def card_safe(obj):
    return json.loads(json.dumps(obj, default=float).replace("NaN", "null"))


if __name__ == "__main__":
    raise SystemExit(main())
