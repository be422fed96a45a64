"""Scoring the cutout store with a trained CNN: raw scores and Platt-calibrated probabilities (paper 2.2.2).

Batched inference over the store, read ``chunk`` rows at a time from the HDF5 file. :class:`Scorer` has four
precisions:

- ``'fp32'``: BatchNorm folded, channels-last, fused oneDNN convolutions on CPU (:mod:`szviewer.cnn.fused`);
  equal to the eager network to ~1e-6.
- ``'bf16'``: the same plan in bf16 (first convolution at fp32 accuracy, head in fp32). Fastest, but its
  calibrated probabilities differ from fp32 by up to ~0.01-0.015 on real cutouts.
- ``'checked'``: every cutout in bf16, then the cutouts whose calibrated probability the bf16 rounding could
  have moved by more than ``tol`` (0.01) are scored again in fp32. The bound on the bf16 error of a raw score is
  ``scale * (0.15 + 0.01 |z|)``, about twice the largest error measured on 8,117 real cutouts (0.086), and it is
  checked on every cutout re-scored, which always includes the 8 nearest the decision boundary: if an observed
  error uses more than half of its bound, the bound widens to twice that error and more cutouts are re-scored.
  Probabilities far from the decision boundary barely move with the raw score (most cutouts are clear
  negatives at p ~ 1e-3), so only ~5-10% of cutouts need the fp32 pass.
- ``'auto'`` (the default): ``'checked'`` where bf16 is computed in hardware (a CPU with AVX-512 BF16 or AMX, a
  CUDA GPU of compute capability >= 8), else ``'fp32'`` (AVX2, and AVX-512 without BF16, where bf16 is only
  emulated and slower than fp32). The same rule decides training's bf16 autocast
  (:func:`szviewer.cnn.fused.bf16_native_on`).

On a CPU the fast paths score several batches at once, one per intra-op thread, each on a single-threaded
worker (``streams``, :func:`szviewer.cnn.fused.batched`): 2x one multi-threaded batch at a time on 2 busy cores.

``fast=False`` is the eager fp32 reference (plain modules, no folding). Without the oneDNN fused ops (an older
or unusual PyTorch build) or on a GPU, the fast path runs the folded network as modules instead.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from szviewer.cnn.fused import (
    FusedPlan,
    batched,
    bf16_native_on,
    check_plan,
    default_streams,
    folded,
    fused_available,
)
from szviewer.cnn.model import Bottleneck, DeepSZNet, raw_score
from szviewer.cnn.platt import Platt
from szviewer.progress import CancelFn, ProgressFn, check_cancel

if TYPE_CHECKING:
    from szviewer.cnn.modelfile import CNNModel

PRECISIONS = ("auto", "fp32", "bf16", "checked")
BF16_ERR_ABS = 0.15  # bound on |z_bf16 - z_fp32| at z = 0 (raw-score units), before any doubling
BF16_ERR_REL = 0.01  # ... growing by this fraction of |z|
SENTINELS = 8  # cutouts nearest the decision boundary re-scored in fp32 on every call, to test the bound


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to conv followed by bn (eval mode)."""
    w, bias = folded(conv, bn)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True)
    out.weight.data.copy_(w)
    out.bias.data.copy_(bias)
    return out


