"""The fully convolutional CNN finder (issue 13 part 2): equality with the per-window network, peaks, the job."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.dense import position_error_arcmin, subpixel_peaks  # noqa: E402
from szviewer.cnn.fcn import FCNPlan, context_window_raw  # noqa: E402
from szviewer.cnn.model import DeepSZNet, NetConfig  # noqa: E402
from szviewer.cnn.modelfile import Platt  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PLATT = Platt(0.9, -2.7)


def _tiny(seed: int = 0, **kw) -> DeepSZNet:
    """A tiny network whose BatchNorms hold non-trivial eval statistics (so folding them is tested)."""
    torch.manual_seed(seed)
    net = DeepSZNet(NetConfig(**{**TINY_NET, **kw}))
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _interior(plan: FCNPlan, shape, margin: int, every: int = 1):
    oy, ox = plan.origins(shape)
    n = plan.config.npix
    return [(i, j) for i in range(oy.size) for j in range(ox.size)
            if margin <= oy[i] <= shape[0] - n - margin and margin <= ox[j] <= shape[1] - n - margin][::every]


def _needs_bf16():
    from szviewer.cnn.fused import bf16_native

    if not bf16_native():
        pytest.skip("bf16 is not native on this CPU: 'auto' is fp32 here (tested by forcing it)")


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("stride_pix", [16, 8, 4, 2])
def test_fcn_equals_the_per_window_network_with_context(stride_pix, fused):
    net = _tiny()
    maps = (np.random.default_rng(1).standard_normal((3, 150, 170)) * 80).astype(np.float32)
    plan = FCNPlan(net, stride_pix, precision="fp32", fused=fused)
    if fused is False:
        assert plan.engine == "plain"  # the fallback without the oneDNN fused ops, forced
    raw = plan.raw_map(maps)
    oy, ox = plan.origins(maps.shape[1:])
    assert raw.shape == (oy.size, ox.size) == (len(range(0, 150 - 31, stride_pix)), len(range(0, 170 - 31, stride_pix)))
    margin = 32  # >= the tiny network's reach (plan.margin) and a multiple of its total stride
    assert max(plan.margin) <= margin
    sel = _interior(plan, maps.shape[1:], margin, every=max(1, stride_pix // 4))
    assert len(sel) >= 4
    ref = context_window_raw(net, maps, [oy[i] for i, _ in sel], [ox[j] for _, j in sel], margin=margin)
    got = np.array([raw[i, j] for i, j in sel])
    assert np.max(np.abs(PLATT(got) - PLATT(ref))) < 1e-4
    assert np.max(np.abs(got - ref)) < 1e-4
    assert np.std(ref) > 0.01  # the windows differ, so equality is not trivial


@pytest.mark.parametrize("stride_pix", [8, 2])
def test_fcn_of_a_coarse_pixel_network_equals_its_windows(stride_pix):
    """The 0.5'-pixel network (16 x 16 windows, stem at stride 1: total stride 8) through the same plan."""
    net = _tiny(3, npix=16, stem_stride=1)
    maps = (np.random.default_rng(2).standard_normal((3, 90, 100)) * 80).astype(np.float32)
    plan = FCNPlan(net, stride_pix, precision="fp32")
    assert plan.total_stride == 8
    with pytest.raises(ValueError, match="stride_pix"):
        FCNPlan(net, 16)
    raw = plan.raw_map(maps)
    oy, ox = plan.origins(maps.shape[1:])
    assert raw.shape == (len(range(0, 90 - 15, stride_pix)), len(range(0, 100 - 15, stride_pix)))
    margin = 24
    assert max(plan.margin) <= margin
    sel = _interior(plan, maps.shape[1:], margin)
    assert len(sel) >= 4
    ref = context_window_raw(net, maps, [oy[i] for i, _ in sel], [ox[j] for _, j in sel], margin=margin)
    got = np.array([raw[i, j] for i, j in sel])
    assert np.max(np.abs(got - ref)) < 1e-5 and np.std(ref) > 1e-3  # 100x the tolerance: the windows differ


