"""The DeepSZ network applied fully convolutionally: a whole map scored in one pass (issue 13 part 2).

What the windowed network does (:mod:`szviewer.cnn.model`, eval mode) and how each part carries over to a map:

- input scaling 'fixed' (``asinh(x / scale_uk)``) is per pixel, so it is applied to the map once. 'minmax'
  (the released code's per-cutout min-max) depends on the whole window and cannot be shared between windows:
  :class:`FCNPlan` refuses such a model (use the windowed path);
- BatchNorm (eval) is an affine map per channel: folded into the preceding convolution (2-d) or into the first
  fully connected layer (the head's BatchNorm1d over the 4,096 flattened features); there is no dropout;
- strides (stem convolution 2, max-pool 2, the first 1x1 convolution of stages 2 and 3: total 16 pixels = 4' at
  0.25') are kept until the output grid ``stride_pix`` is reached; a stride past it runs at stride 1 and its
  output is split into stride^2 phase maps stacked in the batch (shift-and-stitch), so every later layer is an
  ordinary undilated convolution on each phase (the same numbers as the dilated "a trous" form, and as
  stitching (16 / stride_pix)^2 shifted passes, with the layers before the split computed once);
- the head (flatten of 1024 x 2 x 2 -> FC 256 -> FC 256 -> FC 2) becomes a 2 x 2 convolution over each phase's
  last feature map followed by two 1 x 1 convolutions; its output at a window origin is the raw score z1 - z0,
  and the phases are stitched back into one map on the ``stride_pix`` grid.

**Zero padding: what cannot be shared.** Every 3 x 3 convolution of the network pads its input with zeros at the
*window's* border. In the windowed scorer a 32 x 32 window therefore sees zeros just outside itself at every
layer; applied to a map, the same convolutions see the real neighbouring pixels (the "context"). The part of a
window's activations that does not depend on its border shrinks layer by layer (30 x 30 of 32 x 32 after the
first convolution, 14 x 14 of 16 x 16 after the second, 6 x 6 of 8 x 8 after the pool, 4 x 4, 2 x 2 and 0 x 0
after the three blocks of stage 1), so no layer after stage 1 can be shared between overlapping windows and the
window-by-window scores cannot be reproduced exactly by any computation that shares the trunk. What the map pass
computes exactly is the network with *context padding*: each window's score with its convolutions padded by the
map's own pixels, :func:`context_window_raw` (a per-window reference built from the unmodified modules; the
two agree to ~1e-5 in fp32, tested). How far that is from the zero-padded window score is measured on real tiles
(``benchmarks/RESULTS.md``, issue 13 part 2) and both paths stay available (``dense_job(method=...)``).

Memory: the map is scored in strips of rows with a margin of the trunk's receptive field (:attr:`FCNPlan.margin`)
and strip starts on the 16-pixel grid, so the strips give the same numbers as one pass over the whole map.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from szviewer.cnn.fused import folded
from szviewer.cnn.model import Bottleneck, DeepSZNet
from szviewer.progress import CancelFn, ProgressFn, check_cancel

#: output grids the plan supports (pixels between scored window origins): powers of two up to the total stride
STRIDES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class _Op:
    """One convolution or pool in window terms: kernel k, stride, padding; taps at anchor + s * (t - padding)."""

    kind: str  # 'conv' | 'pool'
    k: int
    stride: int
    padding: int
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def _conv_op(conv, bn) -> _Op:
    w, b = folded(conv, bn)
    return _Op("conv", conv.kernel_size[0], conv.stride[0], conv.padding[0], w.contiguous(), b.contiguous())


class FCNPlan:
    """The eval-mode DeepSZ network as one fully convolutional pass over a map (fp32, CPU or GPU).

    ``stride_pix``: the grid of window origins scored (1, 2, 4, 8 or 16 pixels; 4 = 1' at 0.25' pixels).
    :meth:`raw_map` gives the raw score (logit difference z1 - z0) of every ``npix`` x ``npix`` window of the
    map whose origin is on that grid, with context padding (module docstring). ``budget_mb``: about the most
    memory one strip's pass may take (default 2 GB); a strip re-reads the receptive field's ~270 rows, so a
    larger budget means fewer strips and less re-reading (at 1' and 2 GB: 1.2x for a 1,324-pixel-wide tile,
    1.6x for a 10 deg tile).
    """

    def __init__(self, net: DeepSZNet, stride_pix: int = 4, device: str = "cpu", budget_mb: float = 2048.0):
        cfg = net.config
        if cfg.scaling != "fixed":
            raise ValueError(f"the fully convolutional path needs the per-pixel 'fixed' input scaling; this model "
                             f"uses {cfg.scaling!r}, whose per-window min-max cannot be shared between windows "
                             "(use the windowed path)")
        total = 4 * 2 ** (len(cfg.blocks) - 1)
        if stride_pix not in STRIDES or stride_pix > total:
            raise ValueError(f"stride_pix must be one of {[s for s in STRIDES if s <= total]}, not {stride_pix}")
        net = copy.deepcopy(net).cpu().eval()  # weights are folded on the CPU, then moved to ``device``
        self.config, self.stride_pix, self.total_stride = cfg, int(stride_pix), total
        self.device = torch.device(device)
        self.budget_mb = float(budget_mb)
        self.inv_scale = (1.0 / np.asarray(cfg.scale_uk, dtype=np.float32)).reshape(-1, 1, 1)
        st = net.stem
        # the trunk: a list of ('op', _Op, relu) and ('block', [c1, c2, c3], ds | None)
        self.trunk: list = [("op", _conv_op(st[0], st[1]), True), ("op", _conv_op(st[3], st[4]), True),
                            ("op", _Op("pool", st[6].kernel_size, st[6].stride, st[6].padding), False)]
        for stage in net.stages:
            for blk in stage:
                assert isinstance(blk, Bottleneck)
                ds = None if blk.downsample is None else _conv_op(blk.downsample[0], blk.downsample[1])
                self.trunk.append(("block", [_conv_op(blk.conv1, blk.bn1), _conv_op(blk.conv2, blk.bn2),
                                             _conv_op(blk.conv3, blk.bn3)], ds))
        # the head: BatchNorm1d folded into FC1, FC1 as a 2 x 2 convolution over the last feature map
        bn, fc1, fc2, fc3 = net.head[1], net.head[2], net.head[4], net.head[6]
        scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
        shift = bn.bias.detach().float() - bn.running_mean.float() * scale
        w1 = fc1.weight.detach().float() * scale[None, :]
        b1 = fc1.bias.detach().float() + fc1.weight.detach().float() @ shift
        side = cfg.npix // total
        self.side = side
        cfeat = cfg.feature_size // (side * side)
        self.head1 = (w1.reshape(-1, cfeat, side, side).contiguous(), b1)
        self.head2 = (fc2.weight.detach().float()[:, :, None, None].contiguous(), fc2.bias.detach().float())
        w3 = fc3.weight.detach().float()
        b3 = fc3.bias.detach().float()
        self.head3 = ((w3[1] - w3[0])[None, :, None, None].contiguous(), (b3[1] - b3[0]).reshape(1))
        self.cfeat = cfeat
        self._to_device()
        self.margin = self._receptive_margin()

    def _to_device(self) -> None:
        def mv(op):
            if op.weight is None:
                return op
            return _Op(op.kind, op.k, op.stride, op.padding,
                       op.weight.to(self.device).contiguous(memory_format=torch.channels_last),
                       op.bias.to(self.device))

        trunk = []
        for item in self.trunk:
            if item[0] == "op":
                trunk.append(("op", mv(item[1]), item[2]))
            else:
                trunk.append(("block", [mv(o) for o in item[1]], None if item[2] is None else mv(item[2])))
        self.trunk = trunk
        self.head1, self.head2, self.head3 = [(w.to(self.device), b.to(self.device))
                                              for w, b in (self.head1, self.head2, self.head3)]

    def _receptive_margin(self) -> tuple[int, int]:
        """(before, after): pixels of context a window's score reads before its origin and after its last pixel."""
        lo, hi, s = 0, 0, 1

        def grow(op, lo, hi, s):
            return lo + s * (0 - op.padding), hi + s * (op.k - 1 - op.padding), s * op.stride

        for item in self.trunk:
            if item[0] == "op":
                lo, hi, s = grow(item[1], lo, hi, s)
            else:
                blo, bhi, bs = lo, hi, s
                for op in item[1]:
                    blo, bhi, bs = grow(op, blo, bhi, bs)
                if item[2] is not None:
                    dlo, dhi, _ = grow(item[2], lo, hi, s)
                    blo, bhi = min(blo, dlo), max(bhi, dhi)
                lo, hi, s = blo, bhi, bs
        hi += s * (self.side - 1)  # the head reads side x side anchors s apart
        return max(0, -lo), max(0, hi - (self.config.npix - 1))

    # ------------------------------------------------------------------ cost
    def macs_per_pixel(self) -> float:
        """Multiply-accumulates per map pixel of one pass (away from the map's edges; margins of strips excluded)."""

        def macs(op, spacing):  # (MACs per pixel, spacing after): outputs min(spacing * stride, grid) pixels apart
            after = spacing * op.stride
            if op.weight is None:
                return 0.0, after
            return op.k * op.k * op.weight.shape[1] * op.weight.shape[0] / min(after, self.stride_pix) ** 2, after

        total, spacing = 0.0, 1
        for item in self.trunk:
            if item[0] == "op":
                m, spacing = macs(item[1], spacing)
                total += m
                continue
            s0 = spacing
            for op in item[1]:
                m, spacing = macs(op, spacing)
                total += m
            if item[2] is not None:
                total += macs(item[2], s0)[0]
        for w, _ in (self.head1, self.head2, self.head3):
            total += w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3] / self.stride_pix**2
        return total

    # ------------------------------------------------------------------ the pass
    def _apply(self, op: _Op, x: torch.Tensor, st: dict, relu: bool, other=None) -> torch.Tensor:
        """Apply ``op`` to the phase maps ``x``; a stride that would pass the output grid becomes phases.

        ``st``: {'spacing': pixels between neighbours of a phase map}. Where the layer's stride keeps the
        spacing within ``stride_pix`` it is applied as it is; otherwise the op runs at stride 1 and its output is
        split into stride^2 phase maps (shift-and-stitch), so every op is an ordinary, undilated one.
        """
        split = st["spacing"] * op.stride > self.stride_pix and op.stride > 1
        stride = 1 if split else op.stride
        if op.kind == "pool":
            if split:  # keep the size: the pool reads anchor and anchor + 1
                x = F.pad(x, (0, op.k - 1, 0, op.k - 1))
            y = F.max_pool2d(x, op.k, stride=stride)
        else:
            y = F.conv2d(x, op.weight, op.bias, stride=stride, padding=op.padding)
            if other is not None:
                y = y + other
            if relu:
                y = torch.relu_(y)
        if split:
            y = self._phases(y, op.stride, st)
        else:
            st["spacing"] *= op.stride
        return y

    @staticmethod
    def _phases(y: torch.Tensor, r: int, st: dict) -> torch.Tensor:
        """(B, C, H, W) -> (r r B, C, H/r, W/r): phase (i, j) of batch b at (i r + j) B + b; offsets tracked."""
        b, c, h, w = y.shape
        y = y.view(b, c, h // r, r, w // r, r).permute(3, 5, 0, 1, 2, 4).reshape(r * r * b, c, h // r, w // r)
        sp = st["spacing"]
        st["offsets"] = [(oy + i * sp, ox + j * sp) for i in range(r) for j in range(r) for oy, ox in st["offsets"]]
        st["spacing"] = sp * r
        return y.contiguous(memory_format=torch.channels_last)

    def _features(self, x: torch.Tensor, st: dict) -> torch.Tensor:
        for item in self.trunk:
            if item[0] == "op":
                x = self._apply(item[1], x, st, item[2])
                continue
            (c1, c2, c3), ds = item[1], item[2]
            st_b = dict(st)
            idt = x if ds is None else self._apply(ds, x, dict(st), False)
            h = self._apply(c1, x, st_b, True)
            h = self._apply(c2, h, st_b, True)
            x = self._apply(c3, h, st_b, True, other=idt)
            st.update(st_b)
        return x

    def _head(self, f: torch.Tensor) -> torch.Tensor:
        h = torch.relu_(F.conv2d(f, *self.head1))
        h = torch.relu_(F.conv2d(h, *self.head2))
        return F.conv2d(h, *self.head3)[:, 0]

    @torch.inference_mode()
    def _strip(self, scaled: np.ndarray) -> np.ndarray:
        """Raw scores at every origin anchor (multiples of stride_pix) of one (bands, h, w) scaled strip."""
        g = self.total_stride
        _, h, w = scaled.shape
        x = torch.from_numpy(scaled)[None].to(self.device)
        x = F.pad(x, (0, -w % g, 0, -h % g)).contiguous(memory_format=torch.channels_last)
        st = {"spacing": 1, "offsets": [(0, 0)]}
        raw = self._head(self._features(x, st)).float().cpu().numpy()  # (phases, h', w'), anchors g apart
        s = self.stride_pix
        out = np.empty((raw.shape[1] * (g // s), raw.shape[2] * (g // s)), dtype=np.float32)
        for k, (oy, ox) in enumerate(st["offsets"]):
            out[oy // s::g // s, ox // s::g // s] = raw[k]
        return out

    def origins(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Window origins (y0, x0) scored on a map of ``shape``: every window wholly inside, on the grid."""
        n = self.config.npix
        return (np.arange(0, shape[0] - n + 1, self.stride_pix), np.arange(0, shape[1] - n + 1, self.stride_pix))

    def strip_rows(self, width: int) -> int:
        """Rows of window origins per strip so that the last feature map stays within ``budget_mb``."""
        d = min(self.stride_pix, self.total_stride)
        # bytes per input row: ~4.2 float32 maps of the last stage's width (measured: 677 MB peak for a 640 x 1024
        # strip on the 1' grid, where 3 maps would predict 480 MB)
        per_row = 4.0 * 4.2 * self.cfeat * max(1, math.ceil(width / d)) / d
        rows = int(self.budget_mb * 2**20 / per_row) - sum(self.margin) - self.config.npix
        return max(self.total_stride, rows // self.total_stride * self.total_stride)

    def raw_map(self, maps: np.ndarray, progress: ProgressFn | None = None,
                cancelled: CancelFn | None = None) -> np.ndarray:
        """Raw scores (my, mx) float32 of the windows at :meth:`origins` of ``maps`` (bands, ny, nx) uK."""
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3 or maps.shape[0] != self.config.in_bands:
            raise ValueError(f"maps must be ({self.config.in_bands}, ny, nx), not {maps.shape}")
        ny, nx = maps.shape[1:]
        oy, ox = self.origins((ny, nx))
        out = np.empty((oy.size, ox.size), dtype=np.float32)
        if out.size == 0:
            return out
        g, n = self.total_stride, self.config.npix
        before, after = self.margin
        rows = self.strip_rows(nx)
        k = 0
        while k < oy.size:
            check_cancel(cancelled, "fully convolutional CNN scoring")
            a0 = int(oy[k])
            a1 = min(int(oy[-1]), a0 + rows - self.stride_pix)  # last origin of this strip
            y_in = max(0, (a0 - before) // g * g)  # on the 16-pixel grid: the layers' grids are the whole map's
            y_end = min(ny, a1 + n + after)
            strip = np.arcsinh(maps[:, y_in:y_end] * self.inv_scale).astype(np.float32)
            raw = self._strip(strip)
            i0 = (a0 - y_in) // self.stride_pix
            m = (a1 - a0) // self.stride_pix + 1
            out[k:k + m] = raw[i0:i0 + m, :ox.size]
            k += m
            if progress is not None:
                progress(k, oy.size, "fully convolutional CNN scoring")
        return out


def window_macs(net: DeepSZNet) -> float:
    """Multiply-accumulates of one 32 x 32 window through the eager network (every 3 x 3 tap counted)."""
    count = [0.0]

    def hook(m, _inp, out):
        if isinstance(m, torch.nn.Conv2d):
            count[0] += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        elif isinstance(m, torch.nn.Linear):
            count[0] += m.in_features * m.out_features

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            net.eval()(torch.zeros(1, net.config.in_bands, net.config.npix, net.config.npix))
    finally:
        for h in hooks:
            h.remove()
    return count[0]


def context_window_raw(net: DeepSZNet, maps: np.ndarray, y0, x0, margin: int | None = None) -> np.ndarray:
    """Reference: the raw score of each window at (y0, x0) with context padding, window by window, eval modules.

    The window is cut out with ``margin`` pixels of the map around it (a multiple of the total stride, at least
    the receptive field's reach: :attr:`FCNPlan.margin`), run through the unmodified ``net.stem`` and
    ``net.stages`` (their zero padding then falls in the margin, beyond anything the window's features read), and
    the features anchored on the window itself go through ``net.head``. Equal to :meth:`FCNPlan.raw_map` there.
    """
    cfg = net.config
    total = 4 * 2 ** (len(cfg.blocks) - 1)
    side = cfg.npix // total
    if margin is None:
        margin = int(math.ceil(max(FCNPlan(net, total).margin) / total) * total)
    if margin % total:
        raise ValueError(f"margin must be a multiple of {total}")
    y0, x0 = np.atleast_1d(y0).astype(int), np.atleast_1d(x0).astype(int)
    n = cfg.npix + 2 * margin
    blocks = np.stack([maps[:, y - margin:y - margin + n, x - margin:x - margin + n] for y, x in zip(y0, x0,
                                                                                                    strict=True)])
    if blocks.shape[-2:] != (n, n):
        raise ValueError("a window's margin leaves the map")
    j = margin // total
    with torch.inference_mode():
        f = net.eval().stages(net.stem(net.scale(torch.from_numpy(np.ascontiguousarray(blocks, np.float32)))))
        logits = net.head(f[:, :, j:j + side, j:j + side].contiguous())
    return (logits[:, 1] - logits[:, 0]).float().numpy()
