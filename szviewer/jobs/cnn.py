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
from szviewer.evaluate.cnn_scores import best_f1, evaluate_model
from szviewer.progress import CancelFn, ProgressFn
from szviewer.workspace import Workspace, now_iso

CNN_DIR = "cnn"
CHECKPOINT = "cnn/checkpoint.pt"
TRAIN_LOG = "cnn/train_log.csv"
SHIPPED_MODEL = "deepsz_synthetic.pt"
MODEL_ENV = "SZVIEWER_MODEL"


def default_model_path(instrument: str | None = None) -> Path:
    """The shipped model file: ``deepsz_synthetic.pt`` (the paper's instrument), or for ``instrument`` its own
    ``deepsz_<instrument>.pt`` when one is shipped (``models/README.md``).

    Looked up, in order: the ``SZVIEWER_MODEL`` environment variable (a file); the package data
    ``szviewer.models`` (the top-level ``models/`` folder, installed with the package by ``pyproject.toml``);
    ``models/`` at the repository root, three levels above this file; ``<sys.prefix>/share/szviewer/models/``.
    Returns the first existing candidate, else the repository path (so error messages name it).
    """
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    if instrument:
        own = _shipped(f"deepsz_{instrument}.pt")
        if own.is_file():
            return own
    return _shipped(SHIPPED_MODEL)


def _shipped(name: str) -> Path:
    import sys
    from importlib import resources

    repo = Path(__file__).resolve().parents[2] / "models" / name
    try:
        packaged = Path(str(resources.files("szviewer.models").joinpath(name)))
    except (ModuleNotFoundError, TypeError):
        packaged = repo
    for cand in (packaged, repo, Path(sys.prefix) / "share" / "szviewer" / "models" / name):
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


def training_sky(ws: Workspace) -> dict:
    """What the model card says about the sky a model was trained on."""
    sky = ws.products.get("sky", {})
    prov = sky.get("provenance", {})
    inst = sky.get("settings", {}).get("instrument")
    return {"kind": ws.kind, "instrument": inst.get("name") if isinstance(inst, dict) else None,
            "pixel_arcmin": ws.pixel_arcmin, "area_deg2": ws.geometry.get("area_deg2"), "seed": prov.get("seed"),
            "generator": prov.get("generator"), "footprint": ws.geometry.get("footprint"),
            "cutouts": ws.products.get("cutouts", {}).get("summary", {}).get("splits"),
            "label_rule": ws.products.get("cutouts", {}).get("settings", {}).get("labels")}


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


def has_one_over_f(ws: Workspace) -> bool:
    """Whether the workspace's sky was simulated with atmospheric 1/f noise in some band (an instrument preset
    whose bands have ``ell_knee > 0``, e.g. act-dr6, so-lat)."""
    from szviewer.jobs.mf_inputs import recorded_instrument

    inst = recorded_instrument(ws)
    return inst is not None and inst.has_one_over_f


