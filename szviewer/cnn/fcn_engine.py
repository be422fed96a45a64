"""The ops of a fully convolutional pass (:class:`szviewer.cnn.fcn.FCNPlan`) built for one dtype: a window-terms
description of each convolution or pool (:class:`Op`) and the engine that runs the trunk and head on a map,
oneDNN fused or plain ``F.conv2d``, with shift-and-stitch phase splits (:class:`Engine`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from szviewer.cnn.fused import _Conv, folded

if TYPE_CHECKING:
    from szviewer.cnn.fcn import FCNPlan


@dataclass(frozen=True)
class Op:
    """One convolution or pool in window terms: kernel k, stride, padding; taps at anchor + s * (t - padding)."""

    kind: str  # 'conv' | 'pool'
    k: int
    stride: int
    padding: int
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def conv_op(conv, bn) -> Op:
    w, b = folded(conv, bn)
    return Op("conv", conv.kernel_size[0], conv.stride[0], conv.padding[0], w.contiguous(), b.contiguous())


class Engine:
    """The plan's ops built for one dtype: oneDNN fused convolutions with pre-packed weights (CPU, ``fused``) or
    plain ``F.conv2d`` (any device, or a PyTorch without the fused ops); the same numbers either way (fp32).

    bf16 (``dtype=torch.bfloat16``): the trunk items from ``fp32_items`` on in bf16 with fp32 accumulation (the
    ones before in fp32, activations cast where the dtype changes); with the whole trunk in bf16 the first
    convolution keeps fp32 accuracy by splitting its 3-band input and weights into bf16 high and low parts (as
    :class:`szviewer.cnn.fused.FusedPlan` does). The head's 2 x 2 and first 1 x 1 convolutions follow ``dtype``,
    its last (256 -> 1) is fp32. ``phase_batch``: after a split, all phases stacked in the batch (default;
    measured faster than one phase at a time on AMX); ``inplace``: the residual sum + ReLU written into the
    identity (fused only).
    """

    def __init__(self, plan: FCNPlan, dtype: torch.dtype, fused: bool, fp32_items: int = 0):
        self.dtype, self.fused, self.device = dtype, fused, plan.device
        self.phase_batch, self.inplace = True, fused
        self.tap: int | None = None  # keep the input of trunk item ``tap`` of the last run in ``tapped`` (fp32)
        self.tap_fn = None  # applied to it first when set (the fine head's 1 x 1 projection: 256 -> 24 channels)
        self.tapped: torch.Tensor | None = None
        self.trunk = []
        for i, item in enumerate(plan.steps):
            dt = torch.float32 if i < fp32_items else dtype
            if item[0] == "op":
                _, op, relu, run_stride, split = item
                conv = None if op.kind == "pool" else self._conv(op, run_stride, dt,
                                                                 split_input=dt == torch.bfloat16 and i == 0)
                self.trunk.append(("op", op, conv, relu, run_stride, split, dt))
            else:
                _, (c1, c2, c3), ds, split, run_stride = item
                self.trunk.append(("block", self._conv(c1, run_stride, dt), self._conv(c2, 1, dt),
                                   self._conv(c3, 1, dt), None if ds is None else self._conv(ds, run_stride, dt),
                                   split, c1.stride, dt))
        (w1, b1), (w2, b2), (w3, b3) = plan.head1, plan.head2, plan.head3
        self.head1 = self._conv(Op("conv", w1.shape[-1], 1, 0, w1, b1), 1, dtype)
        self.head2 = self._conv(Op("conv", 1, 1, 0, w2, b2), 1, dtype)
        self.head3 = (w3.to(self.device), b3.to(self.device))  # fp32, one output channel

    def _conv(self, op: Op, stride: int, dtype: torch.dtype, split_input: bool = False):
        """relu?(conv(x) [+ other]) as a callable ``f(x, relu=True, other=None)``."""
        w, b = op.weight, op.bias
        if split_input:  # x w ~ x_hi w_hi + x_lo w_hi + x_hi w_lo, input [x_hi, x_lo, x_hi] (fp32 accuracy)
            hi = w.to(torch.bfloat16).float()
            w = torch.cat([hi, hi, (w - hi).to(torch.bfloat16).float()], dim=1)
        if self.fused:
            c = _Conv(w, b, stride, op.padding, dtype, 16, 64)

            def run(x, relu=True, other=None):
                if other is None:
                    return c(x, relu)
                if not self.inplace:
                    return c.add_relu(x, other)
                # relu(conv(x) + other) written into ``other`` (the block's identity, not read again)
                return torch.ops.mkldnn._convolution_pointwise_.binary(
                    other, x, c.weight, c.bias, c.padding, c.stride, c.dilation, 1, "add", None, "relu", [], "")
            return run
        wd = w.to(self.device, dtype).contiguous(memory_format=torch.channels_last)
        bd = b.to(self.device, dtype)

        def plain(x, relu=True, other=None):
            y = F.conv2d(x, wd, bd, stride=stride, padding=op.padding)
            if other is not None:
                y = y.add_(other)
            return torch.relu_(y) if relu or other is not None else y
        return plain

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled fp32 input as the first convolution takes it."""
        if self.trunk[0][-1] == torch.bfloat16:
            hi = x.to(torch.bfloat16)
            x = torch.cat([hi, (x - hi.float()).to(torch.bfloat16), hi], dim=1)
        return x.contiguous(memory_format=torch.channels_last)

    def run(self, x: torch.Tensor, i: int = 0, spacing: int = 1, offsets: tuple = ((0, 0),),
            out: list | None = None) -> list:
        """Trunk step ``i`` on and the head: [(offsets (y, x) of each batch entry's anchors, raw (b, h', w'))].

        After a split the r^2 phase maps are independent, so they may go through the rest of the network together
        (``phase_batch``) or one at a time (smaller activations, but measured 2x slower on AMX here).
        """
        out = [] if out is None else out
        while i < len(self.trunk):
            if i == self.tap:
                self.tapped = x.float() if self.tap_fn is None else self.tap_fn(x.float())
            item = self.trunk[i]
            i += 1
            if x.dtype != item[-1]:
                x = x.to(item[-1]).contiguous(memory_format=torch.channels_last)
            if item[0] == "op":
                _, op, conv, relu, run_stride, split, _ = item
                if op.kind == "pool":
                    if split:  # keep the size: the pool reads anchor and anchor + 1
                        x = F.pad(x, (0, op.k - 1, 0, op.k - 1))
                    x = F.max_pool2d(x, op.k, stride=run_stride).contiguous(memory_format=torch.channels_last)
                else:
                    x = conv(x, relu)
                if split:
                    return self._split(x, split, i, spacing, offsets, out)
                spacing *= op.stride
                continue
            _, c1, c2, c3, ds, split, stride, _ = item
            if split:  # a 1 x 1 stride-r convolution at stride 1 on each of the input's r^2 phases
                return self._split(x, split, i - 1, spacing, offsets, out, block_input=True)
            x = self._block(item, x)
            spacing *= stride
        if x.dtype != self.dtype:
            x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        out.append((offsets, self.head(x)))
        return out

    def _block(self, item, x: torch.Tensor) -> torch.Tensor:
        _, c1, c2, c3, ds = item[:5]
        idt = x if ds is None else ds(x, relu=False)
        return c3(c2(c1(x)), other=idt)

    def _split(self, y: torch.Tensor, r: int, i: int, spacing: int, offsets: tuple, out: list,
               block_input: bool = False) -> list:
        """Phase (a, b) of ``y`` (rows a::r, columns b::r) through the rest, its anchors at offset + (a, b) spacing:
        all r^2 phases stacked in the batch (``phase_batch``), else one after the other."""
        phases = [(a, b) for a in range(r) for b in range(r)]
        groups = [phases] if self.phase_batch else [[p] for p in phases]
        for group in groups:
            ph = torch.cat([y[:, :, a::r, b::r] for a, b in group]).contiguous(memory_format=torch.channels_last)
            offs = tuple((oy + a * spacing, ox + b * spacing) for a, b in group for oy, ox in offsets)
            if block_input:  # the split block itself, at stride 1, on these phases
                self.run(self._block(self.trunk[i], ph), i + 1, spacing * r, offs, out)
            else:
                self.run(ph, i, spacing * r, offs, out)
        return out

    def head(self, f: torch.Tensor) -> torch.Tensor:
        h = self.head2(self.head1(f))
        return F.conv2d(h.float(), *self.head3)[:, 0]
