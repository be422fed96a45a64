"""The DeepSZ network as one fused oneDNN plan for CPU inference (fp32 or bf16); same outputs, fewer passes.

:class:`FusedPlan` runs the eval-mode network of :mod:`szviewer.cnn.model` with:

- every BatchNorm folded into its convolution, weights pre-packed once into oneDNN's blocked layout;
- each convolution's ReLU, and each block's residual sum + ReLU, fused into the convolution
  (``torch.ops.mkldnn._convolution_pointwise``, the kernels ``torch.compile`` uses on CPU), so a bottleneck block is
  three or four oneDNN calls and no separate elementwise pass over memory;
- a 3x3 convolution on a 2 x 2 map (stage 3) as one matrix product over the four pixels: only 4 of its 9 taps
  ever meet data there, so the product does 4/9 of the convolution's multiplications (7% faster overall);
- channels-last activations, the input scaling done in numpy (``np.arcsinh`` is ~10x faster than torch's);
- the stem run on sub-batches of 32 cutouts: its 32 x 32 x 64 activations are the largest of the network and
  stay in cache that way (4x faster for the first convolution here);
- in bf16 (``dtype=torch.bfloat16``), the first convolution keeps fp32 accuracy by splitting its input and
  weights into bf16 high and low parts (``x w ~ x_hi w_hi + x_lo w_hi + x_hi w_lo``, 9 input channels instead of
  3, accumulated in fp32 by oneDNN): rounding the three input bands to bf16 would cost most of the accuracy,
  and an fp32 convolution on 3 channels is slow. The fully connected head always runs in fp32.

The ops used are private to PyTorch: :func:`fused_available` checks that they exist and :func:`check_plan`
compares a built plan with the eager network on a few cutouts; :class:`szviewer.cnn.predict.Scorer` runs both
and falls back to the folded network as plain modules on a PyTorch where either fails.
"""

from __future__ import annotations

import contextlib
import platform
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from szviewer.cnn.model import Bottleneck, DeepSZNet, raw_score
from szviewer.cnn.settings import detrend_matrix

STEM_BATCH = 32


def batched(images: np.ndarray, batch: int, forward, streams: int = 1) -> np.ndarray:
    """Raw scores (float32, (n,)) of ``images``: ``forward`` applied to ``batch`` rows at a time.

    ``streams`` > 1 (CPU): that many batches at once, each on its own single-threaded worker, instead of one
    batch at a time on all of PyTorch's intra-op threads. The network's late layers (8 x 8 to 2 x 2 maps) are too
    small to split well across threads: every layer ends at a barrier that waits for the slowest thread, which
    costs most when other work shares the cores. Independent streams never wait on each other (what OpenVINO's
    throughput mode does); measured here: 2.1x the single-stream plan on 2 busy AVX2 cores. The intra-op thread
    count is 1 while the streams run and restored after, so do not run other torch work in this process then.
    """
    out = np.empty(len(images), dtype=np.float32)
    starts = range(0, len(images), batch)
    streams = min(int(streams), len(starts))
    if streams <= 1:
        with torch.inference_mode():
            for a in starts:
                out[a:a + batch] = forward(images[a:a + batch])
        return out

    def work(a: int) -> None:
        torch.set_num_threads(1)  # this worker's own OpenMP team: one thread
        with torch.inference_mode():  # thread-local, like the caller's
            out[a:a + batch] = forward(images[a:a + batch])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(streams, thread_name_prefix="szviewer-cnn") as pool:
            for _ in pool.map(work, starts):  # batches are handed out as workers free up
                pass
    finally:
        torch.set_num_threads(threads)
    return out


def default_streams(device: str = "cpu") -> int:
    """Inference streams for :func:`batched`: one per intra-op thread on a CPU, one on a GPU."""
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


def fused_available() -> bool:
    """True when this PyTorch has the oneDNN fused-convolution ops the plan needs."""
    mk = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.backends.mkldnn.is_available() and mk is not None
                and hasattr(mk, "_convolution_pointwise") and hasattr(mk, "_reorder_convolution_weight"))
    except (AttributeError, RuntimeError):
        return False


