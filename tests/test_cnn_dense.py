"""Dense CNN scoring (paper section 3.4.2): windows, peak finding, the dense job and its edge-effect record."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.dense import cell_max, dense_raw_map, find_peaks, window_centres  # noqa: E402
from szviewer.cnn.model import DeepSZNet, NetConfig  # noqa: E402
from szviewer.cnn.predict import Scorer  # noqa: E402

TINY = NetConfig(**TINY_NET)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_dense_windows_are_the_cutouts():
    torch.manual_seed(0)
    scorer = Scorer(DeepSZNet(TINY).eval(), fast=False, batch=64)
    maps = (np.random.default_rng(0).standard_normal((3, 80, 96)) * 50).astype(np.float32)
    raw = dense_raw_map(maps, scorer, stride_pix=8, rows_per_batch=2)
    xs, ys = window_centres(maps.shape[1:], 32, 8)
    assert raw.shape == (ys.size, xs.size) == (7, 9)
    direct = scorer.raw(maps[None, :, 16:48, 24:56])[0]  # window (row 2, col 3)
    assert raw[2, 3] == pytest.approx(direct, abs=1e-5)
    assert xs[3] == 24 + 15.5 and ys[2] == 16 + 15.5


def test_find_peaks_and_cell_max():
    p = np.zeros((10, 12))
    p[2, 3] = 0.9
    p[2, 4] = 0.8  # shoulder of the same peak
    p[7, 9] = 0.6
    p[5, 0] = 0.3  # below threshold
    iy, ix = find_peaks(p, threshold=0.5)
    assert sorted(zip(iy.tolist(), ix.tolist(), strict=True)) == [(2, 3), (7, 9)]
    plateau = np.zeros((5, 5))
    plateau[1:3, 1:3] = 0.7
    assert len(find_peaks(plateau, 0.5)[0]) == 1
    xs = np.arange(12) * 8.0
    ys = np.arange(10) * 8.0
    assert cell_max(p, xs, ys, np.array([24.0, 500.0]), np.array([16.0, 0.0]), 12.0)[0] == pytest.approx(0.9)
    assert np.isnan(cell_max(p, xs, ys, np.array([500.0]), np.array([0.0]), 12.0)[0])


def test_dense_job_on_small_workspace(small_ws, tmp_path):
    import shutil

    from astropy.table import Table

    from szviewer.cnn.modelfile import Platt, save_model
    from szviewer.jobs.cnn import predict_job
    from szviewer.jobs.dense import dense_job
    from szviewer.workspace import Workspace

    torch.manual_seed(0)
    model = tmp_path / "tiny.pt"
    save_model(model, DeepSZNet(TINY).eval(), Platt(1.0, 0.0), {"preset": "test"})
    shutil.copytree(small_ws["path"], tmp_path / "small")  # a private copy: other tests see no CNN products
    ws = Workspace(tmp_path / "small")
    predict_job(ws, model_path=model, device="cpu")
    summary = dense_job(ws, model_path=model, stride_arcmin=2.0, threshold=0.5, device="cpu")
    ws = Workspace(ws.root)
    assert ws.has("cnn_dense")
    cat = Table.read(ws.file("cnn_dense", "dense_candidates.fits"))
    assert set(cat.colnames) >= {"ra", "dec", "prob", "tile"} and len(cat) == summary["candidates"]
    with ws.cutout_store() as store:
        ids = np.asarray(store.table["id"])
    dense = ws.scores(ids)["cnn_dense_prob"]
    assert np.isfinite(dense).all() and np.all((dense >= 0) & (dense <= 1))
    assert "edge_effect" in summary and summary["edge_effect"]["positives"] >= 1


def test_near_mask_flags_from_the_footprint():
    from szviewer.jobs.dense import FLAG_NEAR_MASK, near_mask_flags

    foot = np.ones((100, 120), np.float32)
    foot[:, 100:] = 0.5  # an apodised strip from column 100
    x = np.array([50.0, 83.4, 84.6, 20.0, 110.0])  # a 32-px window centred at x spans x0 = floor(x - 15) ..+31
    y = np.array([50.0, 50.0, 50.0, 10.0, 50.0])
    flags = near_mask_flags(foot, x, y, 32)
    # 83.4: x0 68, columns 68..99 (clear); 84.6: x0 69, reaches column 100; (20, 10): the window leaves the tile
    assert flags.tolist() == [0, 0, FLAG_NEAR_MASK, FLAG_NEAR_MASK, FLAG_NEAR_MASK]
    assert near_mask_flags(None, x, y, 32).tolist() == [0] * 5


def test_cnn_candidates_carry_the_mask_flag_into_the_object_catalogue(tmp_path):
    """On act-dr6 (a 30' apodised survey edge) every window of a 1 deg^2 sky touches the ramp: all CNN candidates
    are flagged, and CNN-only rows of the merged catalogue keep the bit; the paper's instrument has no mask."""
    from astropy.table import Table

    from szviewer.cnn.modelfile import Platt, save_model
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.evaluate.objects import FLAG_NEAR_MASK, merge_candidates
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.dense import dense_job
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    flags = {}
    for inst, npix in (("act-dr6", 16), ("spt3g-paper", 32)):  # 8' cutouts of 0.5' and 0.25' pixels
        torch.manual_seed(5)
        net = DeepSZNet(NetConfig(**{**TINY_NET, "npix": npix})).eval()
        with torch.no_grad():
            net.head[6].bias[1] += 3.0  # candidates everywhere
        model = tmp_path / f"tiny{npix}.pt"
        save_model(model, net, Platt(1.0, 0.0), {"preset": "test"})
        root = tmp_path / inst
        simulate_workspace(root, SimulationSettings(area_deg2=1.0, seed=5, instrument=inst))
        make_cutouts(Workspace(root), CutoutSettings())
        dense_job(Workspace(root), model_path=model, device="cpu")
        cat = Table.read(Workspace(root).file("cnn_dense", "dense_candidates.fits"))
        assert len(cat) > 0 and cat["flags"].dtype.kind == "i"
        flags[inst] = np.asarray(cat["flags"])
        if inst == "act-dr6":
            merged = merge_candidates(None, cat)
            assert np.all(np.asarray(merged["flags"]) & FLAG_NEAR_MASK) and np.all(merged["near_mask"])
    assert np.all(flags["act-dr6"] == FLAG_NEAR_MASK)
    assert np.all(flags["spt3g-paper"] == 0)
