"""The DeepSZ network: ResNet-50 adapted to 32 x 32 cutouts (paper section 2.2.1, Fig. 3; SCIENCE.md section 4).

- Stem (paper 2.2.1 item 1): the 7x7 stride-2 convolution of ResNet-50 is replaced by conv3x3 stride 1 -> BN ->
  ReLU -> conv3x3 stride 2 -> BN -> ReLU -> 2x2 max-pool (32 -> 16 -> 8 pixels). Cutouts of 0.5' pixels
  (16 x 16) take the second convolution at stride 1 (``NetConfig.stem_stride``): 16 -> 16 -> 8, the paper's
  angles from there on (a deviation from the paper, which had 0.25' pixels only).
- ResNet-50 stages 1-3 (3, 4, 6 bottleneck blocks of width 64, 128, 256, expansion 4), output 1024 x 2 x 2;
  there is no 4th stage (paper 2.2.1 item 2). As in the released code (maskrcnn-benchmark ``R-50-C4`` with
  ``STRIDE_IN_1X1: true``) a downsampling block puts its stride in the first 1x1 convolution.
- Head (released code): BatchNorm1d(4096) -> FC 256 -> ReLU -> FC 256 -> ReLU -> FC 2 (a 2-class softmax).
- Input scaling lives inside the model so callers always pass cutouts in uK_CMB:
  ``'minmax'`` is the released code's per-cutout min-max over the three bands jointly to [0, 1];
  ``'fixed'`` is ``asinh(x / scale_uk[band])``, which keeps the absolute decrement amplitude;
  ``'detrend'`` removes each band's least-squares quadratic surface from the cutout first
  (:func:`szviewer.cnn.settings.detrend_matrix`), then scales as 'fixed': for maps with atmospheric 1/f noise,
  whose cutouts are dominated by modes larger than the cutout.

``width`` (base channels) and ``blocks`` exist only to build tiny networks for tests; the defaults are the
paper's. The raw score of a cutout is the logit difference ``z1 - z0`` (``log p/(1-p)`` of the softmax),
which Platt scaling maps to a calibrated probability (paper section 2.2.2, :mod:`szviewer.cnn.calibrate`).
"""

from __future__ import annotations

import torch
from torch import nn

from szviewer.cnn.settings import SCALINGS, NetConfig, detrend_matrix

__all__ = ["ARCH_NAME", "ARCH_VERSION", "SCALINGS", "NetConfig", "DeepSZNet", "InputScaling", "Bottleneck", "raw_score",
           "count_parameters"]

ARCH_NAME = "deepsz-resnet50-32"
ARCH_VERSION = 1


class InputScaling(nn.Module):
    """Scale uK cutouts to the network's input range ('minmax' of the released code, 'fixed' asinh, or 'detrend'
    then asinh). ``npix``: the cutout side ('detrend' only)."""

    def __init__(self, scaling: str, scale_uk, npix: int = 32):
        super().__init__()
        self.scaling = scaling
        self.register_buffer("inv_scale", 1.0 / torch.tensor(scale_uk, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        if scaling == "detrend":
            self.register_buffer("detrend", torch.from_numpy(detrend_matrix(npix)).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.scaling == "minmax":
            flat = x.flatten(1)
            lo = flat.amin(dim=1).view(-1, 1, 1, 1)
            hi = flat.amax(dim=1).view(-1, 1, 1, 1)
            return (x - lo) / (hi - lo).clamp_min(1e-12)
        if self.scaling == "detrend":
            x = (x.flatten(2) @ self.detrend).view_as(x)
        return torch.asinh(x * self.inv_scale)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (x4), BN after each, ReLU after the sum (paper Fig. 3)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class DeepSZNet(nn.Module):
    """The DeepSZ ResNet (paper section 2.2.1). ``forward`` takes (n, 3, 32, 32) uK and returns (n, 2) logits."""

    def __init__(self, config: NetConfig | None = None):
        super().__init__()
        self.config = config = config or NetConfig()
        w = config.width
        self.scale = InputScaling(config.scaling, config.scale_uk, config.npix)
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_bands, w, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, stride=config.stem_stride, padding=1, bias=False), nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=2),
        )
        stages = []
        cin = w
        for i, n in enumerate(config.blocks):
            width = w * 2**i
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, width, stride=2 if (i > 0 and j == 0) else 1))
                cin = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Flatten(), nn.BatchNorm1d(config.feature_size),
            nn.Linear(config.feature_size, config.head), nn.ReLU(inplace=True),
            nn.Linear(config.head, config.head), nn.ReLU(inplace=True),
            nn.Linear(config.head, 2),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch (He et al. 2019 "bag of tricks")
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(x)
        if self.stem[0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def raw_score(logits: torch.Tensor) -> torch.Tensor:
    """The raw CNN output used for ranking and calibration: the logit difference z1 - z0 (float32)."""
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
