"""The distilled fine head (issue 13 part 2): the 4' pass's first-stage features, the head's alignment with the
exact 1' map, a real small distillation, the file bound to its model, and the dense job's 'distilled' method."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_cnn_fcn import _tiny  # noqa: E402

from szviewer.cnn.fcn import FCNPlan  # noqa: E402
from szviewer.cnn.finehead import (  # noqa: E402
    DistilSettings,
    FineHead,
    FineHeadConfig,
    FineHeadPlan,
    distil,
    head_path,
    load_head,
    save_head,
    upsample,
)
from szviewer.cnn.modelfile import Platt, load_model, save_model  # noqa: E402
from szviewer.errors import InputError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _maps(seed: int, ny: int = 200, nx: int = 232) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((3, ny, nx)).astype(np.float32) * 30.0
    yy, xx = np.mgrid[0:ny, 0:nx]
    for _ in range(6):  # cluster-like decrements, so the map has structure below the 4' grid
        y0, x0 = rng.uniform(20, ny - 20), rng.uniform(20, nx - 20)
        m[:2] -= 300.0 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 4.0**2))
    return m


def _head(net, seed: int = 0) -> FineHead:
    torch.manual_seed(seed)
    return FineHead(FineHeadConfig(features=net.config.width * 4, reduce=4, hidden=8, context=2,
                                   window=net.config.npix // 4)).eval()


def test_the_pass_hands_over_the_first_stage_output_of_every_strip():
    net = _tiny(3)
    m = _maps(1, 260, 200)
    one = FCNPlan(net, 16, precision="fp32")
    strips = FCNPlan(net, 16, precision="fp32", budget_mb=0.3)  # several strips
    assert strips.strip_rows(m.shape[2]) < m.shape[1] // 2
    f1, f2 = (np.zeros(p.feature_shape(m.shape[1:]), np.float32) for p in (one, strips))
    r1, r2 = one.raw_map(m, features=f1), strips.raw_map(m, features=f2)
    np.testing.assert_allclose(r1, r2, atol=1e-5)
    with torch.inference_mode():
        ref = net.stages[0](net.stem(net.scale(torch.from_numpy(m[None]))))[0].numpy()
    h, w = ref.shape[1] - 3, ref.shape[2] - 3  # the last rows differ: the pass pads the map to the 16-pixel grid
    for f in (f1, f2):
        np.testing.assert_allclose(f[:, :h, :w], ref[:, :h, :w], atol=1e-4)
        assert np.abs(f[:, :h, :w]).max() > 0.1


def test_the_head_is_the_interpolated_4_arcmin_map_plus_its_correction():
    net = _tiny(4)
    m = _maps(2)
    head = _head(net)
    with torch.no_grad():  # no correction: the 1' map is the interpolated 4' map
        head.mix[2].weight.zero_()
        head.mix[2].bias.zero_()
    plan = FineHeadPlan(net, head, precision="fp32")
    exact = FCNPlan(net, 4, precision="fp32").raw_map(m)
    raw = plan.raw_map(m)
    assert raw.shape == exact.shape and plan.stride_pix == 4 and plan.factor == 4
    np.testing.assert_allclose(raw[::4, ::4], exact[::4, ::4], atol=1e-4)  # the 4' origins are the exact pass's
    np.testing.assert_allclose(raw, upsample(exact[::4, ::4], exact.shape, 4), atol=1e-4)
    assert np.abs(raw - exact).max() > 1e-3  # in between it is an interpolation, not the exact map
    # a head with a correction: chunks of rows give the one-chunk numbers (the chunks' context rows)
    head2 = _head(net, 1)
    whole = FineHeadPlan(net, head2, precision="fp32", rows=10_000).raw_map(m)
    chunked = FineHeadPlan(net, head2, precision="fp32", rows=5).raw_map(m)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert np.abs(whole - upsample(exact[::4, ::4], exact.shape, 4)).max() > 1e-3
    # raw_map has the pass project the features strip by strip (reduce channels handed over, not all 32): the
    # same map as the head on the raw first-stage output (what distillation trains on)
    strips = FineHeadPlan(net, head2, precision="fp32", budget_mb=0.3)
    assert strips.coarse.strip_rows(m.shape[2]) < m.shape[1] // 2  # several strips
    coarse, feats = strips.coarse_and_features(m)
    c2, small = strips.coarse_and_features(m, reduced=True)
    assert feats.shape[0] == 32 and small.shape == (4,) + feats.shape[1:] and np.array_equal(coarse, c2)
    full = strips.apply(coarse, feats, m.shape[1:])
    np.testing.assert_allclose(strips.apply(c2, small, m.shape[1:], reduced=True), full, atol=1e-5)
    np.testing.assert_allclose(strips.raw_map(m), full, atol=1e-5)
    np.testing.assert_allclose(full, whole, atol=1e-4)


def test_distillation_learns_the_exact_map_better_than_interpolation():
    net = _tiny(5)
    with torch.no_grad():  # the tiny network's raw scores (0.11 +- 0.007) spread to 11 +- 0.7 ...
        net.head[6].weight.mul_(100.0)
        net.head[6].bias.mul_(100.0)
    platt = Platt(3.0, -3.0 * 11.35)  # ... and over p = 0 .. 1

    class M:  # what distil reads of a model
        config, calibrate = net.config, staticmethod(platt)

    M.net, M.platt = net, platt
    maps = [_maps(s, 232, 232) for s in range(6)]
    settings = DistilSettings(crop=24, crops=8, epochs=40, batch=8, lr=1e-2, hot=0.5)
    head, rep = distil(M, maps, settings, FineHeadConfig(features=32, reduce=4, hidden=8, context=2, window=8))
    assert rep["crops"] == 48 and rep["val_crops"] == 8 and rep["steps"] == 40 * 5
    # held-out crops: the head is closer to the exact 1' map than the interpolated 4' map is (measured 0.75x)
    assert rep["val_loss"] < 0.85 * rep["val_loss_interpolated"]
    assert rep["val_p99_dp"] < rep["val_p99_dp_interpolated"]
    head2, rep2 = distil(M, maps, settings, FineHeadConfig(features=32, reduce=4, hidden=8, context=2, window=8))
    assert rep2 == rep  # seeded, bit for bit
    for a, b in zip(head.state_dict().values(), head2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_head_file_belongs_to_its_model(tmp_path):
    p1, p2 = tmp_path / "a.pt", tmp_path / "b.pt"
    save_model(p1, _tiny(6), Platt(1.0, 0.0), {"preset": "test"})
    save_model(p2, _tiny(7), Platt(1.0, 0.0), {"preset": "test"})
    m1, m2 = load_model(p1), load_model(p2)
    head = _head(m1.net, 2)
    hp = save_head(head_path(p1), head, m1, {"note": "test"})
    assert hp == tmp_path / "a.finehead.pt"
    back, card = load_head(hp, m1)
    assert card == {"note": "test"}
    m = _maps(3)
    np.testing.assert_array_equal(FineHeadPlan(m1.net, back, precision="fp32").raw_map(m),
                                  FineHeadPlan(m1.net, head, precision="fp32").raw_map(m))
    with pytest.raises(InputError, match="another model") as e:
        load_head(hp, m2)
    assert "a.finehead.pt" in str(e.value) and "\n" not in str(e.value)
    bad = tmp_path / "bad.finehead.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot read the fine head"):
        load_head(bad, m1)
    with pytest.raises(InputError, match="no fine head"):
        load_head(tmp_path / "none.finehead.pt", m1)


def test_dense_job_distilled_writes_the_catalogue_and_needs_the_head(scratch_ws, tmp_path):
    from astropy.table import Table

    from szviewer.jobs.dense import dense_job
    from szviewer.workspace import Workspace

    model = tmp_path / "tiny.pt"
    net = _tiny(8)
    with torch.no_grad():
        net.head[6].bias[1] += 3.0
    save_model(model, net, Platt(1.0, 0.0), {"preset": "test"})
    ws = Workspace(scratch_ws)
    with pytest.raises(InputError, match="no fine head"):
        dense_job(ws, model_path=model, method="distilled", device="cpu", overwrite=True)
    loaded = load_model(model)
    head = _head(loaded.net, 3)
    save_head(head_path(model), head, loaded, {})
    s = dense_job(ws, model_path=model, method="distilled", device="cpu", overwrite=True)
    ws = Workspace(ws.root)
    cat = Table.read(ws.file("cnn_dense", "dense_candidates.fits"))
    assert s["method"] == "distilled" and s["grid_arcmin"] == 1.0 and len(cat) == s["candidates"] > 0
    # the job's map is the plan's: the first tile's candidates come from the same raw map
    from szviewer.cnn.dense import score_tile_fcn
    from szviewer.jobs.dense import level_maps

    sky = ws.sky()
    res = score_tile_fcn(level_maps(sky, 0, tuple(sky.components)), loaded,
                         plan=FineHeadPlan(loaded.net, head), pixel_arcmin=sky.tiles[0].pixel_arcmin)
    ra, _ = sky.tiles[0].pix_to_world(res["peaks_x"], res["peaks_y"])
    assert np.isin(np.round(np.asarray(cat["ra"])[np.asarray(cat["tile"]) == 0], 9), np.round(ra, 9)).all()
    # a changed head is another input: the job's record names it
    assert "fine_head" in str(ws.products["cnn_dense"])
    with pytest.raises(InputError, match="resolution-arcmin"):
        dense_job(ws, model_path=model, method="distilled", resolution_arcmin=2.0, device="cpu", overwrite=True)


def test_cli_predict_dense_distilled(scratch_ws, tmp_path, capsys):
    from szviewer.cli import main
    from szviewer.workspace import Workspace

    model = tmp_path / "tiny.pt"
    save_model(model, _tiny(9), Platt(1.0, 0.0), {"preset": "test"})
    ws = str(scratch_ws)
    capsys.readouterr()
    assert main(["predict", ws, "--model", str(model), "--device", "cpu", "--dense", "--distilled"]) != 0
    err = capsys.readouterr().err
    assert "tiny.finehead.pt" in err and "no fine head" in err and len(err.strip().splitlines()) == 1
    assert not Workspace(scratch_ws).has("cnn_dense")
    loaded = load_model(model)
    save_head(head_path(model), _head(loaded.net), loaded, {})
    assert main(["predict", ws, "--model", str(model), "--device", "cpu", "--dense", "--distilled",
                 "--overwrite"]) == 0
    done = Workspace(scratch_ws).products["cnn_dense"]["settings"]
    assert done["method"] == "distilled" and done["grid_arcmin"] == 1.0
    assert main(["predict", ws, "--model", str(model), "--device", "cpu", "--dense", "--distilled", "--windowed",
                 "--overwrite"]) != 0
    assert "choose one" in capsys.readouterr().err