def cpu_features() -> dict[str, bool]:
    """The CPU's bf16-relevant features as PyTorch's cpuinfo sees them (x86 flags; empty elsewhere)."""
    caps = {}
    with contextlib.suppress(AttributeError, RuntimeError, ImportError):
        caps = dict(torch.cpu.get_capabilities())
    if not caps:  # an older PyTorch: the kernel's flags (Linux)
        with contextlib.suppress(OSError):
            text = Path("/proc/cpuinfo").read_text()
            line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
            caps = dict.fromkeys(line.partition(":")[2].split(), True)
            caps["avx512_f"], caps["avx512_bw"] = caps.get("avx512f", False), caps.get("avx512bw", False)
    keys = ("avx2", "avx512_f", "avx512_bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "avx_ne_convert")
    return {k: bool(caps.get(k, False)) for k in keys}


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_native() -> bool:
    """True when the CPU computes bf16 dot products in hardware (x86: AVX-512 BF16 or AMX-BF16; ARM: the BF16
    extension), where bf16 inference and training pay off.

    oneDNN's own test (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on AVX-512 CPUs without BF16
    (Skylake-X, Cascade Lake, Ice Lake), where it emulates bf16 more slowly than fp32, so it is only a necessary
    condition here.
    """
    if not _onednn_bf16():
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # aarch64: oneDNN says yes only with the BF16 extension
    f = cpu_features()
    return f["avx512_bf16"] or f["amx_bf16"]


def bf16_native_on(device_type: str) -> bool:
    """The one rule for every bf16 path (training autocast, inference 'auto'): bf16 only where it is native,
    i.e. :func:`bf16_native` on a CPU, compute capability >= 8 (Ampere and later) on CUDA; never emulated."""
    if device_type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # a PyTorch before the argument existed (it did not count emulation then)
            return bool(torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        return bf16_native()
    return False


def folded(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) in fp32 of ``conv`` followed by eval-mode ``bn``."""
    w = conv.weight.detach().float()
    bias = torch.zeros(w.shape[0]) if conv.bias is None else conv.bias.detach().float()
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return w * scale.view(-1, 1, 1, 1), bn.bias.detach().float() + (bias - bn.running_mean.float()) * scale


class _Conv:
    """One convolution with a pre-packed weight, its bias and an optional fused ReLU or residual sum + ReLU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int, dtype: torch.dtype,
                 batch: int, in_hw: int):
        self.padding, self.stride, self.dilation = [padding] * 2, [stride] * 2, [1, 1]
        w = weight.to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = bias.to(dtype)
        self.weight = torch.ops.mkldnn._reorder_convolution_weight(
            w, self.padding, self.stride, self.dilation, 1, [batch, w.shape[1], in_hw, in_hw])

    def __call__(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                       self.dilation, 1, "relu" if relu else "none", [], "")

    def add_relu(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """relu(conv(x) + other)."""
        return torch.ops.mkldnn._convolution_pointwise.binary(x, other, self.weight, self.bias, self.padding,
                                                              self.stride, self.dilation, 1, "add", None, "relu",
                                                              [], "")


class _Conv3x3On2x2:
    """A 3x3, stride-1, pad-1 convolution + ReLU on a 2 x 2 map as one (n, 4 ci) x (4 ci, 4 co) matrix product.

    Output pixel o = (yo, xo) sees input pixel i = (yi, xi) through tap (1 + yi - yo, 1 + xi - xo); taps that
    would meet the zero padding are left out, which is exact.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
        co, ci = weight.shape[:2]
        big = torch.zeros(4, co, 4, ci)  # (output pixel, co, input pixel, ci)
        for po in range(4):
            yo, xo = divmod(po, 2)
            for pi in range(4):
                yi, xi = divmod(pi, 2)
                big[po, :, pi, :] = weight[:, :, 1 + yi - yo, 1 + xi - xo]
        self.weight_t = big.reshape(4 * co, 4 * ci).t().contiguous().to(dtype)
        self.bias = bias.repeat(4).to(dtype)
        self.co = co

    def __call__(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        n = x.shape[0]
        y = torch.addmm(self.bias, x.permute(0, 2, 3, 1).reshape(n, -1), self.weight_t)  # channels-last pixels
        if relu:
            y = torch.relu_(y)
        return y.view(n, 2, 2, self.co).permute(0, 3, 1, 2)  # a channels-last (n, co, 2, 2) tensor


class FusedPlan:
    """Raw scores (logit differences z1 - z0) of uK cutouts through the fused network; CPU only."""

    def __init__(self, net: DeepSZNet, dtype: torch.dtype = torch.float32, batch: int = 128, streams: int = 1):
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be float32 or bfloat16, not {dtype}")
        net = net.eval()
        self.dtype = dtype
        self.batch = batch
        self.streams = streams  # batches scored at once on single-threaded workers (:func:`batched`)
        cfg = net.config
        self.config = cfg
        self.inv_scale = (1.0 / np.asarray(cfg.scale_uk, dtype=np.float32)).reshape(1, -1, 1, 1)
        self._detrend = detrend_matrix(cfg.npix).astype(np.float32) if cfg.scaling == "detrend" else None
        stem = net.stem
        w, b = folded(stem[0], stem[1])
        if dtype == torch.bfloat16:
            hi = w.to(dtype).float()
            w = torch.cat([hi, hi, (w - hi).to(dtype).float()], dim=1)  # pairs with the input [x_hi, x_lo, x_hi]
        sb = min(batch, STEM_BATCH)
        self.stem1 = _Conv(w, b, stem[0].stride[0], stem[0].padding[0], dtype, sb, cfg.npix)
        self.stem2 = _Conv(*folded(stem[3], stem[4]), stem[3].stride[0], stem[3].padding[0], dtype, sb, cfg.npix)
        self.blocks = []
        hw = cfg.npix // cfg.stage1_stride
        for stage in net.stages:
            for blk in stage:
                assert isinstance(blk, Bottleneck)
                s = blk.conv1.stride[0]
                ds = None
                if blk.downsample is not None:
                    ds = _Conv(*folded(blk.downsample[0], blk.downsample[1]), s, 0, dtype, batch, hw)
                if hw // s == 2 and blk.conv2.kernel_size == (3, 3) and blk.conv2.padding == (1, 1):
                    c2 = _Conv3x3On2x2(*folded(blk.conv2, blk.bn2), dtype)
                else:
                    c2 = _Conv(*folded(blk.conv2, blk.bn2), 1, 1, dtype, batch, hw // s)
                self.blocks.append((_Conv(*folded(blk.conv1, blk.bn1), s, 0, dtype, batch, hw), c2,
                                    _Conv(*folded(blk.conv3, blk.bn3), 1, 0, dtype, batch, hw // s), ds))
                hw //= s
        self.head = net.head  # fp32 modules: BatchNorm1d, Linear, ReLU
        self.pool = stem[6]

    def scale(self, images: np.ndarray) -> np.ndarray:
        """The model's input scaling (:class:`szviewer.cnn.model.InputScaling`) in numpy, float32."""
        x = np.asarray(images, dtype=np.float32)
        if self.config.scaling == "minmax":
            flat = x.reshape(len(x), -1)
            lo = flat.min(axis=1).reshape(-1, 1, 1, 1)
            hi = flat.max(axis=1).reshape(-1, 1, 1, 1)
            return (x - lo) / np.maximum(hi - lo, np.float32(1e-12))
        if self.config.scaling == "detrend":
            n, b, h, w = x.shape
            x = (x.reshape(n, b, h * w) @ self._detrend).reshape(n, b, h, w)
        return np.arcsinh(x * self.inv_scale)

    def _stem(self, h: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.bfloat16:
            hi = h.to(torch.bfloat16)
            lo = (h - hi.float()).to(torch.bfloat16)
            h = torch.cat([hi, lo, hi], dim=1)
        h = h.contiguous(memory_format=torch.channels_last)
        return torch.cat([self.pool(self.stem2(self.stem1(h[a:a + STEM_BATCH])))
                          for a in range(0, len(h), STEM_BATCH)])

    def _forward(self, images: np.ndarray) -> np.ndarray:
        x = self._stem(torch.from_numpy(self.scale(images)))
        for c1, c2, c3, ds in self.blocks:
            idt = x if ds is None else ds(x, relu=False)
            x = c3.add_relu(c2(c1(x)), idt)
        return raw_score(self.head(x.float())).numpy()

    @torch.inference_mode()
    def raw(self, images: np.ndarray) -> np.ndarray:
        """Raw scores of (n, bands, npix, npix) uK cutouts, ``batch`` at a time (``streams`` at once): float32 (n,)."""
        return batched(images, self.batch, self._forward, self.streams)


def check_plan(plan: FusedPlan, net: DeepSZNet, atol: float) -> float:
    """Largest |raw difference| of ``plan`` from the eager network on a few seeded random cutouts; raises if > atol."""
    x = (np.random.default_rng(0).standard_normal((4, net.config.in_bands, net.config.npix, net.config.npix))
         * 100).astype(np.float32)
    with torch.inference_mode():
        ref = raw_score(net.eval()(torch.from_numpy(x))).numpy()
    diff = float(np.max(np.abs(plan.raw(x) - ref)))
    if not diff <= atol:
        raise RuntimeError(f"fused plan differs from the network by {diff:g} (> {atol:g})")
    return diff
