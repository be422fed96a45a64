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
initialised from ``torch.manual_seed(seed)``. A checkpoint (weights, optimizer momentum, counters, the best
weights of the ratio and overall, the log) is written atomically every ``checkpoint_every`` batches and at
the end of each ratio; ``resume=True`` restores it and finishes with the same weights as an uninterrupted run.

Fast path (``fast=True``): channels-last tensors, and bf16 autocast where bf16 runs in hardware (CPU AVX-512
BF16 / AMX, CUDA), about 2-3x faster there; elsewhere (AVX2) fp32, since emulated bf16 is slower. The weights
and optimizer stay fp32.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from szviewer.atomic import atomic_path, write_text
from szviewer.cnn.fused import bf16_native
from szviewer.cnn.model import DeepSZNet, NetConfig, raw_score
from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel

CHECKPOINT_FORMAT = "szviewer-cnn-checkpoint"
LOG_COLUMNS = ("step", "ratio", "step_in_ratio", "lr", "loss", "val_loss")


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of the dynamic stratified schedule; ``TrainSettings.preset('paper' | 'quick')``."""

    preset: str = "paper"
    ratios: tuple[int, ...] = tuple(range(1, 21))
    batch: int = 128
    lr: float = 5e-3
    momentum: float = 0.9
    weight_decay: float = 3e-3
    warmup_batches: int = 500
    warmup_factor: float = 1.0 / 3.0
    lr_steps: tuple[int, ...] = (1000,)
    lr_gamma: float = 0.1
    eval_every: int = 100
    patience: int = 1000
    max_batches_per_ratio: int | None = None
    checkpoint_every: int = 500
    max_seconds: float | None = None
    seed: int = 0
    fast: bool = False
    augment: bool = False
    level: str = "all"
    net: NetConfig = field(default_factory=NetConfig)

    @classmethod
    def preset_named(cls, name: str, **overrides) -> TrainSettings:
        """'paper': exactly paper section 2.2.2. 'quick': the same kind of schedule sized for ~30 min on 2 CPU cores.
        'long': between the two, for a larger sky on a CPU (about an hour on 2 cores for 1,000 deg^2).

        'quick' uses batch 64, ratios 1, 2, 4 (r doubles instead of += 1), a 100-batch warm-up, lr x0.1 after 300
        batches, validation every 50 batches, 200-batch patience and at most 400 batches per ratio (<= 1,200
        batches, about 10-20 minutes on 2 CPU cores), bf16 autocast + channels-last, dihedral augmentation
        (rotations and flips of the cutout, which leave the sky statistics unchanged), the fixed asinh input
        scaling, and a 1,500 s time budget: if it runs out, the current ratio ends at once with its best weights
        and training stops (then, and only then, the result depends on the machine's speed). On the seed-2
        synthetic sky this schedule generalised better (F1 0.54, AUC 0.92) than batch 128 with ratios 1, 2, 4, 8
        and 500 batches per ratio (F1 0.45, AUC 0.85); see models/README.md.

        'long' keeps quick's fast path, augmentation and input scaling but the paper's batch of 128, ratios 1, 2, 4,
        8, a 300-batch warm-up, lr x0.1 after 1,500 batches, validation every 100 batches, 600-batch patience and at
        most 2,000 batches per ratio (<= 8,000 batches), with no time budget. It is meant for skies with a thousand
        or more training positives (1,000 deg^2 of the default generator has 2,340), where quick's 1,200 batches of
        64 draw each positive only about ten times; the shipped model was trained with it.
        """
        if name == "paper":
            s = cls(preset="paper")
        elif name == "quick":
            s = cls(preset="quick", batch=64, ratios=(1, 2, 4), warmup_batches=100, lr_steps=(300,), eval_every=50,
                    patience=200, max_batches_per_ratio=400, checkpoint_every=100, max_seconds=1500.0, fast=True,
                    augment=True, net=NetConfig(scaling="fixed"))
        elif name == "long":
            s = cls(preset="long", batch=128, ratios=(1, 2, 4, 8), warmup_batches=300, lr_steps=(1500,),
                    eval_every=100, patience=600, max_batches_per_ratio=2000, checkpoint_every=200, max_seconds=None,
                    fast=True, augment=True, net=NetConfig(scaling="fixed"))
        else:
            raise ValueError(f"unknown preset {name!r} (paper, quick or long)")
        return replace(s, **overrides) if overrides else s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = list(self.ratios)
        d["lr_steps"] = list(self.lr_steps)
        d["net"] = self.net.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        d = dict(d)
        d["ratios"] = tuple(d["ratios"])
        d["lr_steps"] = tuple(d["lr_steps"])
        d["net"] = NetConfig.from_dict(d["net"])
        return cls(**d)


def learning_rate(s: TrainSettings, k: int) -> float:
    """The learning rate of the k-th batch (0-based) of a ratio: linear warm-up from lr*factor, steps x gamma."""
    lr = s.lr * s.lr_gamma ** sum(k >= b for b in s.lr_steps)
    if k < s.warmup_batches:
        lr *= s.warmup_factor + (1.0 - s.warmup_factor) * k / s.warmup_batches
    return lr


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
    """bf16 autocast only where bf16 runs in hardware (CUDA with bf16, CPU AVX-512 BF16 / AMX): emulated bf16 on
    an AVX2 CPU is several times slower than fp32 and would make a run's length depend on the machine."""
    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bf16_native()


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


def train(store=None, settings: TrainSettings | None = None, *, data: tuple[SplitData, SplitData] | None = None,
          checkpoint_path: str | Path | None = None, log_path: str | Path | None = None, resume: bool = False,
          select: Callable[[np.ndarray, np.ndarray], float] | None = None, device: str = "cpu",
          progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> TrainResult:
    """Train the DeepSZ CNN on the 'train' rows of ``store`` (or on in-memory ``data`` = (train, val)).

    ``checkpoint_path``: where the checkpoint goes (None: no checkpoints). ``log_path``: a CSV training log
    (step, ratio, step_in_ratio, lr, loss, val_loss), rewritten atomically with each checkpoint and at the end.
    ``resume``: continue from ``checkpoint_path`` (its settings must equal ``settings``).
    Progress is reported between batches as (batches done, planned maximum, message); ``cancelled`` is
    checked between batches and raises :class:`~szviewer.errors.Cancelled`, leaving the last checkpoint valid.
    """
    s = settings or TrainSettings.preset_named("paper")
    t0 = time.perf_counter()
    ck_path = None if checkpoint_path is None else Path(checkpoint_path)
    log_path = None if log_path is None else Path(log_path)
    ck = None
    if resume:
        if ck_path is None:
            raise ValueError("resume needs a checkpoint_path")
        ck = load_checkpoint(ck_path)
        if ck["settings"] != s.to_dict():
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
    net = DeepSZNet(s.net).to(device)
    if s.fast:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    dev_type = torch.device(device).type
    amp_dtype = torch.bfloat16
    amp = s.fast and bf16_autocast_pays(dev_type)

    st = {"ratio_index": 0, "k": 0, "step": 0, "best_loss": math.inf, "since": 0, "elapsed": 0.0, "stop": False,
          "best_select": -math.inf, "best_ratio": None, "per_ratio": [], "log": []}
    ratio_best: dict | None = None
    overall_best: dict | None = None
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        st = ck["state"]
        ratio_best = ck["ratio_best"]
        overall_best = ck["overall_best"]

    t_run = time.perf_counter()
    elapsed0 = float(st.get("elapsed", 0.0))

    def checkpoint():
        if ck_path is None:
            return
        st["elapsed"] = elapsed0 + time.perf_counter() - t_run
        _save_checkpoint(ck_path, {"format": CHECKPOINT_FORMAT, "settings": s.to_dict(), "data": data_id, "state": st,
                                   "model": net.state_dict(), "optimizer": opt.state_dict(),
                                   # the schedule and the sampler are pure functions of these counters:
                                   "scheduler": {"ratio": s.ratios[min(st["ratio_index"], len(s.ratios) - 1)],
                                                 "step_in_ratio": st["k"], "lr": learning_rate(s, st["k"])},
                                   "sampler": {"seed": s.seed, "step": st["step"]},
                                   "ratio_best": ratio_best, "overall_best": overall_best})
        _write_log(log_path, st["log"])

    cap = s.max_batches_per_ratio or (20 * s.patience)
    total = len(s.ratios) * cap
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
            over_time = s.max_seconds is not None and elapsed0 + time.perf_counter() - t_run > s.max_seconds
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
                progress(st["ratio_index"] * cap + st["k"], total,
                         f"r={r} loss={lv:.3f} best val={st['best_loss']:.3f}")
            if ck_path is not None and st["step"] % s.checkpoint_every == 0:
                checkpoint()
        # end of the ratio's epoch: best weights of this ratio, scored on the plain validation set
        net.load_state_dict(ratio_best)
        raw = raw_scores(net, va.x, fast=s.fast)
        score = float(select(raw, va.y))
        st["per_ratio"].append({"ratio": r, "batches": st["k"], "best_val_loss": st["best_loss"],
                                "plain_val_loss": weighted_val_loss(raw, va.y, None), "select": score,
                                "end_step": st["step"]})
        if score > st["best_select"] or overall_best is None:
            st["best_select"], st["best_ratio"] = score, r
            overall_best = ratio_best
        st["ratio_index"] += 1
        st["k"], st["best_loss"], st["since"] = 0, math.inf, 0
        if st["stop"]:  # the time budget ran out: finish with the ratios done so far
            st["ratio_index"] = len(s.ratios)
        checkpoint()
    net.load_state_dict(overall_best)
    net.eval()
    val_raw = raw_scores(net, va.x, fast=s.fast)
    _write_log(log_path, st["log"])
    return TrainResult(net=net, settings=s, best_ratio=int(st["best_ratio"]), best_select=float(st["best_select"]),
                       per_ratio=list(st["per_ratio"]), val_raw=val_raw, val_labels=va.y, val_rows=va.rows,
                       steps=int(st["step"]), seconds=time.perf_counter() - t0, log=st["log"])
