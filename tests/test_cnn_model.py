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


def test_detrend_scaling_removes_a_quadratic_and_keeps_a_cluster():
    """'detrend': a band's quadratic surface (CMB / 1/f modes larger than the cutout) goes, a compact decrement
    stays, then the fixed asinh; the projection is idempotent and commutes with the flips of augmentation."""
    from szviewer.cnn.settings import detrend_matrix

    n = 16
    c = np.arange(n) - 7.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    surface = 300 + 20 * yy - 15 * xx + 1.5 * yy**2 - 2 * xx * yy + 0.7 * xx**2  # uK
    blob = -40 * np.exp(-(yy**2 + (xx - 2) ** 2) / (2 * 1.5**2))  # a 2' cluster at 0.5' pixels
    x = torch.from_numpy(np.stack([surface, surface + blob, blob])[None].astype(np.float32))
    net = DeepSZNet(NetConfig(width=8, blocks=(1, 1, 1), npix=16, scaling="detrend", scale_uk=(100.0,) * 3))
    out = net.scale(x)[0].numpy()
    assert np.abs(out[0]).max() < 1e-4  # the surface is gone
    np.testing.assert_allclose(out[1], out[2], atol=1e-4)  # the cluster does not depend on the surface under it
    res = 100 * np.sinh(out[2])
    iy, ix = np.unravel_index(np.argmin(res), res.shape)
    assert -32 < res.min() < -25 and (iy, ix) in ((7, 9), (7, 10), (8, 9), (8, 10))  # most of its depth kept (the
    # fit takes about a quarter) and its place (the blob's centre is at pixel 7.5, 9.5)
    p = detrend_matrix(16)
    np.testing.assert_allclose(p @ p, p, atol=1e-10)
    flip = np.arange(256).reshape(16, 16)[:, ::-1].ravel()
    np.testing.assert_allclose(p[np.ix_(flip, flip)], p, atol=1e-10)


def test_a_sky_with_one_over_f_trains_on_detrended_cutouts():
    from szviewer.jobs.cnn import train_settings

    assert train_settings("quick").net.scaling == "fixed"
    assert train_settings("quick", one_over_f=True).net.scaling == "detrend"
    assert train_settings("quick", overrides={"scaling": "fixed"}, one_over_f=True).net.scaling == "fixed"
    from szviewer.errors import InputError

    with pytest.raises(InputError, match="input scaling 'log'"):
        train_settings("quick", overrides={"scaling": "log"})


def test_config_round_trip():
    assert NetConfig.from_dict(TINY.to_dict()) == TINY


def _trained_bn(config: NetConfig, seed: int = 1) -> DeepSZNet:
    """A network whose BatchNorms have non-trivial running statistics (as after training)."""
    torch.manual_seed(seed)
    net = DeepSZNet(config)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, config.npix, config.npix) * 80)
    return net.eval()


def _cutouts(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 3, 32, 32)) * 80).astype(np.float32)


