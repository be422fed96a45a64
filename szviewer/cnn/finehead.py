"""A distilled fine head: the fully convolutional map on a 1' grid from a 4' pass (issue 13 part 2).

The exact fully convolutional pass (:class:`szviewer.cnn.fcn.FCNPlan`) on a grid finer than the trunk's 16-pixel
stride has to run the last stages once per phase: stage 3 at 16 times its native density on the 1' grid, 72% of
the multiplications, and no computation can share them (``benchmarks/RESULTS.md``). The probability map of a
cluster is a plateau about a 6' cell wide whose *edges* carry its position; a bilinear interpolation of the 4'
map misplaces them (median offset 0.76' against 0.30' on the 1' map, measured).

This module predicts the 1' map instead (the "detection head trained on the same labels" route of the issue, with
the exact 1' map as the teacher): the network runs once at its own 16-pixel stride (:class:`FCNPlan` at the
total stride, checked bf16 where native), and a small convolutional head (:class:`FineHead`) reads

- the first stage's output of that same pass (computed once per pixel anyway, 256 channels every 4 pixels =
  1' at 0.25'; the 8 x 8 of them under a window), and
- the 4' raw map interpolated bilinearly to the 1' origins,

and returns the 1' raw score as the interpolation plus a learned correction. It is trained by distillation
(:func:`distil`): on maps of the model's instrument, the exact 1' pass is the target, so no labels are needed
and the target is exactly the map it replaces. What it costs and how far it is from the exact map, in
probability and in the catalogue it gives, is measured in ``benchmarks/RESULTS.md``; the exact pass stays the
reference (``dense_job(method='fcn')``).

A head belongs to one model: it is stored beside the model file (:func:`head_path`) with the model's payload
SHA-256 and refused for any other model.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from szviewer.cnn.fcn import FCNPlan
from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel

HEAD_FORMAT = "szviewer-finehead"
HEAD_VERSION = 1


@dataclass(frozen=True)
class FineHeadConfig:
    """Widths of :class:`FineHead`: ``features`` (the first stage's channels), ``reduce`` (a 1 x 1 projection of
    them), ``hidden`` (the window convolution's output), ``context`` (a 5 x 5 convolution of the interpolated 4'
    score), ``window`` (first-stage positions under a window: npix / 4)."""

    features: int = 256
    reduce: int = 24
    hidden: int = 48
    context: int = 8
    window: int = 8


class FineHead(nn.Module):
    """raw_1'(o) = up(o) + mix([window conv of the window's first-stage features, up / 8, ctx(up / 8)]).

    ``f1`` (b, features, h, w): first-stage output, row q at pixel 4 q; ``up`` (b, 1, h - window + 1,
    w - window + 1): the 4' raw map interpolated to the 1' window origins (origin 4 i reads rows i .. i + 7)."""

    def __init__(self, config: FineHeadConfig | None = None):
        super().__init__()
        c = self.config = config or FineHeadConfig()
        self.reduce = nn.Conv2d(c.features, c.reduce, 1)
        self.window = nn.Conv2d(c.reduce, c.hidden, c.window)
        self.ctx = nn.Conv2d(1, c.context, 5, padding=2)
        self.mix = nn.Sequential(nn.Conv2d(c.hidden + 1 + c.context, c.hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c.hidden, 1, 1))

    def forward(self, f1: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self.forward_reduced(self.reduced(f1), up)

    def reduced(self, f1: torch.Tensor) -> torch.Tensor:
        """The head's first step, relu(1 x 1 projection) of the first-stage features: per position, so the pass
        applies it strip by strip and hands over ``reduce`` channels instead of ``features`` (10x fewer bytes)."""
        return F.relu(self.reduce(f1))

    def forward_reduced(self, r: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from :meth:`reduced` features."""
        z = F.relu(self.window(r))
        u = up / 8.0
        return up + self.mix(torch.cat([z, u, F.relu(self.ctx(u))], 1))


def upsample(coarse: np.ndarray, shape: tuple[int, int], factor: int) -> np.ndarray:
    """Bilinear interpolation of a raw map on origins ``factor`` fine steps apart to ``shape`` fine origins (fine
    origin i at coarse i / factor; past the last coarse origin the edge value)."""
    from scipy.ndimage import map_coordinates

    gy, gx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64) / factor
    return map_coordinates(coarse.astype(np.float32), [gy, gx], order=1, mode="nearest").astype(np.float32)