def fuse_for_inference(net: DeepSZNet) -> DeepSZNet:
    """A copy of the network with every BatchNorm2d folded into its convolution (eval-mode equivalent)."""
    net = copy.deepcopy(net).eval()
    net.stem[0] = _fold(net.stem[0], net.stem[1])
    net.stem[1] = nn.Identity()
    net.stem[3] = _fold(net.stem[3], net.stem[4])
    net.stem[4] = nn.Identity()
    for m in net.modules():
        if isinstance(m, Bottleneck):
            for c, b in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                setattr(m, c, _fold(getattr(m, c), getattr(m, b)))
                setattr(m, b, nn.Identity())
            if m.downsample is not None:
                m.downsample = nn.Sequential(_fold(m.downsample[0], m.downsample[1]))
    return net


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """'auto' -> 'checked' where bf16 runs in hardware (:func:`szviewer.cnn.fused.bf16_native_on`: CPU AVX-512 BF16
    or AMX, CUDA compute capability >= 8), else 'fp32'. An explicit 'bf16' or 'checked' is obeyed anywhere (slower
    than fp32 where bf16 is emulated)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    return "checked" if bf16_native_on(torch.device(device).type) else "fp32"


def _tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)


class _ModulePath:
    """The folded network as channels-last modules (GPU, or a PyTorch without the fused ops); fp32 or bf16."""

    def __init__(self, net: DeepSZNet, device: torch.device, batch: int, bf16: bool, streams: int = 1):
        net = fuse_for_inference(net).to(device).to(memory_format=torch.channels_last)
        if bf16:  # first convolution (3 input bands) and head stay fp32
            net.stem[3:].to(torch.bfloat16)
            net.stages.to(torch.bfloat16)
        self.net, self.device, self.batch, self.bf16, self.streams = net, device, batch, bf16, streams

    def _forward(self, images: np.ndarray) -> np.ndarray:
        net = self.net
        h = net.scale(_tensor(images, self.device)).contiguous(memory_format=torch.channels_last)
        if self.bf16:
            h = net.stages(net.stem[3:](net.stem[:3](h).to(torch.bfloat16))).float()
        else:
            h = net.stages(net.stem(h))
        return raw_score(net.head(h)).cpu().numpy()

    @torch.inference_mode()
    def raw(self, images: np.ndarray) -> np.ndarray:
        return batched(images, self.batch, self._forward, self.streams)


class _EagerPath:
    """The reference: the plain eval-mode network in fp32."""

    def __init__(self, net: DeepSZNet, device: torch.device, batch: int):
        self.net, self.device, self.batch = net.to(device), device, batch

    @torch.inference_mode()
    def raw(self, images: np.ndarray) -> np.ndarray:
        return batched(images, self.batch, lambda x: raw_score(self.net(_tensor(x, self.device))).cpu().numpy())


def error_bound(raw: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The assumed bound on |z_bf16 - z_fp32| of raw scores ``raw`` (widened by ``scale``), float64."""
    return scale * (BF16_ERR_ABS + BF16_ERR_REL * np.abs(np.asarray(raw, dtype=np.float64)))


def uncertain(raw: np.ndarray, platt: Platt, tol: float, scale: float = 1.0) -> np.ndarray:
    """Cutouts whose calibrated probability could move by more than ``tol`` within the bf16 error bound of ``raw``."""
    z = np.asarray(raw, dtype=np.float64)
    delta = error_bound(z, scale)
    p = platt(z)
    return np.maximum(platt(z + delta) - p, p - platt(z - delta)) > tol