@pytest.mark.parametrize("scaling", ["fixed", "minmax", "detrend"])
def test_fused_plan_equals_the_eager_network(scaling):
    from szviewer.cnn.fused import STEM_BATCH, FusedPlan, fused_available

    if not fused_available():
        pytest.skip("this PyTorch has no oneDNN fused convolutions")
    net = _trained_bn(NetConfig(**{**TINY_NET, "scaling": scaling}))
    x = _cutouts(53)  # not a multiple of the batch nor of the stem's sub-batch
    with torch.inference_mode():
        ref = raw_score(net(torch.from_numpy(x))).numpy()
        folded = raw_score(fuse_for_inference(net)(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(folded, ref, rtol=1e-4, atol=1e-4)
    plan = FusedPlan(net, torch.float32, batch=24)
    assert 24 < STEM_BATCH * 2 and plan.raw(x).shape == (53,)
    np.testing.assert_allclose(plan.raw(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plan.raw(x[:1]), ref[:1], rtol=1e-4, atol=1e-4)

def test_coarse_pixels_take_the_stem_at_stride_1_and_keep_the_paper_shapes():
    """16 x 16 cutouts of 0.5': the stem's second convolution at stride 1 (NetConfig.stem_stride), so the trunk
    ends at 2 x 2 like the paper's at 32 x 32, every weight has the paper's shape, and the fused plan (which
    sizes its convolutions from the config) still equals the eager network."""
    from szviewer.cnn.fused import FusedPlan, fused_available
    from szviewer.cnn.settings import stem_stride_for

    assert stem_stride_for(32) == 2 and stem_stride_for(16) == 1
    paper, coarse = NetConfig(), NetConfig(npix=16, stem_stride=1)
    assert coarse.total_stride == 8 and paper.total_stride == 16 and coarse.feature_size == paper.feature_size == 4096
    with pytest.raises(ValueError, match="stem_stride"):
        NetConfig(stem_stride=3)
    assert NetConfig.from_dict({k: v for k, v in paper.to_dict().items() if k != "stem_stride"}) == paper  # old cards
    a, b = DeepSZNet(paper).state_dict(), DeepSZNet(coarse).state_dict()
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    net = _trained_bn(NetConfig(**{**TINY_NET, "npix": 16, "stem_stride": 1}))
    x = _cutouts(29)[:, :, :16, :16].copy()
    with torch.inference_mode():
        assert net.features(torch.from_numpy(x)).shape == (29, 128, 2, 2)
        ref = raw_score(net(torch.from_numpy(x))).numpy()
    if fused_available():
        np.testing.assert_allclose(FusedPlan(net, torch.float32, batch=8).raw(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("native", [True, False], ids=["bf16-native", "bf16-emulated"])
def test_bf16_plan_where_native_and_the_fallback_elsewhere(native, monkeypatch):
    """bf16 runs in the fused plan only where the CPU has it (AVX-512 BF16 / AMX); elsewhere oneDNN refuses the
    bf16 weights and the Scorer falls back to the folded modules, which give the same bf16-close scores."""
    import szviewer.cnn.predict as predict_mod
    from szviewer.cnn.fused import FusedPlan, bf16_native, fused_available

    if not fused_available():
        pytest.skip("this PyTorch has no oneDNN fused convolutions")
    if native and not bf16_native():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 or AMX): the fallback case runs instead")
    net = _trained_bn(TINY)
    x = _cutouts(53, seed=5)
    with torch.inference_mode():
        ref = raw_score(net(torch.from_numpy(x))).numpy()
    if native:
        bf = FusedPlan(net, torch.bfloat16, batch=24).raw(x)
    else:
        # force the path a CPU without native bf16 takes, whatever this CPU has
        def refuse(*args, **kwargs):
            raise RuntimeError("mkldnn_reorder_conv2d_weight: bf16 path needs the cpu support avx_ne_convert or "
                               "avx512bw, avx512vl and avx512dq")

        monkeypatch.setattr(predict_mod, "FusedPlan", refuse)
        scorer = Scorer(net, batch=24, precision="bf16")
        assert scorer.engine == "modules"
        bf = scorer.raw(x)
    assert np.max(np.abs(bf - ref)) < 0.05 * (1 + np.max(np.abs(ref)))  # bf16: close, not equal
    assert np.max(np.abs(bf - ref)) > 0


def test_3x3_convolution_on_2x2_as_one_matrix_product():
    from szviewer.cnn.fused import _Conv3x3On2x2

    g = torch.Generator().manual_seed(4)
    w, b = torch.randn(6, 5, 3, 3, generator=g), torch.randn(6, generator=g)
    x = torch.randn(7, 5, 2, 2, generator=g).contiguous(memory_format=torch.channels_last)
    ref = torch.nn.functional.conv2d(x, w, b, padding=1)
    conv = _Conv3x3On2x2(w, b, torch.float32)
    np.testing.assert_allclose(conv(x, relu=False).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv(x).numpy(), ref.clamp_min(0).numpy(), rtol=1e-5, atol=1e-5)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)


def test_scorer_precisions_and_engines(monkeypatch):
    import szviewer.cnn.predict as predict_mod

    net = _trained_bn(TINY)
    x = _cutouts(40, seed=1)
    ref = Scorer(net, fast=False, batch=16).raw(x)
    with torch.inference_mode():
        np.testing.assert_allclose(ref, raw_score(net(torch.from_numpy(x))).numpy(), rtol=1e-5, atol=1e-5)
    fp32 = Scorer(net, batch=16, precision="fp32")
    np.testing.assert_allclose(fp32.raw(x), ref, rtol=1e-4, atol=1e-4)
    # without the fused ops (another PyTorch build) the folded modules give the same numbers
    monkeypatch.setattr(predict_mod, "fused_available", lambda: False)
    mods = Scorer(net, batch=16, precision="fp32")
    assert mods.engine == "modules"
    np.testing.assert_allclose(mods.raw(x), ref, rtol=1e-4, atol=1e-4)
    bf = Scorer(net, batch=16, precision="bf16").raw(x)
    assert 0 < np.max(np.abs(bf - ref)) < 0.05 * (1 + np.max(np.abs(ref)))
    import szviewer.cnn.fused as fused

    monkeypatch.setattr(fused, "bf16_native", lambda: True)
    assert predict_mod.resolve_precision("auto") == "checked"
    monkeypatch.setattr(fused, "bf16_native", lambda: False)
    assert predict_mod.resolve_precision("auto") == "fp32"
    assert Scorer(net, fast=False, precision="bf16").precision == "fp32"  # the eager reference is fp32
    with pytest.raises(ValueError, match="precision"):
        Scorer(net, precision="fp16")


CPUS = {  # (oneDNN's own bf16 check, cpuinfo flags) -> is bf16 native?
    "AVX2 (Zen 2/3, Haswell..Alder Lake)": (False, {"avx2": True}, False),
    "AVX-512 without BF16 (Skylake-X, Cascade Lake, Ice Lake)": (True, {"avx512_f": True, "avx512_bw": True}, False),
    "AVX-512 BF16 (Zen 4, Cooper Lake)": (True, {"avx512_f": True, "avx512_bf16": True}, True),
    "AMX (Sapphire Rapids)": (True, {"avx512_f": True, "amx_tile": True, "amx_bf16": True}, True),
}


@pytest.mark.parametrize("cpu", list(CPUS))
def test_bf16_is_native_only_with_bf16_hardware(cpu, monkeypatch):
    """oneDNN says 'bf16 supported' on AVX-512 CPUs that only emulate it; szviewer uses bf16 only where it is
    computed in hardware, and then every path agrees: predict's 'auto', dense scoring, training autocast."""
    import szviewer.cnn.fused as fused
    import szviewer.cnn.predict as predict_mod
    from szviewer.cnn.train import bf16_autocast_pays

    onednn, flags, native = CPUS[cpu]
    monkeypatch.setattr(fused, "_onednn_bf16", lambda: onednn)
    monkeypatch.setattr(fused, "cpu_features", lambda: {k: flags.get(k, False) for k in (
        "avx2", "avx512_f", "avx512_bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "avx_ne_convert")})
    monkeypatch.setattr(fused.platform, "machine", lambda: "x86_64")
    assert fused.bf16_native() is native
    assert predict_mod.resolve_precision("auto") == ("checked" if native else "fp32")
    assert bf16_autocast_pays("cpu") is native
    assert Scorer(_trained_bn(TINY), batch=16).precision == ("checked" if native else "fp32")


def test_this_cpu_uses_fp32_unless_bf16_is_native():
    from szviewer.cnn.fused import bf16_native, cpu_features
    from szviewer.cnn.predict import resolve_precision

    f = cpu_features()
    assert bf16_native() == (f["avx512_bf16"] or f["amx_bf16"])
    if not bf16_native():  # e.g. AVX2 only: 'auto' is fp32 everywhere
        assert resolve_precision("auto") == "fp32"


def test_streams_give_the_same_scores_and_restore_the_threads(monkeypatch):
    """Several batches at once on single-threaded workers: the very same numbers as one batch at a time (each is
    one thread's arithmetic either way), on the fused plan and on the module fallback; the thread count is back."""
    import szviewer.cnn.predict as predict_mod

    net = _trained_bn(TINY)
    x = _cutouts(100, seed=7)  # 7 batches of 16, the last short
    threads = torch.get_num_threads()
    assert Scorer(net, batch=16, precision="fp32").streams == threads  # the default: one stream per thread
    one = Scorer(net, batch=16, precision="fp32", streams=1).raw(x)
    many = Scorer(net, batch=16, precision="fp32", streams=3)
    np.testing.assert_array_equal(many.raw(x), one)
    assert torch.get_num_threads() == threads
    monkeypatch.setattr(predict_mod, "fused_available", lambda: False)
    mods = Scorer(net, batch=16, precision="fp32", streams=3)
    assert mods.engine == "modules"
    np.testing.assert_array_equal(mods.raw(x), Scorer(net, batch=16, precision="fp32", streams=1).raw(x))
    np.testing.assert_allclose(mods.raw(x), one, rtol=1e-4, atol=1e-4)
    assert torch.get_num_threads() == threads


def test_uncertain_band_of_the_checked_precision():
    from szviewer.cnn.modelfile import Platt
    from szviewer.cnn.predict import BF16_ERR_ABS, uncertain

    platt = Platt(1.5, -2.0)  # p = 0.5 at z = 4/3
    z = np.array([-30.0, -8.0, 0.0, 4 / 3, 3.0, 12.0, 40.0])
    band = uncertain(z, platt, tol=0.01)
    # at the boundary the slope is a/4 = 0.375 per unit z: a bound of 0.15 moves p by ~0.056 > 0.01
    assert band.tolist() == [False, False, True, True, True, False, False]
    # the worst-case move equals the definition at the edge of the band
    zz = np.linspace(-10, 15, 2001)
    b = uncertain(zz, platt, tol=0.01)
    d = BF16_ERR_ABS + 0.01 * np.abs(zz)
    move = np.maximum(platt(zz + d) - platt(zz), platt(zz) - platt(zz - d))
    assert np.array_equal(b, move > 0.01)
    assert uncertain(zz, platt, tol=0.01, scale=4.0).sum() > b.sum()  # a wider bound, a wider band


def test_checked_precision_holds_the_tolerance(monkeypatch):
    import szviewer.cnn.predict as predict_mod
    from szviewer.cnn.modelfile import Platt

    net = _trained_bn(TINY, seed=2)
    with torch.no_grad():  # raw scores spread over +-10 like a trained network's, not +-0.03
        net.head[-1].weight.mul_(300.0)
    x = _cutouts(300, seed=3)
    ref = Scorer(net, fast=False, batch=64).raw(x)
    assert np.ptp(ref) > 5
    platt = Platt(1.5, -1.5 * float(np.median(ref)))  # centre the sigmoid on these cutouts: many uncertain ones
    s = Scorer(net, batch=64, precision="checked", platt=platt, tol=0.01)
    got = s.raw(x)
    assert np.max(np.abs(platt(got) - platt(ref))) <= 0.01
    n_band = int(predict_mod.uncertain(got, platt, 0.01).sum())
    assert 0 < s.stats["refined"] < len(x) and s.stats["refined"] >= n_band
    exact = np.abs(got - ref) < 1e-4  # the re-scored cutouts carry fp32 scores
    assert exact.sum() >= s.stats["refined"]
    assert s.stats["max_err_over_bound"] > 0
    # a bound far below this network's bf16 error is caught on the re-scored cutouts and widened until it holds
    monkeypatch.setattr(predict_mod, "BF16_ERR_ABS", 1e-5)
    monkeypatch.setattr(predict_mod, "BF16_ERR_REL", 0.0)
    tight = Scorer(net, batch=64, precision="checked", platt=platt, tol=0.01)
    got = tight.raw(x)
    assert tight.bound_scale > 1000
    assert np.max(np.abs(platt(got) - platt(ref))) <= 0.01


def test_importing_cnn_package_and_job_is_cheap():
    code = ("import sys, szviewer.cnn, szviewer.jobs.cnn, szviewer.cnn.settings as st; "
            "st.estimate_seconds(st.TrainSettings.preset_named('quick'), {'step_seconds': 1.0, "
            "'eval_seconds_per_cutout': 0.0}, n_val=10); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
