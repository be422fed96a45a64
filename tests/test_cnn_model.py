"""The DeepSZ network (paper section 2.2.1): shapes, parameter count, input scaling, fused fast inference."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.model import DeepSZNet, NetConfig, count_parameters, raw_score  # noqa: E402
from szviewer.cnn.predict import Scorer, fuse_for_inference  # noqa: E402

TINY = NetConfig(**TINY_NET)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_paper_network_shapes_and_size():
    torch.manual_seed(0)
    net = DeepSZNet().eval()
    cfg = net.config
    assert cfg.blocks == (3, 4, 6) and cfg.width == 64 and cfg.head == 256 and cfg.scaling == "minmax"
    assert cfg.feature_size == 4096
    # ResNet-50 stages 1-3 (~8.5 M) + stem + head BatchNorm1d(4096) -> 256 -> 256 -> 2 (~1.1 M)
    assert count_parameters(net) == 9_695_938
    x = torch.randn(2, 3, 32, 32) * 100
    with torch.inference_mode():
        feats = net.features(x)
        out = net(x)
    assert feats.shape == (2, 1024, 2, 2)
    assert out.shape == (2, 2)
    assert len(net.stages) == 3 and [len(s) for s in net.stages] == [3, 4, 6]
    assert net.head[1].num_features == 4096 and net.head[-1].out_features == 2


def test_input_scaling():
    x = torch.randn(4, 3, 32, 32) * 50 + 7
    mm = DeepSZNet(NetConfig(width=8, blocks=(1, 1, 1), scaling="minmax")).scale(x)
    flat = mm.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(4)) and torch.allclose(flat.max(1).values, torch.ones(4))
    fx = DeepSZNet(NetConfig(width=8, blocks=(1, 1, 1), scaling="fixed", scale_uk=(100.0, 50.0, 25.0))).scale(x)
    assert torch.allclose(fx[:, 1], torch.asinh(x[:, 1] / 50.0), atol=1e-6)
    with pytest.raises(ValueError):
        NetConfig(scaling="log")


def test_config_round_trip():
    assert NetConfig.from_dict(TINY.to_dict()) == TINY


def test_fused_fast_scorer_matches_fp32():
    torch.manual_seed(1)
    net = DeepSZNet(TINY)
    net.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32) * 80)
    net.eval()
    x = (np.random.default_rng(0).standard_normal((64, 3, 32, 32)) * 80).astype(np.float32)
    with torch.inference_mode():
        ref = raw_score(net(torch.from_numpy(x))).numpy()
        fused = raw_score(fuse_for_inference(net)(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(fused, ref, rtol=1e-4, atol=1e-4)
    fast = Scorer(net, fast=True, batch=16, precision="bf16").raw(x)
    slow = Scorer(net, fast=False, batch=16).raw(x)
    np.testing.assert_allclose(slow, ref, rtol=1e-5, atol=1e-5)
    sig = lambda r: 1 / (1 + np.exp(-r))  # noqa: E731
    assert np.max(np.abs(sig(fast) - sig(slow))) < 0.01
    # the default fast path (fused, channels-last, fp32) equals the eager network
    np.testing.assert_allclose(Scorer(net, fast=True, batch=16).raw(x), ref, rtol=1e-4, atol=1e-4)


def test_importing_cnn_package_and_job_is_cheap():
    code = "import sys, szviewer.cnn, szviewer.jobs.cnn; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