class FineHeadPlan:
    """The 1' raw map of a model from its 4' fully convolutional pass and a :class:`FineHead` (module docstring).

    Same interface as :class:`FCNPlan` for the dense job: :meth:`raw_map`, :attr:`stride_pix` (4: 1' at 0.25'),
    :attr:`stats`; ``precision`` and ``budget_mb`` go to the 4' pass (checked bf16 where native). ``rows``:
    1' rows of the head per chunk (memory)."""

    def __init__(self, net, head: FineHead, device: str = "cpu", precision: str = "auto",
                 budget_mb: float = 2048.0, rows: int = 64):
        self.coarse = FCNPlan(net, net.config.total_stride, device=device, precision=precision,
                              budget_mb=budget_mb)
        self.stride_pix = self.coarse.feature_spacing
        self.factor = self.coarse.total_stride // self.stride_pix
        self.head = head.to(self.coarse.device).eval()
        self.device, self.rows, self.config = self.coarse.device, int(rows), net.config

    @property
    def stats(self) -> dict:
        return self.coarse.stats

    @property
    def precision(self) -> str:
        return self.coarse.precision

    def macs_per_pixel(self) -> float:
        """Multiply-accumulates per map pixel: the 4' pass and the head on the 1' grid."""
        c = self.head.config
        per_origin = (c.features * c.reduce + c.window ** 2 * c.reduce * c.hidden + 25 * c.context
                      + 9 * (c.hidden + 1 + c.context) * c.hidden + c.hidden)
        return self.coarse.macs_per_pixel() + per_origin / self.stride_pix ** 2

    def origins(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        n = self.config.npix
        return (np.arange(0, shape[0] - n + 1, self.stride_pix), np.arange(0, shape[1] - n + 1, self.stride_pix))

    def coarse_and_features(self, maps: np.ndarray, progress: ProgressFn | None = None,
                            cancelled: CancelFn | None = None, reduced: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The 4' raw map and the first stage's output (float32, :meth:`FCNPlan.feature_shape`) of one pass; with
        ``reduced`` the head's :meth:`FineHead.reduced` of it instead (``reduce`` channels, what :meth:`apply`
        reads), computed strip by strip inside the pass."""
        maps = np.asarray(maps, dtype=np.float32)
        shape = self.coarse.feature_shape(maps.shape[1:])
        if reduced:
            shape = (self.head.config.reduce,) + shape[1:]
        feats = np.zeros(shape, dtype=np.float32)
        tap = self._reduce_strip if reduced else None
        raw = self.coarse.raw_map(maps, progress, cancelled, features=feats, tap_fn=tap)
        return raw, feats

    @torch.inference_mode()
    def _reduce_strip(self, f: torch.Tensor) -> torch.Tensor:
        return self.head.reduced(f)  # channels-last in and out (a transpose to NCHW costs more than the pass)

    @torch.inference_mode()
    def apply(self, coarse: np.ndarray, feats: np.ndarray, shape: tuple[int, int],
              cancelled: CancelFn | None = None, reduced: bool = False) -> np.ndarray:
        """The head on a pass's outputs (:meth:`coarse_and_features`, with the same ``reduced``): the 1' raw map
        (my, mx) of a map of ``shape``."""
        forward = self.head.forward_reduced if reduced else self.head
        oy, ox = self.origins(shape)
        out = np.empty((oy.size, ox.size), dtype=np.float32)
        if out.size == 0:
            return out
        up = upsample(coarse, out.shape, self.factor)
        w = self.head.config.window
        ctx = 3  # a row of the head reads +-3 rows of ``up`` (context 5 x 5, then mix 3 x 3) and +-1 of ``z``
        for a in range(0, out.shape[0], self.rows):
            check_cancel(cancelled, "fine head")
            b = min(out.shape[0], a + self.rows)
            a0, b0 = max(0, a - ctx), min(out.shape[0], b + ctx)
            f = torch.from_numpy(np.ascontiguousarray(feats[:, a0:b0 + w - 1, :ox.size + w - 1]))[None]
            u = torch.from_numpy(np.ascontiguousarray(up[a0:b0]))[None, None]
            z = forward(f.to(self.device), u.to(self.device))[0, 0].cpu().numpy()
            out[a:b] = z[a - a0:a - a0 + (b - a)]
        return out

    def raw_map(self, maps: np.ndarray, progress: ProgressFn | None = None,
                cancelled: CancelFn | None = None) -> np.ndarray:
        """Raw scores (my, mx) float32 of the windows at :meth:`origins` (1') of ``maps`` (bands, ny, nx) uK."""
        coarse, feats = self.coarse_and_features(maps, progress, cancelled, reduced=True)
        return self.apply(coarse, feats, np.shape(maps)[1:], cancelled, reduced=True)


# --------------------------------------------------------------------------- training (distillation)


@dataclass(frozen=True)
class DistilSettings:
    """:func:`distil`: ``crop`` x ``crop`` 1' origins per training crop, ``crops`` per map (three quarters centred
    on windows with p >= ``hot``, the rest at random), ``epochs``, ``batch``, ``lr`` (one-cycle peak), ``seed``,
    ``val_fraction`` (crops held out to report the error)."""

    crop: int = 48
    crops: int = 24
    hot: float = 0.3
    epochs: int = 30
    batch: int = 16
    lr: float = 3e-3
    seed: int = 0
    val_fraction: float = 1 / 6


def distil_loss(z: torch.Tensor, target: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Squared error of the calibrated probabilities plus 1e-3 of the raw scores' (clipped to [-15, 10])."""
    p, pt = torch.sigmoid(a * z + b), torch.sigmoid(a * target + b)
    return ((p - pt) ** 2).mean() + 1e-3 * ((z.clamp(-15, 10) - target.clamp(-15, 10)) ** 2).mean()


def training_crops(model, maps_list, settings: DistilSettings, plan: FineHeadPlan, teacher: FCNPlan,
                   progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Crops of (first-stage features, interpolated 4' raw, exact 1' raw) from each map of ``maps_list``."""
    rng = np.random.default_rng(settings.seed)
    c, w = settings.crop, plan.head.config.window
    out = {"f": [], "up": [], "t": []}
    n = len(maps_list)
    for k, maps in enumerate(maps_list):
        check_cancel(cancelled, "fine head distillation")
        maps = np.asarray(maps, dtype=np.float32)
        coarse, feats = plan.coarse_and_features(maps, cancelled=cancelled)
        exact = teacher.raw_map(maps, cancelled=cancelled)
        up = upsample(coarse, exact.shape, plan.factor)
        h, wd = exact.shape
        if h < c or wd < c:
            raise ValueError(f"a map of {maps.shape[1:]} pixels is smaller than one {c} x {c} crop of 1' origins")
        hot = np.argwhere(model.calibrate(exact) >= settings.hot)
        picks = []
        if len(hot):
            for j in rng.choice(len(hot), size=min(len(hot), settings.crops * 3 // 4), replace=False):
                picks.append(hot[j] - rng.integers(8, c - 8, size=2))
        while len(picks) < settings.crops:
            picks.append(np.array([rng.integers(0, h - c + 1), rng.integers(0, wd - c + 1)]))
        for i, j in picks:
            i, j = int(np.clip(i, 0, h - c)), int(np.clip(j, 0, wd - c))
            out["f"].append(feats[:, i:i + c + w - 1, j:j + c + w - 1].astype(np.float16))
            out["up"].append(up[i:i + c, j:j + c])
            out["t"].append(exact[i:i + c, j:j + c])
        if progress is not None:
            progress(k + 1, n, "fine head: teacher maps")
    return {key: np.stack(v) for key, v in out.items()}


def distil(model, maps_list, settings: DistilSettings | None = None, config: FineHeadConfig | None = None,
           device: str = "cpu", progress: ProgressFn | None = None, cancelled: CancelFn | None = None
           ) -> tuple[FineHead, dict]:
    """Train a :class:`FineHead` for ``model`` on maps of its instrument ((bands, ny, nx) uK each): the exact 1'
    fully convolutional map is the target (fp32 teacher), :func:`distil_loss`, AdamW with a one-cycle rate.
    Seeded; returns the head and a report (crops, epochs, the held-out crops' loss and largest / 99th percentile
    probability error, the same for plain interpolation)."""
    s = settings or DistilSettings()
    torch.manual_seed(s.seed)
    head = FineHead(config or FineHeadConfig(features=model.config.width * 4,
                                             window=model.config.npix // model.config.stage1_stride))
    plan = FineHeadPlan(model.net, head, device=device)
    teacher = FCNPlan(model.net, plan.stride_pix, device=device, precision="fp32")
    data = training_crops(model, maps_list, s, plan, teacher, progress, cancelled)
    f = torch.from_numpy(data["f"].astype(np.float32))
    up, t = torch.from_numpy(data["up"])[:, None], torch.from_numpy(data["t"])[:, None]
    g = torch.Generator().manual_seed(s.seed)
    idx = torch.randperm(len(f), generator=g)
    nval = max(1, int(round(len(f) * s.val_fraction)))
    val, train = idx[:nval], idx[nval:]
    a, b = float(model.platt.a), float(model.platt.b)
    head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), s.lr, weight_decay=1e-4)
    steps = s.epochs * math.ceil(len(train) / s.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, s.lr, total_steps=steps)
    done = 0
    for _ in range(s.epochs):
        perm = train[torch.randperm(len(train), generator=g)]
        for i in range(0, len(perm), s.batch):
            check_cancel(cancelled, "fine head distillation")
            sel = perm[i:i + s.batch]
            loss = distil_loss(head(f[sel].to(device), up[sel].to(device)), t[sel].to(device), a, b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if progress is not None:
                progress(done, steps, "fine head: training")
    head.eval()
    with torch.inference_mode():
        z = head(f[val].to(device), up[val].to(device)).cpu()
        p, pt, pu = (torch.sigmoid(a * v + b) for v in (z, t[val], up[val]))
        dp, du = (p - pt).abs().flatten(), (pu - pt).abs().flatten()
        report = {"crops": int(len(f)), "val_crops": int(nval), "epochs": s.epochs, "steps": steps,
                  "val_loss": float(distil_loss(z, t[val], a, b)),
                  "val_loss_interpolated": float(distil_loss(up[val], t[val], a, b)), "val_max_dp": float(dp.max()),
                  "val_p99_dp": float(np.percentile(dp.numpy(), 99)),
                  "val_max_dp_interpolated": float(du.max()),
                  "val_p99_dp_interpolated": float(np.percentile(du.numpy(), 99)),
                  "settings": asdict(s), "config": asdict(head.config)}
    return head.cpu(), report


# --------------------------------------------------------------------------- the file beside the model


def head_path(model_path: str | os.PathLike) -> Path:
    """Where a model's fine head lives: ``<model>.finehead.pt`` beside ``<model>.pt``."""
    p = Path(model_path)
    return p.with_name(p.stem + ".finehead.pt")


def save_head(path: str | os.PathLike, head: FineHead, model, card: dict) -> Path:
    """Write the head (fp32 weights, its config, ``card``) bound to ``model``'s payload SHA-256, atomically."""
    from szviewer.atomic import atomic_path

    blob = {"format": HEAD_FORMAT, "version": HEAD_VERSION, "model_sha256": model.card.get("sha256", ""),
            "config": asdict(head.config), "card": card,
            "state": {k: v.detach().cpu().float() for k, v in head.state_dict().items()}}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_head(path: str | os.PathLike, model) -> tuple[FineHead, dict]:
    """The head at ``path`` for ``model`` and its card; an :class:`InputError` naming the file if it is not a
    fine head, is damaged, or was distilled from another model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no fine head here: make one with scripts/train_fine_head.py")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != HEAD_FORMAT:
            raise ValueError("not a szviewer fine head")
        if int(blob.get("version", 0)) > HEAD_VERSION:
            raise ValueError(f"format version {blob['version']} is newer than this szviewer reads ({HEAD_VERSION})")
        head = FineHead(FineHeadConfig(**blob["config"]))
        head.load_state_dict(blob["state"])
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise InputError(path, f"cannot read the fine head ({exc})") from None
    sha = model.card.get("sha256", "")
    if blob.get("model_sha256") != sha:
        raise InputError(path, f"this fine head was distilled from another model (sha256 "
                               f"{str(blob.get('model_sha256'))[:12]}, the model's is {sha[:12]})")
    return head.eval(), dict(blob.get("card", {}))
