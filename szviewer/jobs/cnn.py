"""Jobs: train the DeepSZ CNN on a workspace, and score a workspace's cutouts with a model (paper section 2.2).

torch is never imported at module load: the ``szviewer.cnn`` modules are imported inside the functions.

Files a training run writes in the workspace::

    cnn/checkpoint.pt             the latest training checkpoint (atomic; ``resume=True`` continues from it)
    cnn/train_log.csv             step, ratio, step_in_ratio, lr, loss, val_loss (atomic rewrites)
    cnn_model/gNNNNNN/model.pt    the trained, Platt-calibrated model with its card, and a copy of the log,
                                  committed as the product ``cnn_model`` (``szviewer.workspace``)

``predict_job`` commits the columns ``cnn_prob`` (calibrated) and ``cnn_raw`` (logit difference) as the product
``cnn`` (made from the cutouts and the model: a retrained model or rebuilt cutouts make it stale). Its default
model is the workspace's own trained model when it has one, else the shipped model (:func:`default_model_path`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from szviewer.errors import InputError, OutputExistsError
from szviewer.progress import CancelFn, ProgressFn
from szviewer.workspace import Workspace, now_iso

CNN_DIR = "cnn"
CHECKPOINT = "cnn/checkpoint.pt"
TRAIN_LOG = "cnn/train_log.csv"
SHIPPED_MODEL = "deepsz_synthetic.pt"
MODEL_ENV = "SZVIEWER_MODEL"


def default_model_path() -> Path:
    """The shipped model file ``deepsz_synthetic.pt``.

    Looked up, in order: the ``SZVIEWER_MODEL`` environment variable (a file); the package data
    ``szviewer.models`` (the top-level ``models/`` folder, installed with the package by ``pyproject.toml``);
    ``models/`` at the repository root, three levels above this file; ``<sys.prefix>/share/szviewer/models/``.
    Returns the first existing candidate, else the repository path (so error messages name it).
    """
    import sys
    from importlib import resources

    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "models" / SHIPPED_MODEL
    try:
        packaged = Path(str(resources.files("szviewer.models").joinpath(SHIPPED_MODEL)))
    except (ModuleNotFoundError, TypeError):
        packaged = repo
    for cand in (packaged, repo, Path(sys.prefix) / "share" / "szviewer" / "models" / SHIPPED_MODEL):
        if cand.is_file():
            return cand
    return repo


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA GPU is usable, else 'cpu'."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA GPU is available to torch here")
    return device


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


def training_sky(ws: Workspace) -> dict:
    """What the model card says about the sky a model was trained on."""
    sky = ws.products.get("sky", {})
    prov = sky.get("provenance", {})
    return {"kind": ws.kind, "area_deg2": ws.geometry.get("area_deg2"), "seed": prov.get("seed"),
            "generator": prov.get("generator"), "footprint": ws.geometry.get("footprint"),
            "cutouts": ws.products.get("cutouts", {}).get("summary", {}).get("splits")}


def _check_trainable(store, level: str) -> None:
    """InputError naming the store unless it has ``level`` and positives in 'train' and 'val' (to calibrate)."""
    if level not in store.levels:
        raise InputError(store.path, f"level {level!r} is not in the cutout store (has {', '.join(store.levels)})")
    split = np.asarray(store.table["split"])
    labels = np.asarray(store.table["label"], dtype=bool)
    for name in ("train", "val"):
        if not labels[split == name].any():
            raise InputError(store.path, f"the {name!r} split has no positive cutouts, so the CNN cannot be "
                                         f"{'trained' if name == 'train' else 'calibrated'}; use a larger sky")


def train_settings(preset: str = "quick", level: str = "all", seed: int = 0, max_seconds: float | None = None,
                   overrides: dict | None = None):
    """The :class:`~szviewer.cnn.train.TrainSettings` of a run: a preset (defined by steps), the level and seed,
    an opt-in wall-clock budget ``max_seconds`` and ``overrides`` (TrainSettings fields; tests)."""
    from szviewer.cnn.settings import TrainSettings

    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise InputError(None, f"--max-seconds {max_seconds}: must be a positive number of seconds")
    extra = dict(overrides or {})
    if max_seconds is not None:
        extra["max_seconds"] = float(max_seconds)
    return TrainSettings.preset_named(preset, level=level, seed=seed, **extra)


def train_job(ws: Workspace, preset: str = "quick", level: str = "all", device: str = "auto", resume: bool = False,
              progress: ProgressFn | None = None, cancelled: CancelFn | None = None, seed: int = 0,
              model_out: str | os.PathLike | None = None, overrides: dict | None = None,
              max_seconds: float | None = None, checkpoint_seconds: float | None = 120.0,
              overwrite: bool = False) -> dict:
    """Train on the workspace's 'train' cutouts, calibrate on 'val', evaluate on 'val'/'test', save the model.

    ``preset``: 'quick' (at most 1,200 batches of 64; for ~100 deg^2), 'long' (at most 8,000 batches of 128; for
    1,000 deg^2 or more) or 'paper' (paper section 2.2.2 exactly; :meth:`TrainSettings.preset_named`). A preset
    is a number of steps, so its result does not depend on the machine; :func:`train_estimate` says how long it
    takes here. ``max_seconds``: an opt-in wall-clock budget (recorded in the card). ``checkpoint_seconds``: a
    checkpoint at least this often besides every ``checkpoint_every`` batches. ``resume``: continue from
    ``cnn/checkpoint.pt``. ``overrides``: TrainSettings fields (tests).
    Commits the model as the product ``cnn_model`` (``cnn_model/gNNNNNN/model.pt`` and its training log; or writes
    ``model_out``); a run that would replace a trained model or a finished run's checkpoint without ``resume`` needs
    ``overwrite``. Returns a summary.
    """
    from szviewer.cnn.modelfile import CNNModel, fit_platt, save_model
    from szviewer.cnn.settings import plan_max_steps
    from szviewer.cnn.train import train

    t0 = time.perf_counter()
    if not resume and not overwrite:
        if model_out is None and "cnn_model" in ws.products:
            ws.check_replace("cnn_model", overwrite)
        if ws.path(CHECKPOINT).exists():
            raise OutputExistsError(ws.path(CHECKPOINT), "a training run's checkpoint; pass --resume to continue it "
                                                         "or --overwrite to start again")
    if model_out is not None and Path(model_out).exists() and not overwrite:
        raise OutputExistsError(model_out, "pass --overwrite to replace it")
    started = ws.generations("cnn_model")
    if checkpoint_seconds is not None and not checkpoint_seconds > 0:
        raise InputError(None, f"--checkpoint-seconds {checkpoint_seconds}: must be a positive number of seconds")
    dev = resolve_device(device)
    store = ws.cutout_store()
    try:
        _check_trainable(store, level)
        settings = train_settings(preset, level, seed, max_seconds, overrides)
        ws.path(CNN_DIR).mkdir(exist_ok=True)
        res = train(store, settings, checkpoint_path=ws.path(CHECKPOINT), log_path=ws.path(TRAIN_LOG),
                    resume=resume, select=best_f1, device=dev, checkpoint_seconds=checkpoint_seconds,
                    progress=progress, cancelled=cancelled)
        import torch

        net = res.net.cpu().to(memory_format=torch.contiguous_format).eval()
        platt = fit_platt(res.val_raw, res.val_labels)
        model = CNNModel(net, platt)
        metrics = evaluate_model(store, model, level, cancelled=cancelled)
        card = {
            "preset": preset, "level": level, "training_sky": training_sky(ws), "workspace": str(ws.root),
            "train_settings": settings.to_dict(), "best_ratio": res.best_ratio, "per_ratio": res.per_ratio,
            "steps": res.steps, "plan_max_steps": plan_max_steps(settings), "train_seconds": round(res.seconds, 1),
            "seconds_per_step": round(res.seconds / max(res.steps, 1), 3), "stopped_by_time": res.stopped_by_time,
            "device": dev,
            "metrics_same_sky": metrics,
            "val_f1": metrics["val_f1"], "test_f1": metrics["test_f1"],
            "created": now_iso(),
        }
    finally:
        store.close()
    summary = {"model": "", "preset": preset, "best_ratio": res.best_ratio, "steps": res.steps,
               "plan_max_steps": plan_max_steps(settings), "stopped_by_time": res.stopped_by_time,
               "val_f1": metrics["val_f1"], "val_threshold": metrics["val_threshold"],
               "test_f1": metrics["test_f1"], "platt": platt.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    if model_out is not None:
        save_model(Path(model_out), net, platt, card)
        summary["model"] = str(model_out)
        return summary
    with ws.writing("cnn_model", overwrite=True, started=started) as w:  # the model and its log: one commit
        save_model(w.path("model.pt"), net, platt, card)
        shutil.copyfile(ws.path(TRAIN_LOG), w.path("train_log.csv"))
        w.settings, w.provenance, w.summary = settings.to_dict(), {"device": dev}, summary
    summary["model"] = str(ws.file("cnn_model", "model.pt"))
    return summary


RATE_CACHE = "cache/cnn_train_rates.json"  # under $SZVIEWER_HOME (default ~/.szviewer)
RATE_CACHE_DAYS = 30.0


def _home() -> Path:
    return Path(os.environ.get("SZVIEWER_HOME", Path.home() / ".szviewer"))


def _machine_key(settings, device: str) -> str:
    """What a measured step time depends on: the CPU, cores, thread settings, library versions, the device and
    the run's batch, network and fast path (computed without importing torch)."""
    import hashlib
    import platform
    from importlib import metadata

    cpu, flags = platform.processor(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name")), cpu)
        flags = next((ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "?"
    key = {"machine": platform.machine(), "cpu": cpu, "flags": hashlib.sha1(flags.encode()).hexdigest()[:12],
           "cores": cores, "threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch_version, "device": device,
           "batch": settings.batch, "net": settings.net.to_dict(), "fast": settings.fast, "augment": settings.augment}
    return json.dumps(key, sort_keys=True)


def _cached_rates(key: str) -> dict | None:
    path = _home() / RATE_CACHE
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or time.time() - float(entry.get("time", 0)) > RATE_CACHE_DAYS * 86400:
        return None
    return entry


def _cache_rates(key: str, rates: dict) -> None:
    from szviewer.atomic import write_json

    path = _home() / RATE_CACHE
    try:
        cache = json.loads(path.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    cache[key] = dict(rates, time=time.time(), measured=now_iso())
    try:
        write_json(path, cache)
    except OSError:  # a read-only home: the estimate is still shown, just not remembered
        pass


def train_estimate(ws: Workspace, preset: str = "quick", level: str = "all", device: str = "auto", seed: int = 0,
                   max_seconds: float | None = None, resume: bool = False, overrides: dict | None = None,
                   measure: bool = True, sample: int = 256, cancelled: CancelFn | None = None) -> dict | None:
    """How long :func:`train_job` with these arguments can take on this machine, from a measured step time.

    ``measure=True`` times a few real training steps of the preset's batch size (and the validation scoring) on
    ``sample`` of the workspace's training cutouts (a few seconds, :func:`szviewer.cnn.train.measure_rates`) and
    remembers the rates in ``$SZVIEWER_HOME/cache/cnn_train_rates.json``; ``measure=False`` only uses that
    cache and never imports torch (the app's train dialog), returning None when nothing is cached for this
    machine. The bound covers every step of the plan and every validation pass (patience usually ends ratios
    sooner), reading the cutouts and scoring 'val' and 'test' afterwards.

    Returns {'seconds' (upper bound), 'steps', 'plan_steps', 'step_seconds', 'measured', 'text', ...}.
    """
    from szviewer.cnn.settings import estimate_seconds, format_duration

    settings = train_settings(preset, level, seed, max_seconds, overrides)
    key = _machine_key(settings, device)
    store = ws.cutout_store()
    try:
        _check_trainable(store, level)
        split = np.asarray(store.table["split"])
        labels = np.asarray(store.table["label"], dtype=bool)
        counts = {name: int((split == name).sum()) for name in ("train", "val", "test")}
        rows = np.nonzero(split == "train")[0]
        n_pick = min(sample if measure else 64, rows.size)  # without measuring: only the reading rate
        pick = np.random.default_rng(0).choice(rows, n_pick, replace=False)
        pick.sort()
        t_read = time.perf_counter()
        x = store.images(pick, level)
        read_s = (time.perf_counter() - t_read) / len(pick)
        y = labels[pick]
    finally:
        store.close()
    rates = None if measure else _cached_rates(key)
    when = f"here on {rates['measured'][:16].replace('T', ' ')} UTC" if rates else "here just now"
    if rates is None:
        if not measure:
            return None
        from szviewer.cnn.train import measure_rates

        rates = measure_rates(settings, x, y, device=resolve_device(device), cancelled=cancelled)
        _cache_rates(key, rates)
    rates = dict(rates, read_seconds_per_cutout=read_s)
    done = 0
    if resume and measure and ws.path(CHECKPOINT).is_file():
        from szviewer.cnn.settings import plan_position
        from szviewer.cnn.train import load_checkpoint

        st = load_checkpoint(ws.path(CHECKPOINT))["state"]
        done = plan_position(settings, int(st["ratio_index"]), int(st["k"]))
    est = estimate_seconds(settings, rates, n_val=counts["val"], n_read=counts["train"] + counts["val"],
                           n_score=counts["val"] + counts["test"], done_steps=done)
    prec = "bf16 autocast" if rates.get("bf16_autocast") else "fp32"
    budget = f"; stops at the --max-seconds budget of {format_duration(max_seconds)}" if max_seconds else ""
    text = (f"expected duration on this machine: at most {format_duration(est['seconds'])} "
            f"({est['steps']:,} steps of {settings.batch} at {rates['step_seconds']:.2f} s/step measured {when}, "
            f"{prec}, {rates.get('threads', '?')} threads; {est['evals']} validation passes over "
            f"{counts['val']:,} cutouts{budget}); patience usually ends a ratio sooner, other work on the machine "
            "slows it")
    return {"preset": preset, "seconds": est["seconds"], "steps": est["steps"], "plan_steps": est["plan_steps"],
            "evals": est["evals"], "step_seconds": rates["step_seconds"], "parts": est["parts"], "measured": when,
            "device": rates.get("device", device), "batch": settings.batch, "text": text}


def model_for(ws: Workspace, model_path: str | os.PathLike | None = None) -> Path:
    """The model ``predict_job`` uses: ``model_path``, else the workspace's trained model, else the shipped one."""
    if model_path is not None:
        return Path(model_path)
    if ws.has("cnn_model"):
        return ws.file("cnn_model", "model.pt")
    return default_model_path()


def _model_inputs(ws: Workspace, path: Path) -> tuple[tuple[str, ...], dict]:
    """What a score product is made from: the cutouts, and the workspace's own model or an external model file."""
    if ws.has("cnn_model") and Path(path).resolve() == ws.file("cnn_model", "model.pt").resolve():
        return ("cutouts", "cnn_model"), {}
    return ("cutouts",), {"model": path}


def predict_job(ws: Workspace, model_path: str | os.PathLike | None = None, level: str = "all",
                device: str = "auto", progress: ProgressFn | None = None, cancelled: CancelFn | None = None,
                batch: int = 128, precision: str = "auto", overwrite: bool = False) -> dict:
    """Score every cutout of the workspace; commits ``cnn_prob`` and ``cnn_raw`` as the product 'cnn' (replacing
    earlier scores needs ``overwrite``).

    ``precision``: 'auto' (bf16 checked against fp32 where bf16 is native, else fp32), 'fp32', 'bf16' or
    'checked' (:class:`szviewer.cnn.predict.Scorer`); calibrated probabilities are within 0.01 of fp32 except with
    'bf16'.

    At a component level other than 'all' the columns are ``cnn_prob_<level>`` and ``cnn_raw_<level>`` and the
    product ``cnn_<level>``, so the noise study (paper Fig. 8) can compare levels side by side.
    """
    from szviewer.cnn.modelfile import load_model
    from szviewer.cnn.predict import predict

    t0 = time.perf_counter()
    suffix = "" if level == "all" else f"_{level}"
    product = f"cnn{suffix}"
    ws.check_replace(product, overwrite)
    path = model_for(ws, model_path)
    inputs, external = _model_inputs(ws, path)
    started = ws.generations(product, inputs)
    dev = resolve_device(device)
    model = load_model(path, device=dev)
    store = ws.cutout_store()
    try:
        if level not in store.levels:
            raise InputError(store.path, f"level {level!r} is not in the cutout store (has {', '.join(store.levels)})")
        out = predict(store, model, level=level, batch=batch, device=dev, precision=precision, progress=progress,
                      cancelled=cancelled)
        ids = np.asarray(store.table["id"])
        labels = np.asarray(store.table["label"], dtype=bool)
        split = np.asarray(store.table["split"])
    finally:
        store.close()
    seconds = time.perf_counter() - t0
    card = model.card
    meta = {"model": str(path), "architecture": card.get("architecture", {}).get("name"), "level": level,
            "platt": model.platt.to_dict(), "preset": card.get("preset"),
            "training_sky": card.get("training_sky")}
    summary = {"model": str(path), "cutouts": int(ids.size), "level": level, "seconds": round(seconds, 2),
               "cutouts_per_s": round(ids.size / max(seconds, 1e-9), 1), "precision": out["precision"],
               "refined_fp32": out["refined"],
               "mean_prob": float(np.mean(out["cnn_prob"])) if ids.size else None}
    for name in ("val", "test"):
        sel = split == name
        if labels[sel].any():
            summary[f"{name}_best_f1"] = best_f1(out["cnn_prob"][sel], labels[sel])
    with ws.writing(product, inputs=inputs, overwrite=overwrite, external=external, started=started) as w:
        w.write_scores(ids, {f"cnn_prob{suffix}": out["cnn_prob"], f"cnn_raw{suffix}": out["cnn_raw"]}, meta=meta)
        w.settings = {"model": str(path), "level": level, "device": dev, "precision": out["precision"]}
        w.summary = summary
    return summary


DENSE_CANDIDATES = "dense_candidates.fits"  # in the product cnn_dense
DENSE_METHODS = ("fcn", "windowed")


def dense_grid_pix(ws: Workspace, method: str = "fcn", resolution_arcmin: float = 1.0,
                   stride_arcmin: float = 2.0, total_stride: int = 16) -> int:
    """The dense grid in pixels for these settings, or a one-line InputError (checked before any scoring)."""
    if ws.kind != "synthetic":
        raise InputError(ws.root, "dense scoring works on tiled (synthetic) workspaces only")
    if method not in DENSE_METHODS:
        raise InputError(None, f"dense method {method!r}: expected one of {', '.join(DENSE_METHODS)}")
    pix = float(ws.geometry["tiles"][0]["pixel_arcmin"])
    if method == "windowed":
        if not (math.isfinite(stride_arcmin) and stride_arcmin > 0):
            raise InputError(None, f"--stride-arcmin {stride_arcmin}: must be a positive, finite number of arcmin")
        return max(1, int(round(stride_arcmin / pix)))
    ok = [s for s in (1, 2, 4, 8, 16) if s <= total_stride]  # szviewer.cnn.fcn.STRIDES (no torch import here)
    step = resolution_arcmin / pix if math.isfinite(resolution_arcmin) and resolution_arcmin > 0 else -1.0
    if int(round(step)) not in ok or abs(step - round(step)) > 1e-6:
        raise InputError(None, f"--resolution-arcmin {resolution_arcmin:g}: the fully convolutional grid must be "
                               f"{', '.join(f'{s * pix:g}' for s in ok)} arcmin at this sky's {pix:g}' pixels")
    return int(round(step))


def dense_job(ws: Workspace, model_path: str | os.PathLike | None = None, level: str = "all",
              stride_arcmin: float = 2.0, threshold: float = 0.5, tiles: list[int] | None = None,
              device: str = "auto", precision: str = "auto", progress: ProgressFn | None = None,
              cancelled: CancelFn | None = None, overwrite: bool = False, method: str = "fcn",
              resolution_arcmin: float = 1.0, subpixel: str = "centroid") -> dict:
    """Dense CNN scoring of a synthetic (tiled) workspace: a probability map per tile and the CNN candidates.

    For each tile (or the listed ``tiles``) take the tile's observed map (for a component level: the sum of the
    level's components plus the observed map's noise, as the cutout store reads them) and score 32 x 32 windows:

    - ``method='fcn'`` (the default): the network applied fully convolutionally (:mod:`szviewer.cnn.fcn`) on a
      grid of ``resolution_arcmin`` (1' by default; 0.25', 0.5', 1', 2' or 4' at the paper's 0.25' pixels), fp32,
      every window with its convolutions padded by the map's own pixels (context padding);
    - ``method='windowed'`` (the reference, paper section 3.4.2's suggestion): every window scored on its own
      (zero padding at its border) on a ``stride_arcmin`` grid, at ``precision``.

    Platt-calibrate, find peaks >= ``threshold`` and place each at its sub-pixel centre
    (:func:`szviewer.cnn.dense.subpixel_peaks`, ``subpixel``) with a position error
    (:func:`szviewer.cnn.dense.position_error_arcmin`). Writes ``dense_candidates.fits`` (ra, dec [deg], prob,
    tile, x, y [tile pixels, fractional], pos_err_arcmin [1 sigma per coordinate], logit [Platt logit
    a z + b]; the CNN catalogue) and the score column ``cnn_dense_prob`` (per cutout: the largest probability
    among windows centred in its central cell; NaN for cutouts of tiles not scored) as the product ``cnn_dense``,
    and returns a summary with the edge-effect measurement (:func:`edge_effect`) when ``cnn_prob`` is already in
    the score table.
    """
    from astropy.table import Table

    from szviewer.cnn.dense import cell_max, score_tile, score_tile_fcn
    from szviewer.cnn.modelfile import load_model
    from szviewer.progress import check_cancel

    dense_grid_pix(ws, method, resolution_arcmin, stride_arcmin)
    t0 = time.perf_counter()
    ws.check_replace("cnn_dense", overwrite)
    path = model_for(ws, model_path)
    inputs, external = _model_inputs(ws, path)
    inputs = (*inputs, "sky")
    started = ws.generations("cnn_dense", inputs)
    dev = resolve_device(device)
    model = load_model(path, device=dev)
    sky = ws.sky()
    store = ws.cutout_store()
    try:
        table = store.table
        if level not in store.levels:
            raise InputError(store.path, f"level {level!r} is not in the cutout store (has {', '.join(store.levels)})")
        comps = tuple(store.levels[level])
        pix = float(store.pixel_arcmin)
        half_cell = 0.5 * float(store.attrs().get("stride_arcmin", 6.0)) / pix
        ids = np.asarray(table["id"])
    finally:
        store.close()
    plan = None
    total = 4 * 2 ** (len(model.config.blocks) - 1)
    step = dense_grid_pix(ws, method, resolution_arcmin, stride_arcmin, total)
    if method == "fcn":
        from szviewer.cnn.fcn import FCNPlan

        try:
            plan = FCNPlan(model.net, step, device=dev)
        except ValueError as exc:
            raise InputError(path, f"{exc}; pass --windowed") from None
    else:
        stride_pix = step
    grid_arcmin = step * pix
    dense_prob = np.full(len(table), np.nan)
    cols = ("ra", "dec", "prob", "tile", "x", "y", "pos_err_arcmin", "logit")
    cand: dict[str, list] = {c: [] for c in cols}
    todo = list(range(len(sky.tiles))) if tiles is None else list(tiles)
    tile_of = np.asarray(table["tile"])
    windows = 0
    for n_done, k in enumerate(todo):
        check_cancel(cancelled, "dense CNN scoring")
        tile = sky.tiles[k]
        maps = level_maps(sky, k, comps)

        def tile_progress(done, total, msg, n_done=n_done, k=k):
            if progress is not None:
                progress(n_done * total + done, len(todo) * total, f"tile {k}: {msg}")

        if plan is not None:
            res = score_tile_fcn(maps, model, threshold=threshold, device=dev, pixel_arcmin=pix, subpixel=subpixel,
                                 plan=plan, progress=tile_progress, cancelled=cancelled)
        else:
            res = score_tile(maps, model, stride_pix=stride_pix, threshold=threshold, precision=precision,
                             device=dev, pixel_arcmin=pix, subpixel=subpixel, progress=tile_progress,
                             cancelled=cancelled)
        del maps
        windows += res["prob"].size
        ra, dec = tile.pix_to_world(res["peaks_x"], res["peaks_y"])
        own = tile.owned.contains(ra, dec)  # a peak in the margin belongs to the neighbouring tile
        for name, v in (("ra", ra), ("dec", dec), ("prob", res["peaks_prob"]), ("x", res["peaks_x"]),
                        ("y", res["peaks_y"]), ("pos_err_arcmin", res["peaks_err_arcmin"]),
                        ("logit", res["peaks_logit"])):
            cand[name].extend(np.asarray(v, dtype=float)[own])
        cand["tile"].extend([k] * int(own.sum()))
        sel = np.nonzero(tile_of == k)[0]
        if sel.size:
            cx, cy = tile.world_to_pix(np.asarray(table["ra"])[sel], np.asarray(table["dec"])[sel])
            dense_prob[sel] = cell_max(res["prob"], res["xs"], res["ys"], cx, cy, half_cell)
    cat = Table({c: np.asarray(cand[c], np.int32 if c == "tile" else float) for c in cols})
    for c, unit in (("ra", "deg"), ("dec", "deg"), ("x", "pix"), ("y", "pix"), ("pos_err_arcmin", "arcmin")):
        cat[c].unit = unit
    cat.meta["MODEL"] = str(path)[-60:]
    cat.meta["METHOD"] = method
    cat.meta["GRID"] = (grid_arcmin, "arcmin between scored window centres")
    cat.meta["STRIDE"] = grid_arcmin
    cat.meta["THRESH"] = threshold
    cat.meta["SUBPIX"] = subpixel
    cat.meta["PLATT_A"], cat.meta["PLATT_B"] = model.platt.a, model.platt.b
    seconds = time.perf_counter() - t0
    summary = {"model": str(path), "method": method, "tiles": todo, "grid_arcmin": grid_arcmin,
               "stride_arcmin": grid_arcmin, "threshold": threshold, "windows": int(windows),
               "candidates": len(cat), "seconds": round(seconds, 1)}
    area = ws.geometry.get("area_deg2")
    if tiles is None and area:
        summary["seconds_per_deg2"] = round(seconds / float(area), 3)
    scores = ws.scores(ids)
    if "cnn_prob" in scores:
        label = f"cnn_dense_prob ({grid_arcmin:g}' {'fcn' if plan is not None else 'windowed'}, cell max)"
        summary["edge_effect"] = edge_effect(table, {"cnn_prob (DeepSZ grid)": scores["cnn_prob"],
                                                     label: dense_prob})
    settings = {"model": str(path), "level": level, "method": method, "grid_arcmin": grid_arcmin,
                "threshold": threshold, "subpixel": subpixel, "tiles": todo}
    with ws.writing("cnn_dense", inputs=inputs, overwrite=overwrite, external=external, started=started) as w:
        cat.write(w.path(Path(DENSE_CANDIDATES).name), format="fits")  # the CNN catalogue and the scores: one commit
        w.write_scores(ids, {"cnn_dense_prob": dense_prob},
                       meta={"model": str(path), "method": method, "grid_arcmin": grid_arcmin,
                             "stride_arcmin": grid_arcmin, "level": level,
                             "missing": "NaN: the cutout's tile was not scored"})
        w.settings = settings
        w.summary = summary
    return summary


def level_maps(sky, k: int, components: tuple[str, ...]) -> np.ndarray:
    """Tile ``k`` of a tiled sky at a component level with the instrument noise, (nband, ny, nx) float32: the
    observed map itself for every component, else the level's components plus (observed - all components),
    the same pixels :class:`szviewer.cutouts.pixels.TileWindows` gives the cutouts."""
    if set(components) == set(sky.components):
        return sky.tile_maps(k)
    maps = sky.tile_maps(k, tuple(c for c in sky.components if c in components))
    maps += sky.tile_maps(k) - sky.tile_maps(k, tuple(sky.components))
    return maps


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
