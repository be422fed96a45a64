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