def test_strips_give_the_one_pass_numbers():
    net = _tiny(3)
    maps = (np.random.default_rng(2).standard_normal((3, 200, 120)) * 60).astype(np.float32)
    one = FCNPlan(net, 4, precision="fp32").raw_map(maps)
    small = FCNPlan(net, 4, budget_mb=0.5, precision="fp32")
    assert small.strip_rows(120) < 200 - 32  # really cut into strips
    done = []
    strips = small.raw_map(maps, progress=lambda d, t, m: done.append((d, t)))
    assert len(done) > 1 and done[-1][0] == done[-1][1]
    np.testing.assert_allclose(strips, one, atol=1e-5)


def test_fcn_on_a_real_tile_with_the_shipped_model(small_ws):
    """The paper network (shipped weights), a real observed tile: map pass == window-by-window with context."""
    from szviewer.cnn.modelfile import load_model
    from szviewer.jobs.cnn import default_model_path
    from szviewer.workspace import Workspace

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model")
    model = load_model(path)
    maps = Workspace(small_ws["path"]).sky().tile_maps(0)[:, 100:452, 120:472]
    plan = FCNPlan(model.net, 8, precision="fp32")
    margin = 144
    assert max(plan.margin) <= margin
    raw = plan.raw_map(maps)
    oy, ox = plan.origins(maps.shape[1:])
    sel = _interior(plan, maps.shape[1:], margin, every=6)  # 5 of the 25 windows with a whole margin
    assert len(sel) >= 4
    ref = context_window_raw(model.net, maps, [oy[i] for i, _ in sel], [ox[j] for _, j in sel], margin=margin)
    got = np.array([raw[i, j] for i, j in sel])
    assert np.max(np.abs(model.calibrate(got) - model.calibrate(ref))) < 1e-4
    # against the zero-padded window scorer (what the cutouts get): close but not equal (fcn module docstring)
    from szviewer.cnn.predict import Scorer

    pick = np.random.default_rng(0).choice(raw.size, 48, replace=False)
    iy, ix = np.unravel_index(pick, raw.shape)
    wins = np.stack([maps[:, oy[i]:oy[i] + 32, ox[j]:ox[j] + 32] for i, j in zip(iy, ix, strict=True)])
    zero = Scorer(model.net, precision="fp32", platt=model.platt).raw(wins)
    dp = np.abs(model.calibrate(raw[iy, ix]) - model.calibrate(zero))
    assert np.median(dp) < 0.01 and np.mean(dp > 0.05) < 0.1
    assert np.max(np.abs(raw[iy, ix] - zero)) > 1e-3  # the padding does change raw scores


def test_fcn_refuses_a_minmax_model_and_bad_grids():
    with pytest.raises(ValueError, match="minmax"):
        FCNPlan(_tiny(scaling="minmax"), 4)
    with pytest.raises(ValueError, match="stride_pix"):
        FCNPlan(_tiny(), 3)
    with pytest.raises(ValueError, match="precision"):
        FCNPlan(_tiny(), 4, precision="fp16")
    with pytest.raises(ValueError, match="bf16_stage"):
        FCNPlan(_tiny(), 4, precision="fp32", bf16_stage=3)


def test_auto_is_fp32_where_bf16_is_not_native(monkeypatch):
    """The fallback forced: with bf16 reported as emulated, 'auto' is the exact fp32 pass (same numbers)."""
    import szviewer.cnn.fcn as fcn

    net = _tiny(2)
    maps = (np.random.default_rng(3).standard_normal((3, 130, 140)) * 70).astype(np.float32)
    ref = FCNPlan(net, 4, precision="fp32").raw_map(maps)
    monkeypatch.setattr(fcn, "bf16_native_on", lambda device_type: False)
    auto = FCNPlan(net, 4)
    assert auto.precision == "fp32" and set(auto._engines) == {"fp32"}
    np.testing.assert_array_equal(auto.raw_map(maps), ref)
    monkeypatch.setattr(fcn, "bf16_native_on", lambda device_type: True)
    assert FCNPlan(net, 4, precision="fp32").precision == "fp32"  # an explicit fp32 is obeyed
    from szviewer.cnn.fused import bf16_native

    if bf16_native():  # on a bf16 CPU the forced-true rule picks the checked bf16 pass
        assert FCNPlan(net, 4).precision == "checked"