def train_settings(preset: str = "quick", level: str = "all", seed: int = 0, max_seconds: float | None = None,
                   overrides: dict | None = None, store=None, one_over_f: bool = False, init=None):
    """The :class:`~szviewer.cnn.train.TrainSettings` of a run: a preset (defined by steps), the level and seed,
    an opt-in wall-clock budget ``max_seconds`` and ``overrides`` (TrainSettings fields, and ``scaling``: the
    network's input scaling, :data:`szviewer.cnn.settings.SCALINGS`).

    ``store``: the cutout store trained on. The network is the paper's, adapted to the instrument: it reads the
    store's ``npix x npix`` cutouts (8' at the sky's pixel size: 32 at the paper's 0.25', 16 at 0.5') of all its
    bands (any number); at 0.5' pixels the stem's second convolution runs at stride 1 instead of 2
    (:func:`~szviewer.cnn.settings.stem_stride_for`), so every later layer sees the paper's angles, the trunk ends
    at 2 x 2 and the weights have the paper model's shapes (README, "Deviations"). ``one_over_f``
    (:func:`has_one_over_f`): the sky has atmospheric 1/f noise, so a preset's 'fixed' scaling becomes 'detrend'
    (each cutout's quadratic surface removed first: such cutouts are dominated by modes larger than themselves).
    ``init``: a loaded :class:`~szviewer.cnn.modelfile.CNNModel` to start from (``--init-from``): its width,
    blocks and head replace the preset's, and ``init_from`` records its checksum."""
    from dataclasses import replace

    from szviewer.cnn.settings import SCALINGS, TrainSettings, stem_stride_for

    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise InputError(None, f"--max-seconds {max_seconds}: must be a positive number of seconds")
    extra = dict(overrides or {})
    scaling = extra.pop("scaling", None)
    if scaling is not None and scaling not in SCALINGS:
        raise InputError(None, f"input scaling {scaling!r}: expected one of {', '.join(SCALINGS)}")
    if max_seconds is not None:
        extra["max_seconds"] = float(max_seconds)
    settings = TrainSettings.preset_named(preset, level=level, seed=seed, **extra)
    if scaling is None and one_over_f and settings.net.scaling == "fixed":
        scaling = "detrend"
    if scaling is not None:
        settings = replace(settings, net=replace(settings.net, scaling=scaling))
    if init is not None:
        src = init.config
        settings = replace(settings, init_from=model_checksum(init),
                           net=replace(settings.net, width=src.width, blocks=src.blocks, head=src.head))
    if store is None:
        return settings
    net, nb = settings.net, len(store.bands)
    try:
        net = replace(net, npix=int(store.npix), in_bands=nb, scale_uk=(net.scale_uk[0],) * nb,
                      stem_stride=stem_stride_for(store.npix))
    except ValueError as exc:
        raise InputError(store.path, f"cutouts of {store.npix} x {store.npix} pixels ({store.pixel_arcmin:g}'): "
                                     f"{exc}; cut with smaller pixels") from None
    return replace(settings, net=net)


def model_checksum(model) -> str:
    """The SHA-256 that names a model: its card's payload checksum, or the file's for a file without one."""
    from szviewer.workspace.products import file_signature

    return str(model.card.get("sha256") or file_signature(model.path)["sha256"])


def start_model(init_from):
    """The model a fine-tuning run starts from and its file: ``init_from`` is a model file, an already loaded
    :class:`~szviewer.cnn.modelfile.CNNModel` (loaded once for the forecast and the run) or None."""
    if init_from is None:
        return None, None
    if hasattr(init_from, "net"):
        return init_from, init_from.path
    from szviewer.cnn.modelfile import load_model

    return load_model(init_from), init_from


def init_state_for(model, settings, model_path) -> dict:
    """The weights of ``model`` (``--init-from``) for the network of ``settings``, or a one-line InputError naming
    the model file when a tensor's shape differs (another number of bands, or a trunk that ends at another size)."""
    from szviewer.cnn.model import DeepSZNet
    from szviewer.cnn.modelfile import first_shape_mismatch

    have = model.net.state_dict()
    bad = first_shape_mismatch(DeepSZNet(settings.net).state_dict(), have)
    if bad is not None:
        raise InputError(model_path, f"cannot start from this model: its weight {bad[0]} has shape {bad[1]}, this "
                                     f"workspace's network ({settings.net.npix} x {settings.net.npix} pixels, "
                                     f"{settings.net.in_bands} bands) needs {bad[2]}")
    return have  # load_state_dict copies it into the new network


def check_model_fits(model, store, model_path) -> None:
    """A one-line InputError naming the model file unless it reads the store's cutouts: ``npix x npix`` pixels of
    as many bands (a model is trained for one instrument's pixel size and bands, :func:`train_settings`)."""
    cfg, nb = model.config, len(store.bands)
    if cfg.npix == int(store.npix) and cfg.in_bands == nb:
        return
    sky = model.card.get("training_sky") or {}
    made = f" (trained on {sky['instrument']})" if sky.get("instrument") else ""
    raise InputError(model_path, f"this model{made} reads {cfg.npix} x {cfg.npix}-pixel cutouts of {cfg.in_bands} "
                                 f"bands; this workspace's are {store.npix} x {store.npix} pixels of {nb} bands "
                                 f"({store.pixel_arcmin:g}' pixels): train one on it (`szviewer train WS`) or pass "
                                 "--model with a model of this instrument")


