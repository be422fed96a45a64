"""Training the DeepSZ CNN with dynamic stratified sampling (paper section 2.2.2; SCIENCE.md section 4).

The schedule, for each ratio r in ``settings.ratios`` (paper: 1, 2, ..., 20):

- S_r oversamples the positive training cutouts so that negatives:positives = r: each sample of a batch is a
  positive with probability 1 / (1 + r), drawn uniformly from the positives, else a uniform negative.
- SGD (momentum 0.9, weight decay 0.003), batch 128, cross-entropy. The learning rate of the k-th batch of the
  ratio (k = 0, 1, ...) is 5e-3, warmed up linearly from lr/3 over the first 500 batches, times 0.1 after 1000.
- Every 100 batches the loss on the *oversampled* validation set is evaluated (computed exactly as the
  S_r-weighted cross-entropy over all validation cutouts, which is the expectation over S_r); the ratio's
  "epoch" ends when it has not improved for 1000 batches. The best weights of the ratio are kept, the plain
  validation set is scored with them, and the next ratio starts from those weights.
- After the last ratio the weights that do best on the whole (plain) validation set are chosen (the paper's
  run picked r = 16). "Best" is ``select(scores, labels)`` (higher is better; the jobs pass the best F1 of
  :func:`szviewer.evaluate.curves.f1_curve`), by default minus the plain validation cross-entropy.

Reproducibility and resume. The batch of global step t is a pure function of ``(seed, t)`` (a numpy Generator
seeded with both), the learning rate a pure function of the step within the ratio, and the network is
initialised from ``torch.manual_seed(seed)``. Every preset is defined by steps (batches) alone, never by wall
time, so a preset gives the same run on any machine up to floating-point differences; a time budget
(``max_seconds``) is an explicit opt-in, recorded in the card when it ends a run. A checkpoint (weights,
optimizer momentum, counters, the best weights of the ratio and overall, the log) is written atomically every
``checkpoint_every`` batches, every ``checkpoint_seconds`` of wall time (default 120 s, so Ctrl-C or a kill loses at
most that) and at the end of each ratio; ``resume=True`` restores it and finishes with bit-identical weights to an
uninterrupted run (same machine and thread count). Writing a checkpoint never changes the run.

Fast path (``fast=True``): channels-last tensors, and bf16 autocast where bf16 runs in hardware (CPU AVX-512
BF16 / AMX, CUDA compute capability >= 8), about 2-3x faster there; elsewhere (AVX2, AVX-512 without BF16) fp32,
since emulated bf16 is slower. The weights and optimizer stay fp32.

Time. :func:`measure_rates` times a few real training steps of a preset's batch size (and the validation
scoring) on this machine; :func:`estimate_seconds` turns that into the longest the preset can take
(:func:`plan_max_steps` steps, every validation pass), and :func:`train` reports progress in steps of that plan
with an "at most ... left" ETA from its own measured step time.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from szviewer.atomic import atomic_path, write_text
from szviewer.cnn.fused import bf16_native_on
from szviewer.cnn.model import DeepSZNet, raw_score
from szviewer.cnn.settings import (  # noqa: F401 - re-exported: szviewer.cnn.train is where callers look
    NetConfig,
    TrainSettings,
    _ratio_cap,
    estimate_seconds,
    format_duration,
    learning_rate,
    plan_max_evals,
    plan_max_steps,
    plan_position,
)
from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel

CHECKPOINT_FORMAT = "szviewer-cnn-checkpoint"
LOG_COLUMNS = ("step", "ratio", "step_in_ratio", "lr", "loss", "val_loss")
CHECKPOINT_SECONDS = 120.0  # default wall-time interval between checkpoints

#: the clock of training's wall-time rules (checkpoints, ETA, an opt-in ``max_seconds``); tests replace it
_clock = time.monotonic


def batch_plan(seed: int, step: int, ratio: float, n_pos: int, n_neg: int, batch: int):
    """Indices into (positives, negatives) and a dihedral transform for global step ``step``: pure of (seed, step).

    Returns (is_pos bool array, index array into the positives or negatives, transform 0-7).
    """
    rng = np.random.default_rng([int(seed), int(step), 0x5A])
    is_pos = rng.random(batch) < 1.0 / (1.0 + ratio)
    i_pos = rng.integers(0, max(n_pos, 1), batch)
    i_neg = rng.integers(0, max(n_neg, 1), batch)
    aug = rng.integers(0, 8, batch)
    if n_pos == 0:
        is_pos[:] = False
    if n_neg == 0:
        is_pos[:] = True
    return is_pos, np.where(is_pos, i_pos, i_neg), aug


def dihedral(x: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """Apply one of the 8 rotations/flips (k = 0..7) to each image of a batch (n, c, h, w)."""
    out = x.clone()
    for t in range(1, 8):
        sel = np.nonzero(k == t)[0]
        if sel.size == 0:
            continue
        idx = torch.from_numpy(sel)
        y = torch.rot90(x[idx], t % 4, dims=(2, 3))
        if t >= 4:
            y = torch.flip(y, dims=(3,))
        out[idx] = y
    return out


@dataclass
class SplitData:
    """Cutouts of one split in memory: images (n, 3, 32, 32) float32 uK, labels, and their store rows."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray

    @property
    def n_pos(self) -> int:
        return int(self.y.sum())


