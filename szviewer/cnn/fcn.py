"""The DeepSZ network applied fully convolutionally: a whole map scored in one pass (issue 13 part 2).

What the windowed network does (:mod:`szviewer.cnn.model`, eval mode) and how each part carries over to a map:

- input scaling 'fixed' (``asinh(x / scale_uk)``) is per pixel, so it is applied to the map once. 'minmax'
  (the released code's per-cutout min-max) and 'detrend' (a per-cutout quadratic surface removed) depend on the
  whole window and cannot be shared between windows: :class:`FCNPlan` refuses such a model (use the windowed path);
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

**Speed and precision** (:class:`FCNPlan` ``precision``; measurements in ``benchmarks/RESULTS.md``). On a CPU with
the oneDNN fused ops every convolution has pre-packed weights and its ReLU, or its block's residual sum + ReLU
(written in place into the identity), fused into it (the ops of :mod:`szviewer.cnn.fused`); a strided 1 x 1
convolution past the output grid splits its *input* into phases (one copy of the block input instead of two of
its wider outputs). fp32 stays the exact reference. On a CPU where bf16 is native (AMX, AVX-512 BF16) 'auto'
runs the last stage and the head in bf16 on AMX (most of the multiplications: stage 3 runs at 16x its windowed
density on the 1' grid) and the stem and the first stages in fp32: bf16 there would be amplified by every later
layer (largest raw-score error on a real map 0.12 with the whole trunk in bf16, 0.03 this way, i.e. calibrated
probabilities within 0.004 of fp32). Every bf16 map is checked against fp32 on a sample of its windows, the
ones nearest the decision boundary (:meth:`FCNPlan.raw_map`), and scored again in fp32 when the sample fails.
A per-window fp32 re-score of every uncertain window, as the cutout scorer's 'checked' does, is not affordable
here: a window's fp32 score with context needs its whole 320 x 320 pixel receptive field.
"""

from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from szviewer.cnn.fcn_engine import Engine, Op, conv_op
from szviewer.cnn.fused import bf16_native_on, fused_available
from szviewer.cnn.model import Bottleneck, DeepSZNet
from szviewer.cnn.platt import Platt
from szviewer.cnn.predict import error_bound
from szviewer.progress import CancelFn, ProgressFn, check_cancel

#: output grids the plan supports (pixels between scored window origins): powers of two up to the total stride
STRIDES = (1, 2, 4, 8, 16)
PRECISIONS = ("auto", "fp32", "bf16", "checked")