def test_sentinels_are_the_fp32_map_values():
    """The fp32 probe that checks a bf16 map: each window from its own block equals the fp32 map pass there."""
    net = _tiny(4)
    maps = (np.random.default_rng(5).standard_normal((3, 160, 150)) * 90).astype(np.float32)
    plan = FCNPlan(net, 4, precision="fp32")
    full = plan.raw_map(maps)
    iy, ix = plan._sentinel_candidates(maps.shape[1:])
    reach = plan._sentinel_reach()
    assert reach >= max(plan.margin) and reach % plan.total_stride == 0
    assert np.all(iy * 4 >= reach) and np.all(iy * 4 + 32 + reach <= 160)
    pick = np.random.default_rng(0).choice(iy.size, 6, replace=False)
    z = plan.sentinel_raw(maps, iy[pick], ix[pick])
    np.testing.assert_allclose(z, full[iy[pick], ix[pick]], atol=1e-5)
    assert np.std(z) > 0.01
    assert plan._sentinel_candidates((90, 90)) is None  # no window has its receptive field in such a map


@pytest.mark.parametrize("fused", [None, False])
def test_bf16_within_tolerance_of_fp32_and_checked_falls_back(fused):
    _needs_bf16()
    net = _tiny(6)
    maps = (np.random.default_rng(7).standard_normal((3, 180, 200)) * 80).astype(np.float32)
    ref = FCNPlan(net, 4, precision="fp32").raw_map(maps)
    for stage in (None, 0):  # the default (last stage in bf16) and the whole trunk in bf16
        bf = FCNPlan(net, 4, precision="bf16", fused=fused, bf16_stage=stage).raw_map(maps)
        dp = np.abs(PLATT(bf) - PLATT(ref))
        assert dp.max() < 0.01 and np.abs(bf - ref).max() > 0  # reduced precision, within tolerance
    checked = FCNPlan(net, 4, precision="checked", platt=PLATT, fused=fused)
    got = checked.raw_map(maps)
    assert checked.stats["sentinels"] >= 2 and checked.stats["fallbacks"] == 0
    assert np.max(np.abs(PLATT(got) - PLATT(ref))) < 0.01
    iy, ix = checked._sentinel_candidates(maps.shape[1:])
    exact = np.abs(got[iy, ix] - ref[iy, ix]) < 1e-5
    assert exact.sum() >= 2  # the sentinels hold their fp32 scores
    fresh = FCNPlan(net, 4, precision="checked", platt=PLATT, fused=fused)  # the sentinels follow the map, not
    fresh.raw_map(maps[:, 20:, ::-1].copy())  # the plan's history (a Dask worker's plan sees only some tiles)
    np.testing.assert_array_equal(fresh.raw_map(maps), got)
    strict = FCNPlan(net, 4, precision="checked", platt=PLATT, tol=1e-9, fused=fused)  # a check no bf16 map passes
    np.testing.assert_allclose(strict.raw_map(maps), ref, atol=1e-5)
    assert strict.stats["fallbacks"] == 1
    tiny_map = maps[:, :60, :60]  # no sentinel fits: scored in fp32
    np.testing.assert_allclose(checked.raw_map(tiny_map), FCNPlan(net, 4, precision="fp32").raw_map(tiny_map),
                               atol=1e-5)


def test_bf16_on_a_real_tile_with_the_shipped_model(small_ws):
    """The paper network on an observed tile: the checked bf16 pass ('auto' here) within 0.01 of fp32."""
    _needs_bf16()
    from szviewer.cnn.modelfile import load_model
    from szviewer.jobs.cnn import default_model_path
    from szviewer.workspace import Workspace

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model")
    model = load_model(path)
    maps = Workspace(small_ws["path"]).sky().tile_maps(0)
    ref = FCNPlan(model.net, 4, precision="fp32").raw_map(maps)
    plan = FCNPlan(model.net, 4, platt=model.platt)
    assert plan.precision == "checked"
    got = plan.raw_map(maps)
    dp = np.abs(model.calibrate(got) - model.calibrate(ref))
    assert plan.stats["sentinels"] >= 2
    assert dp.max() < 0.01 and np.median(dp) < 1e-3
    assert np.abs(got - ref).max() > 1e-4  # really bf16 (no fallback to fp32)