def load_split(store, split: str, level: str = "all", chunk: int = 2048,
               progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> SplitData:
    """Read a split's cutouts from the HDF5 store into one float32 array, ``chunk`` rows at a time."""
    t = store.table
    rows = np.nonzero(np.asarray(t["split"]) == split)[0]
    y = np.asarray(t["label"], dtype=bool)[rows]
    x = np.empty((rows.size, len(store.bands), store.npix, store.npix), dtype=np.float32)
    for a in range(0, rows.size, chunk):
        check_cancel(cancelled, "reading cutouts")
        x[a:a + chunk] = store.images(rows[a:a + chunk], level)
        if progress is not None:
            progress(min(a + chunk, rows.size), rows.size, f"reading {split}")
    return SplitData(x, y, rows)


def bf16_autocast_pays(device_type: str) -> bool:
    """bf16 autocast only where bf16 runs in hardware (:func:`szviewer.cnn.fused.bf16_native_on`: CPU AVX-512
    BF16 / AMX, CUDA compute capability >= 8): emulated bf16 (an AVX2 CPU, AVX-512 without BF16, an older GPU) is
    slower than fp32 and would make a run's length depend on the machine."""
    return bf16_native_on(device_type)


@torch.inference_mode()
def raw_scores(net: DeepSZNet, x: np.ndarray, batch: int = 512, fast: bool = False) -> np.ndarray:
    """Raw scores (logit differences) of an in-memory array of uK cutouts, in eval mode."""
    was_training = net.training
    net.eval()
    dev = next(net.parameters()).device
    out = np.empty(len(x), dtype=np.float32)
    for a in range(0, len(x), batch):
        xb = torch.from_numpy(x[a:a + batch]).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=fast and bf16_autocast_pays(dev.type)):
            out[a:a + batch] = raw_score(net(xb)).cpu().numpy()
    net.train(was_training)
    return out


def weighted_val_loss(raw: np.ndarray, y: np.ndarray, ratio: float | None) -> float:
    """Cross-entropy on the validation set oversampled to negatives:positives = ratio (None: plain set).

    With two logits, CE = softplus(-s) for a positive and softplus(s) for a negative, s = z1 - z0.
    """
    s = raw.astype(np.float64)
    ce = np.where(y, np.logaddexp(0.0, -s), np.logaddexp(0.0, s))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if ratio is None or n_pos == 0 or n_neg == 0:
        return float(ce.mean())
    w_pos = n_neg / (ratio * n_pos)
    return float((ce[~y].sum() + w_pos * ce[y].sum()) / (n_neg + w_pos * n_pos))