class Scorer:
    """A network prepared for inference at one of :data:`PRECISIONS` (see the module docstring).

    ``platt`` (the model's calibration) and ``tol`` define what 'checked' must hold: calibrated probabilities
    within ``tol`` of fp32. ``stats`` counts the cutouts scored and those re-scored in fp32, and keeps the largest
    observed bf16 error as a fraction of the unwidened bound; ``bound_scale`` is the bound's current widening.
    """

    def __init__(self, net: DeepSZNet, fast: bool = True, device: str = "cpu", batch: int = 128,
                 precision: str = "auto", platt: Platt | None = None, tol: float = 0.01, streams: int | None = None):
        self.device = torch.device(device)
        self.streams = default_streams(device) if streams is None else max(1, int(streams))
        self.fast = fast
        self.precision = resolve_precision(precision, device) if fast else "fp32"
        self.platt = platt or Platt(1.0, 0.0)
        self.tol = tol
        self.batch = batch
        self.bound_scale = 1.0
        self.stats = {"cutouts": 0, "refined": 0, "max_err_over_bound": 0.0}
        net = net.eval()
        self.engine = "eager"
        self._paths: dict[str, object] = {}
        if not fast:
            self._paths["fp32"] = _EagerPath(net, self.device, batch)
            return
        need = {"fp32": ("fp32",), "bf16": ("bf16",), "checked": ("bf16", "fp32")}[self.precision]
        self.engines: dict[str, str] = {}
        for prec in need:
            self._paths[prec] = self._build(net, prec)
        self.engine = self.engines[need[0]]  # the path that scores every cutout

    def _build(self, net: DeepSZNet, prec: str):
        bf16 = prec == "bf16"
        if self.device.type == "cpu" and fused_available():
            try:
                plan = FusedPlan(net, torch.bfloat16 if bf16 else torch.float32, batch=self.batch,
                                 streams=self.streams)
                check_plan(plan, net, atol=0.5 if bf16 else 1e-3)
                self.engines[prec] = "fused"
                return plan
            except (RuntimeError, TypeError, AttributeError):  # ops of another signature, or no bf16 kernels here
                pass
        self.engines[prec] = "modules"
        return _ModulePath(net, self.device, self.batch, bf16, self.streams if self.device.type == "cpu" else 1)

    def raw(self, images: np.ndarray) -> np.ndarray:
        """Raw scores (logit differences) of (n, 3, 32, 32) uK cutouts."""
        images = np.asarray(images)
        self.stats["cutouts"] += len(images)
        if self.precision != "checked":
            return self._paths[self.precision].raw(images)
        z = self._paths["bf16"].raw(images)
        exact = np.zeros(len(z), dtype=bool)
        # sentinels: the cutouts nearest the decision boundary are always re-scored, so the bound is tested on
        # every call even when no cutout falls in the band
        logit = self.platt.a * z.astype(np.float64) + self.platt.b
        todo = np.zeros(len(z), dtype=bool)
        todo[np.argsort(np.abs(logit), kind="stable")[:SENTINELS]] = True
        while True:
            idx = np.nonzero(~exact & (todo | uncertain(z, self.platt, self.tol, self.bound_scale)))[0]
            if idx.size == 0:
                break
            z32 = self._paths["fp32"].raw(images[idx])
            used = float(np.max(np.abs(z32 - z[idx]) / error_bound(z[idx], self.bound_scale)))
            z[idx] = z32
            exact[idx] = True
            todo[:] = False
            self.stats["refined"] += int(idx.size)
            self.stats["max_err_over_bound"] = max(self.stats["max_err_over_bound"], used * self.bound_scale)
            if used <= 0.5:
                break
            # the bound was too tight for this model's bf16 error: widen it to twice the worst error seen, re-check
            self.bound_scale *= max(2.0, 2.0 * used)
        return z


def predict(store, model: CNNModel, level: str = "all", batch: int = 128, device: str = "cpu", fast: bool = True,
            rows=None, chunk: int = 4096, precision: str = "auto", progress: ProgressFn | None = None,
            cancelled: CancelFn | None = None) -> dict:
    """Score every row of the store (or ``rows``).

    Returns ``{'cnn_raw', 'cnn_prob' (calibrated), 'rows', 'precision' (resolved), 'refined' (cutouts re-scored
    in fp32 by the 'checked' precision)}``.
    """
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    scorer = Scorer(model.net, fast=fast, device=device, batch=batch, precision=precision, platt=model.platt)
    raw = np.empty(rows.size, dtype=np.float32)
    for a in range(0, rows.size, chunk):
        check_cancel(cancelled, "CNN scoring")
        raw[a:a + chunk] = scorer.raw(store.images(rows[a:a + chunk], level))
        if progress is not None:
            progress(min(a + chunk, rows.size), rows.size, "CNN scoring")
    return {"cnn_raw": raw, "cnn_prob": model.calibrate(raw), "rows": rows, "precision": scorer.precision,
            "refined": scorer.stats["refined"]}