def test_subpixel_peaks_find_a_plateau_centre():
    step = 4.0  # pixels between grid points
    g = np.arange(40) * step
    cx, cy = 71.3, 90.6  # true centre (pixels)
    # the probability of a window centred at (x, y): ~1 inside the central 6' cell (+-12 px), smooth edges
    px = 1 / (1 + np.exp((np.abs(g - cx) - 12.0) / 1.5))
    py = 1 / (1 + np.exp((np.abs(g - cy) - 12.0) / 1.5))
    prob = 0.9 * py[:, None] * px[None, :]
    iy, ix = np.unravel_index(np.argmax(prob), prob.shape)
    dy, dx = subpixel_peaks(prob, np.log(prob / (1 - prob)), [iy], [ix], step, "centroid")
    assert abs(g[ix] + dx[0] * step - cx) < 0.5 and abs(g[iy] + dy[0] * step - cy) < 0.5
    assert abs(g[ix] - cx) > 0.9 or abs(g[iy] - cy) > 0.9  # the grid point alone is farther off
    para = -((g[None, :] - cx) ** 2 + (g[:, None] - cy) ** 2) / 50.0
    iy, ix = np.unravel_index(np.argmax(para), para.shape)
    dy, dx = subpixel_peaks(np.exp(para), para, [iy], [ix], step, "quadratic")
    assert g[ix] + dx[0] * step == pytest.approx(cx, abs=1e-6)
    assert g[iy] + dy[0] * step == pytest.approx(cy, abs=1e-6)
    with pytest.raises(ValueError):
        subpixel_peaks(prob, prob, [0], [0], step, "median")
    err = position_error_arcmin(1.0, 3)
    assert err.shape == (3,) and np.all(err == err[0])
    assert position_error_arcmin(0.25)[0] < err[0] < position_error_arcmin(4.0)[0] < 1.0


def test_dense_job_fcn_and_windowed_write_the_catalogue(scratch_ws, tmp_path):
    from astropy.table import Table

    from szviewer.cnn.modelfile import save_model
    from szviewer.errors import InputError
    from szviewer.jobs.dense import dense_job
    from szviewer.workspace import Workspace

    model = tmp_path / "tiny.pt"
    net = _tiny(5)
    with torch.no_grad():  # a positive bias on the last layer: enough peaks above 0.5 to test the columns
        net.head[6].bias[1] += 3.0
    save_model(model, net, Platt(1.0, 0.0), {"preset": "test"})
    ws = Workspace(scratch_ws)
    out = {}
    for method in ("fcn", "windowed"):
        s = dense_job(ws, model_path=model, method=method, resolution_arcmin=1.0, stride_arcmin=2.0,
                      threshold=0.5, device="cpu", overwrite=True)
        ws = Workspace(ws.root)
        cat = Table.read(ws.file("cnn_dense", "dense_candidates.fits"))
        assert cat.colnames == ["ra", "dec", "prob", "tile", "x", "y", "pos_err_arcmin", "logit", "flags"]
        assert len(cat) == s["candidates"] > 0 and s["method"] == method
        assert str(cat["ra"].unit) == "deg" and str(cat["pos_err_arcmin"].unit) == "arcmin"
        np.testing.assert_allclose(cat["logit"], np.log(cat["prob"] / (1 - cat["prob"])), atol=1e-4)
        tile = ws.sky().tiles[0]
        x, y = tile.world_to_pix(np.asarray(cat["ra"]), np.asarray(cat["dec"]))
        np.testing.assert_allclose(x, cat["x"], atol=1e-6)
        np.testing.assert_allclose(y, cat["y"], atol=1e-6)
        assert np.all(cat["pos_err_arcmin"] > 0) and np.all(cat["prob"] >= 0.5)
        with ws.cutout_store() as store:
            ids = np.asarray(store.table["id"])
        dense = ws.scores(ids)["cnn_dense_prob"]
        assert np.isfinite(dense).all()
        out[method] = (s, dense)
    assert out["fcn"][0]["grid_arcmin"] == 1.0 and out["windowed"][0]["grid_arcmin"] == 2.0
    assert out["fcn"][0]["windows"] > 3 * out["windowed"][0]["windows"]  # a 1' grid has ~4x the 2' windows
    with pytest.raises(InputError, match="resolution-arcmin"):
        dense_job(ws, model_path=model, resolution_arcmin=0.7, device="cpu", overwrite=True)
    mm = tmp_path / "minmax.pt"
    save_model(mm, _tiny(scaling="minmax"), Platt(1.0, 0.0), {"preset": "test"})
    with pytest.raises(InputError, match="windowed"):
        dense_job(ws, model_path=mm, device="cpu", overwrite=True)
    # 'auto' (the app's job): the whole map for fixed input scaling, the windows for a per-window scaling
    auto = dense_job(ws, model_path=mm, method="auto", device="cpu", overwrite=True)
    assert auto["method"] == "windowed" and auto["grid_arcmin"] == 2.0
    auto = dense_job(Workspace(ws.root), model_path=model, method="auto", device="cpu", overwrite=True)
    assert auto["method"] == "fcn" and auto["grid_arcmin"] == 1.0
    assert auto["candidates"] == out["fcn"][0]["candidates"]