class FCNPlan:
    """The eval-mode DeepSZ network as one fully convolutional pass over a map (CPU or GPU).

    ``stride_pix``: the grid of window origins scored (1, 2, 4, 8 or 16 pixels; 4 = 1' at 0.25' pixels).
    :meth:`raw_map` gives the raw score (logit difference z1 - z0) of every ``npix`` x ``npix`` window of the
    map whose origin is on that grid, with context padding (module docstring). ``budget_mb``: about the most
    memory one strip's pass may take (default 2 GB); a strip re-reads the receptive field's ~270 rows, so a
    larger budget means fewer strips and less re-reading.

    ``precision`` (:data:`PRECISIONS`): ``'fp32'`` is the exact reference (oneDNN fused convolutions with
    pre-packed weights on a CPU that has them, else plain ``F.conv2d``: the same numbers to ~1e-6); ``'bf16'``
    runs the convolutions in bf16 (AMX / AVX-512 BF16 through oneDNN), unchecked; ``'checked'`` is bf16 checked
    against fp32 on a sample of every map (:meth:`raw_map`), the whole map scored again in fp32 when the sample
    fails; ``'auto'`` (default) is ``'checked'`` where bf16 is native
    (:func:`szviewer.cnn.fused.bf16_native_on`: AVX-512 BF16 or AMX, CUDA compute capability >= 8), else
    ``'fp32'`` (bf16 emulated is slower than fp32). ``platt`` and ``tol``: what the check holds, calibrated
    probabilities within ``tol`` of fp32 (default Platt (1, 0), the raw score as a logit). ``fused``: None picks
    the oneDNN fused ops where they exist and pass a self-check; False forces plain ``F.conv2d``.
    """

    def __init__(self, net: DeepSZNet, stride_pix: int = 4, device: str = "cpu", budget_mb: float = 2048.0,
                 precision: str = "auto", platt: Platt | None = None, tol: float = 0.01, sentinels: int = 2,
                 fused: bool | None = None, bf16_stage: int | None = None):
        cfg = net.config
        if not cfg.per_pixel_scaling:
            raise ValueError(f"the fully convolutional path needs the per-pixel 'fixed' input scaling; this model "
                             f"uses {cfg.scaling!r}, which depends on the whole window and cannot be shared between "
                             "windows (use the windowed path)")
        total = cfg.total_stride
        if stride_pix not in STRIDES or stride_pix > total:
            raise ValueError(f"stride_pix must be one of {[s for s in STRIDES if s <= total]}, not {stride_pix}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        net = copy.deepcopy(net).cpu().eval()  # weights are folded on the CPU, then moved to ``device``
        self._net = net
        self.config, self.stride_pix, self.total_stride = cfg, int(stride_pix), total
        self.device = torch.device(device)
        self.budget_mb = float(budget_mb)
        if precision == "auto":
            precision = "checked" if bf16_native_on(self.device.type) else "fp32"
        self.precision = precision
        self.platt, self.tol, self.n_sentinels = platt or Platt(1.0, 0.0), float(tol), int(sentinels)
        self.stats = {"maps": 0, "windows": 0, "sentinels": 0, "fallbacks": 0, "max_err_over_bound": 0.0,
                      "max_dp": 0.0}
        self.inv_scale = (1.0 / np.asarray(cfg.scale_uk, dtype=np.float32)).reshape(-1, 1, 1)
        st = net.stem
        # the trunk: a list of ('op', Op, relu) and ('block', [c1, c2, c3], ds | None)
        self.trunk: list = [("op", conv_op(st[0], st[1]), True), ("op", conv_op(st[3], st[4]), True),
                            ("op", Op("pool", st[6].kernel_size, st[6].stride, st[6].padding), False)]
        for stage in net.stages:
            for blk in stage:
                assert isinstance(blk, Bottleneck)
                ds = None if blk.downsample is None else conv_op(blk.downsample[0], blk.downsample[1])
                self.trunk.append(("block", [conv_op(blk.conv1, blk.bn1), conv_op(blk.conv2, blk.bn2),
                                             conv_op(blk.conv3, blk.bn3)], ds))
        self.steps = self._schedule()
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
        self.margin = self._receptive_margin()
        #: the first stage's output (the input of this trunk item), ``feature_spacing`` pixels apart
        self.tap_item = 3 + cfg.blocks[0]
        self.feature_spacing = cfg.stage1_stride  # 4 for the paper network (stem stride 2 x the max-pool)
        self.engine = "plain"
        self._engines: dict[str, Engine] = {}
        want = self.device.type == "cpu" and fused_available() if fused is None else bool(fused)
        # bf16 from the last stage on (default): the rounding of the early layers is what the later ones amplify
        # (fp32 there cuts the largest raw-score error 4x), and the last stage and the head hold most of the
        # multiplications (83% on the 1' grid). 0: the whole trunk in bf16.
        nst = len(cfg.blocks)
        self.bf16_stage = nst - 1 if bf16_stage is None else int(bf16_stage)
        if not 0 <= self.bf16_stage < nst:
            raise ValueError(f"bf16_stage must be in 0..{nst - 1}, not {bf16_stage}")
        self.fp32_items = 0 if self.bf16_stage == 0 else 3 + sum(cfg.blocks[:self.bf16_stage])
        for prec in ("bf16", "fp32") if precision == "checked" else (precision,):
            self._engines[prec] = self._build(prec, want)
        self.engine = "fused" if self._engines[self._main].fused else "plain"
        self._probe: FCNPlan | None = None  # the fp32 plan at the total stride that scores the sentinels

    @property
    def _main(self) -> str:
        return "fp32" if self.precision == "fp32" else "bf16"

    def _build(self, prec: str, fused: bool) -> Engine:
        """The engine of ``prec``; the fused one only if it runs here and agrees with the plain one on a random map."""
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        plain = Engine(self, dtype, False, self.fp32_items)
        if not fused:
            return plain
        try:
            eng = Engine(self, dtype, True, self.fp32_items)
            x = (np.random.default_rng(0).standard_normal((self.config.in_bands, 48, 64)) * 2).astype(np.float32)
            a, b = self._strip(x, eng), self._strip(x, plain)
            if np.max(np.abs(a - b)) <= (0.5 if prec == "bf16" else 1e-3):
                return eng
        except (RuntimeError, TypeError, AttributeError):  # ops of another signature, or no bf16 kernels here
            pass
        return plain

    def _schedule(self) -> list:
        """The trunk as the pass runs it: ('op', op, relu, run stride, split r or 0) and
        ('block', [c1, c2, c3], ds, split r or 0, run stride of c1 and ds).

        Where a layer's stride keeps the spacing of a phase map's neighbours within ``stride_pix`` it runs as it
        is; otherwise it runs at stride 1 and its output is split into stride^2 phase maps (shift-and-stitch),
        so every op is an ordinary, undilated one. A block's strided 1 x 1 convolutions (the first and the
        downsample) split their *input* instead: the same numbers, and one split of the block's input instead of
        two of its wider outputs.
        """
        steps, spacing = [], 1
        for item in self.trunk:
            if item[0] == "op":
                op = item[1]
                split = spacing * op.stride > self.stride_pix and op.stride > 1
                steps.append(("op", op, item[2], 1 if split else op.stride, op.stride if split else 0))
                spacing *= op.stride
                continue
            (c1, c2, c3), ds = item[1], item[2]
            s = c1.stride
            assert c2.stride == c3.stride == 1 and (ds is None or ds.stride == s)
            split = spacing * s > self.stride_pix and s > 1
            if split:
                assert c1.k == 1 and c1.padding == 0 and (ds is None or (ds.k == 1 and ds.padding == 0))
            steps.append(("block", [c1, c2, c3], ds, s if split else 0, 1 if split else s))
            spacing *= s
        return steps

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
    @torch.inference_mode()
    def _strip(self, scaled: np.ndarray, engine: Engine) -> np.ndarray:
        """Raw scores at every origin anchor (multiples of stride_pix) of one (bands, h, w) scaled strip."""
        g = self.total_stride
        _, h, w = scaled.shape
        x = torch.from_numpy(np.ascontiguousarray(scaled))[None].to(self.device)
        x = engine.prepare(F.pad(x, (0, -w % g, 0, -h % g)))
        parts = engine.run(x)  # [(offsets, raw (phases, h', w') on anchors g apart)]
        s = self.stride_pix
        h1, w1 = parts[0][1].shape[1:]
        out = np.empty((h1 * (g // s), w1 * (g // s)), dtype=np.float32)
        for offsets, raw in parts:
            raw = raw.cpu().numpy()
            for k, (oy, ox) in enumerate(offsets):
                out[oy // s::g // s, ox // s::g // s] = raw[k]
        return out

    def feature_shape(self, shape: tuple[int, int]) -> tuple[int, int, int]:
        """(channels, rows, cols) of the first stage's output on a map of ``shape``: row q at pixel 4 q (the map
        padded to the total stride)."""
        g, fs = self.total_stride, self.feature_spacing
        return (self.config.width * 4, -(-shape[0] // g) * g // fs, -(-shape[1] // g) * g // fs)

    def origins(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Window origins (y0, x0) scored on a map of ``shape``: every window wholly inside, on the grid."""
        n = self.config.npix
        return (np.arange(0, shape[0] - n + 1, self.stride_pix), np.arange(0, shape[1] - n + 1, self.stride_pix))

    def strip_rows(self, width: int, precision: str | None = None) -> int:
        """Rows of window origins per strip so that the last feature map stays within ``budget_mb``."""
        d = min(self.stride_pix, self.total_stride)
        item = 2.0 if (precision or self._main) == "bf16" else 4.0
        # bytes per input row: ~4.2 maps of the last stage's width (fp32, measured: 677 MB peak for a 640 x 1024
        # strip on the 1' grid, where 3 maps would predict 480 MB)
        per_row = item * 4.2 * self.cfeat * max(1, math.ceil(width / d)) / d
        rows = int(self.budget_mb * 2**20 / per_row) - sum(self.margin) - self.config.npix
        return max(self.total_stride, rows // self.total_stride * self.total_stride)

    def _pass(self, maps: np.ndarray, prec: str, progress: ProgressFn | None,
              cancelled: CancelFn | None, features: np.ndarray | None = None, tap_fn=None) -> np.ndarray:
        """Raw scores of every window at :meth:`origins` in one precision, strip by strip; ``features``: an array
        (channels, rows, cols) that receives the first stage's output (:meth:`feature_shape`), or ``tap_fn`` of it
        (a function of the (1, channels, rows, cols) fp32 tensor of each strip)."""
        engine = self._engines[prec]
        engine.tap_fn = tap_fn
        ny, nx = maps.shape[1:]
        oy, ox = self.origins((ny, nx))
        out = np.empty((oy.size, ox.size), dtype=np.float32)
        if out.size == 0:
            return out
        engine.tap = None if features is None else self.tap_item
        fs = self.feature_spacing
        g, n = self.total_stride, self.config.npix
        before, after = self.margin
        rows = self.strip_rows(nx, prec)
        k = 0
        while k < oy.size:
            check_cancel(cancelled, "fully convolutional CNN scoring")
            a0 = int(oy[k])
            a1 = min(int(oy[-1]), a0 + rows - self.stride_pix)  # last origin of this strip
            y_in = max(0, (a0 - before) // g * g)  # on the 16-pixel grid: the layers' grids are the whole map's
            y_end = min(ny, a1 + n + after)
            strip = np.arcsinh(maps[:, y_in:y_end] * self.inv_scale).astype(np.float32)
            raw = self._strip(strip, engine)
            if features is not None:  # the rows the windows with origins a0 .. before the next strip's read
                q0, q1 = a0 // fs, min(features.shape[1], (a1 + self.stride_pix + n) // fs)
                f = engine.tapped[0].cpu().numpy()
                features[:, q0:q1] = f[:, q0 - y_in // fs:q1 - y_in // fs, :features.shape[2]]
                engine.tapped = None
            i0 = (a0 - y_in) // self.stride_pix
            m = (a1 - a0) // self.stride_pix + 1
            out[k:k + m] = raw[i0:i0 + m, :ox.size]
            k += m
            if progress is not None:
                progress(k, oy.size, "fully convolutional CNN scoring")
        return out

    def raw_map(self, maps: np.ndarray, progress: ProgressFn | None = None,
                cancelled: CancelFn | None = None, features: np.ndarray | None = None,
                tap_fn=None) -> np.ndarray:
        """Raw scores (my, mx) float32 of the windows at :meth:`origins` of ``maps`` (bands, ny, nx) uK;
        ``features`` (float32, :meth:`feature_shape`) receives the first stage's output of the same pass (the
        input of :mod:`szviewer.cnn.finehead`), or ``tap_fn`` of it, strip by strip (:meth:`_pass`).

        'checked': the map in bf16, then the sentinels (the ``sentinels`` windows whose calibrated probability is
        nearest 0.5, where a raw-score error moves it most, plus one at random, among the windows whose whole
        receptive field lies in the map) scored again in fp32, exactly, window by window. Their fp32 scores
        replace the bf16 ones; if one of them differs by more than half the assumed bf16 error bound
        (:func:`szviewer.cnn.predict.error_bound`) or by more than ``tol / 2`` in probability, the whole map is
        scored again in fp32 (``stats['fallbacks']``). A map too small to hold a sentinel is scored in fp32.
        """
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3 or maps.shape[0] != self.config.in_bands:
            raise ValueError(f"maps must be ({self.config.in_bands}, ny, nx), not {maps.shape}")
        self.stats["maps"] += 1
        if self.precision != "checked":
            out = self._pass(maps, self.precision, progress, cancelled, features, tap_fn)
            self.stats["windows"] += out.size
            return out
        cand = self._sentinel_candidates(maps.shape[1:])
        if cand is None:
            out = self._pass(maps, "fp32", progress, cancelled, features, tap_fn)
            self.stats["windows"] += out.size
            return out
        out = self._pass(maps, "bf16", progress, cancelled, features, tap_fn)
        self.stats["windows"] += out.size
        iy, ix = cand
        z = out[iy, ix].astype(np.float64)
        logit = self.platt.a * z + self.platt.b
        pick = list(np.argsort(np.abs(logit), kind="stable")[:self.n_sentinels])
        # one more at random, seeded by the map itself: the same map gets the same sentinels whichever process
        # and however many maps before it (a worker's plan sees only some tiles)
        seed = zlib.crc32(np.ascontiguousarray(maps[:, ::97, ::89]).tobytes())
        extra = int(np.random.default_rng(seed).integers(iy.size))
        if extra not in pick:
            pick.append(extra)
        pick = np.asarray(pick)
        check_cancel(cancelled, "fully convolutional CNN scoring")
        z32 = self.sentinel_raw(maps, iy[pick], ix[pick])
        err = np.abs(z32 - z[pick])
        bound = error_bound(z32)
        dp = np.abs(self.platt(z32) - self.platt(z[pick]))
        self.stats["sentinels"] += pick.size
        self.stats["max_err_over_bound"] = max(self.stats["max_err_over_bound"], float(np.max(err / bound)))
        self.stats["max_dp"] = max(self.stats["max_dp"], float(np.max(dp)))
        if np.any(err > 0.5 * bound) or np.any(dp > 0.5 * self.tol):
            self.stats["fallbacks"] += 1
            return self._pass(maps, "fp32", progress, cancelled, features, tap_fn)
        out[iy[pick], ix[pick]] = z32
        return out

    def _sentinel_reach(self) -> int:
        """Pixels of map a sentinel needs on each side of its window: the receptive margin on the 16-px grid."""
        g = self.total_stride
        return int(math.ceil(max(self.margin) / g) * g)

    def _sentinel_candidates(self, shape) -> tuple[np.ndarray, np.ndarray] | None:
        """Indices (iy, ix) into the raw map of the windows whose receptive field lies in the map; None if none."""
        oy, ox = self.origins(shape)
        m, n = self._sentinel_reach(), self.config.npix
        iy = np.nonzero((oy >= m) & (oy + n + m <= shape[0]))[0]
        ix = np.nonzero((ox >= m) & (ox + n + m <= shape[1]))[0]
        if iy.size == 0 or ix.size == 0:
            return None
        gy, gx = np.meshgrid(iy, ix, indexing="ij")
        return gy.ravel(), gx.ravel()

    def sentinel_raw(self, maps: np.ndarray, iy, ix) -> np.ndarray:
        """fp32 raw scores of the windows at raw-map indices (iy, ix), each from its own block of map (the window
        and its receptive field; the blocks one batch) through the fp32 plan at the total stride: equal to the fp32
        map pass there."""
        if self._probe is None:
            fused = self._engines[self._main].fused
            self._probe = FCNPlan(self._net, self.total_stride, device=str(self.device), precision="fp32",
                                  fused=fused)
        m, n, s, g = self._sentinel_reach(), self.config.npix, self.stride_pix, self.total_stride
        blocks = np.stack([maps[:, int(i) * s - m:int(i) * s + n + m, int(j) * s - m:int(j) * s + n + m]
                           for i, j in zip(np.asarray(iy), np.asarray(ix), strict=True)])
        x = torch.from_numpy(np.arcsinh(blocks * self.inv_scale[None]).astype(np.float32)).to(self.device)
        eng = self._probe._engines["fp32"]
        out = np.empty(len(blocks))
        with torch.inference_mode():  # one block at a time: oneDNN's sums over a batch of 3 differed between
            for b in range(len(blocks)):  # 1 and 2 threads (by 7e-9), one block's do not
                ((_, raw),) = eng.run(eng.prepare(x[b:b + 1]))  # no phases at the total stride
                out[b] = float(raw[0, m // g, m // g])
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
    total = cfg.total_stride
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
