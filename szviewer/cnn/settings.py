"""The CNN's settings as plain dataclasses, and the arithmetic of a training plan; no torch here.

:class:`NetConfig` fixes the network's shape and input scaling (:mod:`szviewer.cnn.model`), :class:`TrainSettings`
the dynamic stratified schedule (:mod:`szviewer.cnn.train`, paper section 2.2.2). Both import without torch, so
the app's dialogs and the CLI can show a preset, its plan (:func:`plan_max_steps`) and a time estimate
(:func:`estimate_seconds` of rates measured by :func:`szviewer.cnn.train.measure_rates`) without loading it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

SCALINGS = ("minmax", "fixed", "detrend")


def detrend_matrix(npix: int):
    """(npix^2, npix^2) float64 projection that removes the least-squares quadratic surface (1, y, x, y^2, x y,
    x^2) from a flattened ``npix x npix`` cutout: ``flat @ P`` is the residual (P symmetric, P @ P = P).

    An 8' cutout of a map with atmospheric 1/f noise (act-dr6, so-lat) is dominated by modes larger than itself:
    on act-dr6's 0.5' cutouts the per-pixel rms is 134 / 186 / 879 uK at 90 / 150 / 220 GHz, 38 / 33 / 108 uK
    after this projection, while a 2' cluster's decrement (median -38 uK at 90 GHz for the positives) survives
    it (``benchmarks/RESULTS.md``)."""
    import numpy as np

    c = np.arange(npix) - (npix - 1) / 2.0
    y, x = np.meshgrid(c, c, indexing="ij")
    y, x = y.ravel() / npix, x.ravel() / npix
    a = np.stack([np.ones_like(x), y, x, y * y, x * y, x * x], axis=1)
    q, _ = np.linalg.qr(a)
    return np.eye(npix * npix) - q @ q.T


#: the training presets of :meth:`TrainSettings.preset_named`
PRESETS = ("paper", "quick", "long", "finetune")


def stem_stride_for(npix: int) -> int:
    """The stem stride for ``npix``-pixel 8' cutouts: 2 at the paper's 32 (0.25'), 1 below (0.5' and coarser)."""
    return 2 if int(npix) >= 32 else 1


@dataclass(frozen=True)
class NetConfig:
    """Everything that fixes the network's shape and input scaling (stored in the model card).

    ``stem_stride``: the stride of the stem's second convolution, 2 in the paper (32 x 32 cutouts of 0.25').
    Cutouts of coarser pixels (16 x 16 at 0.5') use 1, so every later layer sees the same angles as the paper's
    (the max-pool's output is 8 x 8 of 1', the trunk ends at 2 x 2 of 4') and the weights have the paper model's
    shapes (``szviewer train --init-from``); :func:`stem_stride_for`."""

    width: int = 64
    blocks: tuple[int, ...] = (3, 4, 6)
    head: int = 256
    in_bands: int = 3
    npix: int = 32
    scaling: str = "minmax"
    scale_uk: tuple[float, ...] = (100.0, 100.0, 100.0)
    stem_stride: int = 2

    def __post_init__(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, not {self.scaling!r}")
        if len(self.scale_uk) != self.in_bands:
            raise ValueError(f"scale_uk needs {self.in_bands} values")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, not {self.stem_stride}")
        if self.npix % self.total_stride:
            raise ValueError(f"npix {self.npix} is not divisible by the network's total stride {self.total_stride}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d["scale_uk"] = list(self.scale_uk)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        d = dict(d)
        d["blocks"] = tuple(int(b) for b in d["blocks"])
        d["scale_uk"] = tuple(float(s) for s in d["scale_uk"])
        d["stem_stride"] = int(d.get("stem_stride", 2))  # files from before it existed: the paper's 2
        return cls(**d)

    @property
    def per_pixel_scaling(self) -> bool:
        """True for the 'fixed' input scaling, a function of each pixel alone: the only one under which windows
        can share features, so the network can score a whole map at once (:mod:`szviewer.cnn.fcn`)."""
        return self.scaling == "fixed"

    @property
    def stage1_stride(self) -> int:
        """Pixels between the first stage's outputs: the stem's stride x the 2 x 2 max-pool (4 for the paper)."""
        return 2 * self.stem_stride

    @property
    def total_stride(self) -> int:
        """Pixels between the last stage's outputs: 16 for the paper network (4' at 0.25'), 8 with stem_stride 1."""
        return self.stage1_stride * 2 ** (len(self.blocks) - 1)

    @property
    def feature_size(self) -> int:
        """Flattened size of the last stage's output: 1024 x 2 x 2 = 4096 for the paper network."""
        side = self.npix // self.total_stride
        return self.width * 4 * 2 ** (len(self.blocks) - 1) * side * side


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of the dynamic stratified schedule; ``TrainSettings.preset_named(name)`` (:data:`PRESETS`).

    Sizes are in batches (steps). ``max_seconds`` (None in every preset) is an opt-in wall-clock budget: when it
    runs out the current ratio ends with its best weights and training stops, and only then does the result
    depend on the machine's speed. ``init_from``: the SHA-256 of the model whose weights the network starts from
    (None: a seeded random initialisation), so a checkpoint is resumed only from the same start.
    """

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
    init_from: str | None = None

    @classmethod
    def preset_named(cls, name: str, **overrides) -> TrainSettings:
        """'paper': exactly paper section 2.2.2. 'quick': the same kind of schedule for ~100 deg^2, at most 1,200
        batches of 64. 'long': between the two, for 1,000 deg^2 or more, at most 8,000 batches of 128.

        Every preset is a number of steps, never a wall-clock budget, so it gives the same run on any machine up to
        floating-point differences (bf16 autocast where bf16 is native, fp32 elsewhere). How long that takes here
        is measured, not promised: :func:`measure_rates` and :func:`estimate_seconds` (``szviewer train`` prints
        it, the app's train dialog shows it). ``max_seconds`` stays available as an explicit override only.

        'quick' uses batch 64, ratios 1, 2, 4 (r doubles instead of += 1), a 100-batch warm-up, lr x0.1 after 300
        batches, validation every 50 batches, 200-batch patience and at most 400 batches per ratio (<= 1,200
        batches), channels-last (+ bf16 autocast where native), dihedral augmentation (rotations and flips of the
        cutout, which leave the sky statistics unchanged) and the fixed asinh input scaling. On the seed-2
        synthetic sky this schedule generalised better (F1 0.54, AUC 0.92) than batch 128 with ratios 1, 2, 4, 8
        and 500 batches per ratio (F1 0.45, AUC 0.85); see models/README.md. (It used to stop after 1,500 s of wall
        time as well, which made its result depend on the CPU; it no longer does.)

        'long' keeps quick's fast path, augmentation and input scaling but the paper's batch of 128, ratios 1, 2, 4,
        8, a 300-batch warm-up, lr x0.1 after 1,500 batches, validation every 100 batches, 600-batch patience and at
        most 2,000 batches per ratio (<= 8,000 batches). It is meant for skies with a thousand or more training
        positives (1,000 deg^2 of the default generator has 2,340), where quick's 1,200 batches of 64 draw each
        positive only about ten times; the shipped model was trained with it.

        'finetune' is for a network that starts from a trained model (``szviewer train --init-from``, recorded
        as ``init_from``, the SHA-256 of that model's payload): batch 64, ratios 1, 2, 4, lr 1e-3 (a fifth of
        the others') after a 50-batch warm-up and x0.1 after 400 batches, validation every 100 batches,
        300-batch patience, at most 600 batches per ratio (<= 1,800 batches), quick's fast path and
        augmentation. It adapts the paper model to another instrument's cutouts (models/README.md: act-dr6).
        """
        if name == "paper":
            s = cls(preset="paper")
        elif name == "quick":
            s = cls(preset="quick", batch=64, ratios=(1, 2, 4), warmup_batches=100, lr_steps=(300,), eval_every=50,
                    patience=200, max_batches_per_ratio=400, checkpoint_every=100, fast=True, augment=True,
                    net=NetConfig(scaling="fixed"))
        elif name == "long":
            s = cls(preset="long", batch=128, ratios=(1, 2, 4, 8), warmup_batches=300, lr_steps=(1500,),
                    eval_every=100, patience=600, max_batches_per_ratio=2000, checkpoint_every=200, fast=True,
                    augment=True, net=NetConfig(scaling="fixed"))
        elif name == "finetune":
            s = cls(preset="finetune", batch=64, ratios=(1, 2, 4), lr=1e-3, warmup_batches=50, lr_steps=(400,),
                    eval_every=100, patience=300, max_batches_per_ratio=600, checkpoint_every=100, fast=True,
                    augment=True, net=NetConfig(scaling="fixed"))
        else:
            raise ValueError(f"unknown preset {name!r} ({', '.join(PRESETS)})")
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


def plan_max_steps(s: TrainSettings) -> int:
    """The most batches a run of ``s`` can take: every ratio to its cap (patience usually ends ratios earlier)."""
    return len(s.ratios) * _ratio_cap(s)


def _ratio_cap(s: TrainSettings) -> int:
    return int(s.max_batches_per_ratio or (20 * s.patience))


def plan_max_evals(s: TrainSettings) -> int:
    """The most validation passes of a run: one every ``eval_every`` batches, one at each ratio's end, one last."""
    cap = _ratio_cap(s)
    return len(s.ratios) * (cap // s.eval_every + 1 + 1) + 1


def plan_position(s: TrainSettings, ratio_index: int, k: int) -> int:
    """Where step ``k`` of ratio number ``ratio_index`` lies in the plan of :func:`plan_max_steps` batches."""
    return min(ratio_index, len(s.ratios)) * _ratio_cap(s) + k


def estimate_seconds(s: TrainSettings, rates: dict, n_val: int, n_read: int = 0, n_score: int = 0,
                     done_steps: int = 0) -> dict:
    """The longest a run of ``s`` can take here, from measured ``rates`` (:func:`measure_rates`).

    ``n_val``: validation cutouts (scored at every validation pass); ``n_read``: cutouts read into memory first;
    ``n_score``: cutouts scored after training (calibration and metrics); ``done_steps``: plan positions already
    done (a resumed run). Returns {'steps', 'evals', 'seconds' (upper bound), 'step_seconds', parts}.
    """
    total = plan_max_steps(s)
    left = max(total - int(done_steps), 0)
    frac = left / total if total else 0.0
    evals = int(math.ceil(plan_max_evals(s) * frac))
    parts = {"steps": left * rates["step_seconds"], "validation": evals * n_val * rates["eval_seconds_per_cutout"],
             "reading": n_read * rates.get("read_seconds_per_cutout", 0.0),
             "scoring": n_score * rates["eval_seconds_per_cutout"]}
    seconds = sum(parts.values())
    if s.max_seconds is not None:
        seconds = min(seconds, float(s.max_seconds) + parts["reading"] + parts["scoring"])
    return {"steps": left, "plan_steps": total, "evals": evals, "seconds": seconds,
            "step_seconds": rates["step_seconds"], "parts": parts}


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h', '2.1 days'."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