def test_cli_predict_dense_is_fully_convolutional_and_windowed_stays(scratch_ws, tmp_path, capsys):
    from szviewer.cli import main
    from szviewer.cnn.modelfile import save_model
    from szviewer.workspace import Workspace

    model = tmp_path / "tiny.pt"
    save_model(model, _tiny(7), Platt(1.0, 0.0), {"preset": "test"})
    ws = str(scratch_ws)
    assert main(["predict", ws, "--model", str(model), "--device", "cpu", "--dense",
                 "--resolution-arcmin", "2"]) == 0
    done = Workspace(scratch_ws).products["cnn_dense"]["settings"]
    assert done["method"] == "fcn" and done["grid_arcmin"] == 2.0
    assert main(["predict", ws, "--model", str(model), "--device", "cpu", "--dense", "--windowed",
                 "--stride-arcmin", "4", "--overwrite"]) == 0
    done = Workspace(scratch_ws).products["cnn_dense"]["settings"]
    assert done["method"] == "windowed" and done["grid_arcmin"] == 4.0
    capsys.readouterr()
    assert main(["predict", ws, "--model", str(model), "--device", "cpu", "--dense", "--resolution-arcmin", "3",
                 "--overwrite"]) != 0
    err = capsys.readouterr().err
    assert "--resolution-arcmin 3" in err and len(err.strip().splitlines()) == 1


def test_predict_dense_after_predict_keeps_current_cutout_scores_of_the_same_model(scratch_ws, tmp_path, capsys):
    """`szviewer predict WS --dense` (what `evaluate` tells a user to run) after `predict WS`: the cutout scores of
    the same model stay as they are; those of another model, or of cutouts made again since, need --overwrite."""
    from szviewer.cli import main
    from szviewer.cnn.modelfile import save_model
    from szviewer.jobs.predict import current_scores
    from szviewer.workspace import Workspace

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_model(a, _tiny(7), Platt(1.0, 0.0), {"preset": "test"})
    save_model(b, _tiny(8), Platt(1.0, 0.0), {"preset": "test"})
    ws = str(scratch_ws)
    assert main(["predict", ws, "--model", str(a), "--device", "cpu"]) == 0
    gen = Workspace(scratch_ws).products["cnn"]["generation"]
    capsys.readouterr()
    dense = ["predict", ws, "--device", "cpu", "--dense", "--resolution-arcmin", "2"]
    assert main(dense + ["--model", str(b)]) == 2  # another model's cutout scores are not kept
    assert "pass --overwrite to replace this workspace's cnn" in capsys.readouterr().err
    assert not Workspace(scratch_ws).has("cnn_dense")
    assert main(dense + ["--model", str(a)]) == 0
    assert "cnn: kept" in capsys.readouterr().out
    w = Workspace(scratch_ws)
    assert w.products["cnn"]["generation"] == gen and w.has("cnn_dense")
    assert w.products["cnn_dense"]["settings"]["model"] == w.products["cnn"]["settings"]["model"] == str(a)
    assert current_scores(w, "cnn", str(a)) and not current_scores(w, "cnn", str(b))
    assert main(["cutouts", ws, "--overwrite"]) == 0  # the scores are now stale
    assert not current_scores(Workspace(scratch_ws), "cnn", str(a))
    capsys.readouterr()
    assert main(dense + ["--model", str(a)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(dense + ["--model", str(a), "--overwrite"]) == 0
    w = Workspace(scratch_ws)
    assert w.products["cnn"]["generation"] > gen and not w.stale("cnn") and not w.stale("cnn_dense")