def train_job(ws: Workspace, preset: str = "quick", level: str = "all", device: str = "auto", resume: bool = False,
              progress: ProgressFn | None = None, cancelled: CancelFn | None = None, seed: int = 0,
              model_out: str | os.PathLike | None = None, overrides: dict | None = None,
              max_seconds: float | None = None, checkpoint_seconds: float | None = 120.0,
              overwrite: bool = False, init_from=None) -> dict:
    """Train on the workspace's 'train' cutouts, calibrate on 'val', evaluate on 'val'/'test', save the model.

    ``preset``: 'quick' (at most 1,200 batches of 64; for ~100 deg^2), 'long' (at most 8,000 batches of 128; for
    1,000 deg^2 or more), 'paper' (paper section 2.2.2 exactly) or 'finetune' (with ``init_from``;
    :meth:`TrainSettings.preset_named`). A preset
    is a number of steps, so its result does not depend on the machine; :func:`train_estimate` says how long it
    takes here. ``max_seconds``: an opt-in wall-clock budget (recorded in the card). ``checkpoint_seconds``: a
    checkpoint at least this often besides every ``checkpoint_every`` batches. ``resume``: continue from
    ``cnn/checkpoint.pt``. ``overrides``: TrainSettings fields (tests). ``init_from``: a model file (or a loaded
    model, :func:`start_model`) whose weights the network starts from (fine-tuning, e.g. the paper model on
    another instrument's cutouts with the 'finetune' preset); the card records it.
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
    init, init_from = start_model(init_from)
    store = ws.cutout_store()
    try:
        _check_trainable(store, level)
        settings = train_settings(preset, level, seed, max_seconds, overrides, store=store,
                                  one_over_f=has_one_over_f(ws), init=init)
        init_state = None if init is None else init_state_for(init, settings, init_from)
        ws.path(CNN_DIR).mkdir(exist_ok=True)
        res = train(store, settings, checkpoint_path=ws.path(CHECKPOINT), log_path=ws.path(TRAIN_LOG),
                    resume=resume, select=best_f1, device=dev, checkpoint_seconds=checkpoint_seconds,
                    progress=progress, cancelled=cancelled, init_state=init_state)
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
            "init_from": None if init is None else {
                "file": Path(init_from).name, "sha256": settings.init_from,
                "training_sky": init.card.get("training_sky"), "preset": init.card.get("preset")},
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
                   measure: bool = True, sample: int = 256, cancelled: CancelFn | None = None,
                   init_from=None) -> dict | None:
    """How long :func:`train_job` with these arguments can take on this machine, from a measured step time.

    ``measure=True`` times a few real training steps of the preset's batch size (and the validation scoring) on
    ``sample`` of the workspace's training cutouts (a few seconds, :func:`szviewer.cnn.train.measure_rates`) and
    remembers the rates in ``$SZVIEWER_HOME/cache/cnn_train_rates.json``; ``measure=False`` only uses that
    cache and never imports torch (the app's train dialog), returning None when nothing is cached for this
    machine. The bound covers every step of the plan and every validation pass (patience usually ends ratios
    sooner), reading the cutouts and scoring 'val' and 'test' afterwards. ``init_from``: the model a fine-tuning
    run starts from (its network is the one timed; a model that does not fit is refused here, before any step).

    Returns {'seconds' (upper bound), 'steps', 'plan_steps', 'step_seconds', 'measured', 'text', ...}.
    """
    from szviewer.cnn.settings import estimate_seconds, format_duration

    init, init_from = start_model(init_from)
    store = ws.cutout_store()
    try:
        settings = train_settings(preset, level, seed, max_seconds, overrides, store=store,
                                  one_over_f=has_one_over_f(ws), init=init)
        if init is not None:
            init_state_for(init, settings, init_from)
        key = _machine_key(settings, device)
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


def score_product(level: str = "all") -> str:
    """The product holding the cutout scores of a component level: ``cnn``, or ``cnn_<level>``."""
    return "cnn" if level == "all" else f"cnn_{level}"


def model_for(ws: Workspace, model_path: str | os.PathLike | None = None) -> Path:
    """The model ``predict_job`` uses: ``model_path``, else the workspace's trained model, else the shipped one
    for the workspace's instrument (the paper model when that instrument has none)."""
    if model_path is not None:
        return Path(model_path)
    if ws.has("cnn_model"):
        return ws.file("cnn_model", "model.pt")
    inst = ws.products.get("sky", {}).get("settings", {}).get("instrument")
    return default_model_path(inst.get("name") if isinstance(inst, dict) else None)


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
    product = score_product(level)
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
        check_model_fits(model, store, path)
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
