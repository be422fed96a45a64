"""Scoring the cutout store with a trained CNN: raw scores and Platt-calibrated probabilities (paper 2.2.2).

Batched inference over the store, read ``chunk`` rows at a time from the HDF5 file. The fast CPU path
(default) runs under ``torch.inference_mode`` with channels-last tensors and BatchNorm folded into the
preceding convolutions, in fp32 (``precision='fp32'``, the default: 1.8x eager fp32 here and identical to it
to 1e-6) or in bf16 (``precision='bf16'``: first convolution and head in fp32, the rest bf16; 2.6x eager on
AVX-512 bf16 / AMX CPUs, but calibrated probabilities then differ from fp32 by up to ~0.015 on real cutouts,
over the 0.01 we hold scores to, so it is opt-in). ``fast=False`` is the eager fp32 reference.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from szviewer.cnn.model import DeepSZNet, raw_score
from szviewer.cnn.modelfile import CNNModel
from szviewer.progress import CancelFn, ProgressFn, check_cancel


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to conv followed by bn (eval mode)."""
    w = conv.weight.detach().float()
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    bias = bn.bias.detach().float() - bn.running_mean.float() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach().float() * scale
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True)
    out.weight.data.copy_(w * scale.view(-1, 1, 1, 1))
    out.bias.data.copy_(bias)
    return out


def fuse_for_inference(net: DeepSZNet) -> DeepSZNet:
    """A copy of the network with every BatchNorm2d folded into its convolution (eval-mode equivalent)."""
    from szviewer.cnn.model import Bottleneck

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


class Scorer:
    """A network prepared for fast inference, or the eager fp32 reference (``fast=False``).

    The fast path folds BatchNorm into the convolutions, uses channels-last tensors, runs the first convolution
    (3 input bands, where bf16 rounding of the inputs costs most accuracy) and the fully connected head in fp32
    and everything between in bf16 with bf16 weights (no per-call casts), under ``torch.inference_mode``.
    """

    def __init__(self, net: DeepSZNet, fast: bool = True, device: str = "cpu", batch: int = 256,
                 precision: str = "fp32"):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
        self.fast = fast
        self.precision = precision
        self.device = torch.device(device)
        self.batch = batch
        net = net.eval()
        if fast:
            net = fuse_for_inference(net).to(self.device).to(memory_format=torch.channels_last)
            if precision == "bf16":
                net.stem[3:].to(torch.bfloat16)
                net.stages.to(torch.bfloat16)
        self.net = net.to(self.device)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        h = net.scale(x).contiguous(memory_format=torch.channels_last)
        if self.precision == "fp32":
            return net.head(net.stages(net.stem(h)))
        h = net.stem[:3](h).to(torch.bfloat16)  # conv1 (+ folded BN) + ReLU in fp32
        h = net.stages(net.stem[3:](h))
        return net.head(h.float())

    @torch.inference_mode()
    def raw(self, images: np.ndarray) -> np.ndarray:
        """Raw scores (logit differences) of (n, 3, 32, 32) uK cutouts."""
        out = np.empty(len(images), dtype=np.float32)
        for a in range(0, len(images), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[a:a + self.batch], dtype=np.float32)).to(self.device)
            logits = self._forward_fast(x) if self.fast else self.net(x)
            out[a:a + self.batch] = raw_score(logits).cpu().numpy()
        return out


def predict(store, model: CNNModel, level: str = "all", batch: int = 256, device: str = "cpu", fast: bool = True,
            rows=None, chunk: int = 4096, progress: ProgressFn | None = None,
            cancelled: CancelFn | None = None) -> dict[str, np.ndarray]:
    """Score every row of the store (or ``rows``): ``{'cnn_raw': raw, 'cnn_prob': calibrated, 'rows': rows}``."""
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    scorer = Scorer(model.net, fast=fast, device=device, batch=batch)
    raw = np.empty(rows.size, dtype=np.float32)
    for a in range(0, rows.size, chunk):
        check_cancel(cancelled, "CNN scoring")
        raw[a:a + chunk] = scorer.raw(store.images(rows[a:a + chunk], level))
        if progress is not None:
            progress(min(a + chunk, rows.size), rows.size, "CNN scoring")
    return {"cnn_raw": raw, "cnn_prob": model.calibrate(raw), "rows": rows}