def _clone_state(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def measure_rates(s: TrainSettings, x: np.ndarray, y: np.ndarray | None = None, device: str = "cpu",
                  steps: int = 3, cancelled: CancelFn | None = None) -> dict:
    """Time ``steps`` real training steps of ``s`` (its batch size, network, fast path, augmentation) after one
    warm-up step (the median), and the validation scoring, on cutouts ``x`` (a few hundred real ones are plenty).

    Runs on a throw-away network and its own random numbers (a later :func:`train` is unaffected). Returns
    {'step_seconds', 'eval_seconds_per_cutout', 'steps', 'batch', 'device', 'threads', 'bf16_autocast'}.
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("measure_rates needs some cutouts")
    y = np.zeros(len(x), dtype=bool) if y is None else np.asarray(y, dtype=bool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        net = DeepSZNet(s.net).to(device)
    if s.fast:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    dev_type = torch.device(device).type
    amp = s.fast and bf16_autocast_pays(dev_type)
    labels = torch.from_numpy(y.astype(np.int64))
    net.train()

    def step(t: int) -> None:
        check_cancel(cancelled, "measuring the training speed")
        rng = np.random.default_rng([t, 0x7E])
        rows = rng.integers(0, len(x), s.batch)
        xb = torch.from_numpy(x[rows])
        if s.augment:
            xb = dihedral(xb, rng.integers(0, 8, s.batch))
        yb = labels[torch.from_numpy(rows)].to(device)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
            logits = net(xb.to(device))
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev_type == "cuda":
            torch.cuda.synchronize()

    step(0)
    times = []
    for t in range(1, steps + 1):
        t0 = time.perf_counter()
        step(t)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))  # a neighbour's burst on a shared machine moves one step, not the median
    xv = x[: min(len(x), 512)]
    raw_scores(net, xv[:64], fast=s.fast)  # warm-up
    t0 = time.perf_counter()
    raw_scores(net, xv, fast=s.fast)
    eval_s = (time.perf_counter() - t0) / len(xv)
    return {"step_seconds": step_s, "eval_seconds_per_cutout": eval_s, "steps": steps, "batch": s.batch,
            "device": str(device), "threads": torch.get_num_threads(), "bf16_autocast": bool(amp)}


@dataclass
class TrainResult:
    """What :func:`train` returns: the chosen network (weights loaded, eval mode) and the history."""

    net: DeepSZNet
    settings: TrainSettings
    best_ratio: int
    best_select: float
    per_ratio: list[dict]
    val_raw: np.ndarray
    val_labels: np.ndarray
    val_rows: np.ndarray
    steps: int
    seconds: float
    log: list[dict]
    stopped_by_time: bool = False


def _write_log(path: Path | None, log: list[dict]) -> None:
    if path is None:
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LOG_COLUMNS)
    for row in log:
        w.writerow(["" if row.get(c) is None else row[c] for c in LOG_COLUMNS])
    write_text(path, buf.getvalue())


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint (weights-only unpickler); InputError naming the file if unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no training checkpoint to resume from")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise InputError(path, f"not a readable training checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "not an szviewer CNN training checkpoint")
    return ck


#: settings that may differ between a checkpoint and its resume: neither changes what a step computes (a run that
#: an opt-in time budget already ended stays ended)
RESUME_MAY_CHANGE = ("max_seconds", "checkpoint_every")


def _same_run(a: dict, b: dict) -> bool:
    return ({k: v for k, v in a.items() if k not in RESUME_MAY_CHANGE}
            == {k: v for k, v in b.items() if k not in RESUME_MAY_CHANGE})


def train(store=None, settings: TrainSettings | None = None, *, data: tuple[SplitData, SplitData] | None = None,
          checkpoint_path: str | Path | None = None, log_path: str | Path | None = None, resume: bool = False,
          select: Callable[[np.ndarray, np.ndarray], float] | None = None, device: str = "cpu",
          checkpoint_seconds: float | None = CHECKPOINT_SECONDS, progress: ProgressFn | None = None,
          cancelled: CancelFn | None = None, init_state: dict | None = None) -> TrainResult:
    """Train the DeepSZ CNN on the 'train' rows of ``store`` (or on in-memory ``data`` = (train, val)).

    ``checkpoint_path``: where the checkpoint goes (None: no checkpoints); it is written every
    ``settings.checkpoint_every`` batches, after any batch that ends ``checkpoint_seconds`` of wall time since the
    last one (None: no wall-time rule), and at the end of each ratio. ``log_path``: a CSV training log
    (step, ratio, step_in_ratio, lr, loss, val_loss), rewritten atomically with each checkpoint and at the end.
    ``resume``: continue from ``checkpoint_path`` (its settings must equal ``settings`` except for
    :data:`RESUME_MAY_CHANGE`); the result is bit-identical to an uninterrupted run.
    Progress is reported between batches as (position in the plan of :func:`plan_max_steps` batches, that
    maximum, message with an "at most ... left" estimate from the measured step time); ``cancelled`` is checked
    between batches and raises :class:`~szviewer.errors.Cancelled`, leaving the last checkpoint valid.
    ``init_state``: a state dict of the same architecture to start from instead of the random initialisation
    (fine-tuning; ``settings.init_from`` names it, so a checkpoint of another start is never resumed).
    """
    s = settings or TrainSettings.preset_named("paper")
    if (init_state is None) != (s.init_from is None):
        raise ValueError("init_state and settings.init_from go together")
    t0 = _clock()
    ck_path = None if checkpoint_path is None else Path(checkpoint_path)
    log_path = None if log_path is None else Path(log_path)
    ck = None
    if resume:
        if ck_path is None:
            raise ValueError("resume needs a checkpoint_path")
        ck = load_checkpoint(ck_path)
        if not _same_run(ck["settings"], s.to_dict()):
            raise InputError(ck_path, "the checkpoint was made with other training settings "
                                      f"(preset {ck['settings'].get('preset')!r}); train without --resume")
    if data is None:
        if store is None:
            raise ValueError("train needs a cutout store or in-memory data")
        tr = load_split(store, "train", s.level, progress=progress, cancelled=cancelled)
        va = load_split(store, "val", s.level, progress=progress, cancelled=cancelled)
    else:
        tr, va = data
    if tr.n_pos == 0:
        raise InputError(getattr(store, "path", None), "the training split has no positive cutouts")
    data_id = {"n_train": int(tr.y.size), "n_train_pos": tr.n_pos, "n_val": int(va.y.size), "n_val_pos": va.n_pos}
    if ck is not None and ck.get("data", data_id) != data_id:
        raise InputError(ck_path, f"the checkpoint was made on other cutouts ({ck.get('data')}, now {data_id}); "
                                  "train without --resume")
    pos_rows = np.nonzero(tr.y)[0]
    neg_rows = np.nonzero(~tr.y)[0]
    select = select or (lambda raw, y: -weighted_val_loss(raw, y, None))

    torch.manual_seed(s.seed)
    net = DeepSZNet(s.net)
    if init_state is not None:
        net.load_state_dict(init_state)
    net = net.to(device)
    if s.fast:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    dev_type = torch.device(device).type
    amp_dtype = torch.bfloat16
    amp = s.fast and bf16_autocast_pays(dev_type)

    st = {"ratio_index": 0, "k": 0, "step": 0, "best_loss": math.inf, "since": 0, "elapsed": 0.0, "stop": False,
          "best_select": -math.inf, "best_ratio": None, "per_ratio": [], "log": [], "checkpoints": 0}
    ratio_best: dict | None = None
    overall_best: dict | None = None
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        st = ck["state"]
        ratio_best = ck["ratio_best"]
        overall_best = ck["overall_best"]

    t_run = _clock()
    elapsed0 = float(st.get("elapsed", 0.0))
    last_ck = [t_run]
    cap = _ratio_cap(s)
    total = plan_max_steps(s)
    pos0 = plan_position(s, st["ratio_index"], st["k"])  # where this process starts in the plan

    def checkpoint():
        last_ck[0] = _clock()
        if ck_path is None:
            return
        st["elapsed"] = elapsed0 + last_ck[0] - t_run
        st["checkpoints"] = int(st.get("checkpoints", 0)) + 1
        _save_checkpoint(ck_path, {"format": CHECKPOINT_FORMAT, "settings": s.to_dict(), "data": data_id, "state": st,
                                   "model": net.state_dict(), "optimizer": opt.state_dict(),
                                   # the schedule and the sampler are pure functions of these counters:
                                   "scheduler": {"ratio": s.ratios[min(st["ratio_index"], len(s.ratios) - 1)],
                                                 "step_in_ratio": st["k"], "lr": learning_rate(s, st["k"])},
                                   "sampler": {"seed": s.seed, "step": st["step"]},
                                   "ratio_best": ratio_best, "overall_best": overall_best})
        _write_log(log_path, st["log"])

    def eta(pos: int) -> str:
        """'at most N min left': the plan's remaining batches at this run's measured seconds per batch."""
        done = pos - pos0
        if done < 2:
            return "measuring the step time"
        left = (_clock() - t_run) / done * (total - pos)
        if s.max_seconds is not None:
            left = min(left, max(0.0, s.max_seconds - (elapsed0 + _clock() - t_run)))
        return f"at most {format_duration(left)} left"

    y_all = torch.from_numpy(tr.y.astype(np.int64))
    net.train()
    while st["ratio_index"] < len(s.ratios):
        r = s.ratios[st["ratio_index"]]
        while True:
            k = st["k"]
            if k % s.eval_every == 0:
                vloss = weighted_val_loss(raw_scores(net, va.x, fast=s.fast), va.y, r)
                if st["log"] and st["log"][-1]["step"] == st["step"] and st["log"][-1]["ratio"] == r:
                    st["log"][-1]["val_loss"] = vloss
                else:
                    st["log"].append({"step": st["step"], "ratio": r, "step_in_ratio": k, "lr": None,
                                      "loss": None, "val_loss": vloss})
                if vloss < st["best_loss"]:
                    st["best_loss"], st["since"] = vloss, 0
                    ratio_best = _clone_state(net)
                elif k > 0:
                    st["since"] += s.eval_every
            over_time = s.max_seconds is not None and elapsed0 + _clock() - t_run > s.max_seconds
            if st["since"] >= s.patience or k >= cap or over_time:
                st["stop"] = st["stop"] or over_time
                break
            check_cancel(cancelled, "training")
            is_pos, idx, aug = batch_plan(s.seed, st["step"], r, pos_rows.size, neg_rows.size, s.batch)
            rows = np.where(is_pos, pos_rows[idx % max(pos_rows.size, 1)], neg_rows[idx % max(neg_rows.size, 1)])
            xb = torch.from_numpy(tr.x[rows])
            if s.augment:
                xb = dihedral(xb, aug)
            yb = y_all[torch.from_numpy(rows)]
            xb, yb = xb.to(device), yb.to(device)
            lr = learning_rate(s, k)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(dev_type, dtype=amp_dtype, enabled=amp):
                logits = net(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            st["step"] += 1
            st["k"] += 1
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"training diverged at step {st['step']} (loss {lv})")
            st["log"].append({"step": st["step"], "ratio": r, "step_in_ratio": st["k"], "lr": lr, "loss": lv,
                              "val_loss": None})
            if progress is not None:
                pos = plan_position(s, st["ratio_index"], st["k"])
                progress(pos, total, f"r={r} ({st['ratio_index'] + 1}/{len(s.ratios)}) loss={lv:.3f} "
                                     f"best val={st['best_loss']:.3f}, {eta(pos)}")
            if ck_path is not None and (st["step"] % s.checkpoint_every == 0 or (
                    checkpoint_seconds is not None and _clock() - last_ck[0] >= checkpoint_seconds)):
                checkpoint()
        # end of the ratio's epoch: best weights of this ratio, scored on the plain validation set
        net.load_state_dict(ratio_best)
        raw = raw_scores(net, va.x, fast=s.fast)
        score = float(select(raw, va.y))
        st["per_ratio"].append({"ratio": r, "batches": st["k"], "best_val_loss": st["best_loss"],
                                "plain_val_loss": weighted_val_loss(raw, va.y, None), "select": score,
                                "end_step": st["step"], "ended_by": "time budget" if st["stop"] else
                                "patience" if st["k"] < cap else "batch cap"})
        if score > st["best_select"] or overall_best is None:
            st["best_select"], st["best_ratio"] = score, r
            overall_best = ratio_best
        st["ratio_index"] += 1
        st["k"], st["best_loss"], st["since"] = 0, math.inf, 0
        if st["stop"]:  # the opt-in time budget ran out: finish with the ratios done so far
            st["ratio_index"] = len(s.ratios)
        if progress is not None:
            pos = plan_position(s, st["ratio_index"], 0)
            progress(pos, total, f"ratio {r} done after {st['per_ratio'][-1]['batches']} batches, {eta(pos)}")
        checkpoint()
    net.load_state_dict(overall_best)
    net.eval()
    val_raw = raw_scores(net, va.x, fast=s.fast)
    _write_log(log_path, st["log"])
    return TrainResult(net=net, settings=s, best_ratio=int(st["best_ratio"]), best_select=float(st["best_select"]),
                       per_ratio=list(st["per_ratio"]), val_raw=val_raw, val_labels=va.y, val_rows=va.rows,
                       steps=int(st["step"]), seconds=_clock() - t0, log=st["log"],
                       stopped_by_time=bool(st["stop"]))
