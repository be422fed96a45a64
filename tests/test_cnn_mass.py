"""The CNN mass head (issue 13 part 7): features are the network's own activations; ridge fit; scatter and bias."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.mass import MassHead, evaluate_mass_head, mass_features, scatter_and_bias  # noqa: E402
from szviewer.cnn.model import DeepSZNet, NetConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mass_features_are_the_networks_activations():
    torch.manual_seed(0)
    net = DeepSZNet(NetConfig(**TINY_NET)).eval()
    x = (np.random.default_rng(0).standard_normal((5, 3, 32, 32)) * 50).astype(np.float32)
    f = mass_features(net, x, batch=2)
    cfg = net.config
    assert f.shape == (5, cfg.feature_size + 2 * cfg.head)
    with torch.inference_mode():
        logits = net(torch.from_numpy(x)).numpy()
        from_h2 = net.head[6](torch.from_numpy(f[:, -cfg.head:])).numpy()  # the last layer on the features
    np.testing.assert_allclose(from_h2, logits, atol=1e-5)


def test_ridge_head_recovers_a_linear_mass_and_scatter_is_exact():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((200, 30))
    logm = 14.5 + feats[:, :3] @ np.array([0.1, -0.05, 0.02]) + 0.03 * rng.standard_normal(200)
    head = MassHead().fit(feats[:150], logm[:150])
    res = scatter_and_bias(head.predict(feats[150:]), logm[150:])
    assert res["n"] == 50 and abs(res["bias"]) < 0.02 and res["scatter"] < 0.06
    assert scatter_and_bias(np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0])) == pytest.approx(
        {"n": 3, "bias": 1.0, "scatter": np.std([0.0, 1.0, 3.0]), "robust_scatter": 1.4826})
    with pytest.raises(ValueError, match="at least 5"):
        MassHead().fit(feats[:3], logm[:3])


def test_evaluate_mass_head_on_a_real_workspace(scratch_ws):
    """The shipped network's features of a real sky's positives; the label mass lowered to 5e13 Msun so the
    4 deg^2 sky has enough training positives."""
    from szviewer.cnn.modelfile import load_model
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.jobs.cnn import default_model_path
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.workspace import Workspace

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model")
    ws = Workspace(scratch_ws)
    make_cutouts(ws, CutoutSettings(labels=LabelSettings(mass_min_msun=5e13)), overwrite=True)
    with Workspace(scratch_ws).cutout_store() as store:
        t = store.table
        n_train = int(np.sum(np.asarray(t["label"], bool) & (np.asarray(t["split"]) == "train")))
        assert n_train >= 5
        res = evaluate_mass_head(store, load_model(path))
    assert res["train"]["n"] == n_train and res["alpha"] > 0
    for name in ("train", "test"):
        assert np.isfinite(res[name]["scatter"]) and res[name]["scatter"] < 0.5


def test_mass_job_and_cli_on_a_real_workspace(scratch_ws, capsys):
    """`szviewer mass WS`: refused in one line before the CNN scores exist; then the product's column holds the
    head's log10 M500 for the CNN positives only (a truth positive the CNN misses stays NaN: the column must not
    reveal the labels), the report is evaluate_mass_head's, and a second run needs --overwrite."""
    from szviewer.cli import main
    from szviewer.cnn.modelfile import load_model
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.jobs.cnn import default_model_path, predict_job
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.mass import COLUMN, mass_job
    from szviewer.workspace import Workspace

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model")
    ws = Workspace(scratch_ws)
    make_cutouts(ws, CutoutSettings(labels=LabelSettings(mass_min_msun=5e13)), overwrite=True)
    assert main(["mass", str(scratch_ws)]) == 2
    assert "szviewer predict" in capsys.readouterr().err
    predict_job(ws, device="cpu")
    assert main(["mass", str(scratch_ws), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "bias" in out and "scatter" in out and "test" in out
    ws = Workspace(scratch_ws)
    summary = ws.products["cnn_mass"]["summary"]
    with ws.cutout_store() as store:
        t = store.table
        ids = np.asarray(t["id"])
        lab = np.asarray(t["label"], bool)
        ref = evaluate_mass_head(store, load_model(path))
    col = ws.scores(ids)[COLUMN]
    prob = ws.scores(ids)["cnn_prob"]
    has = np.isfinite(col)
    np.testing.assert_array_equal(has, prob >= 0.5)
    assert (lab & ~has).any()  # a truth positive the CNN missed: scored for the report, not in the column
    assert summary["predicted"] == has.sum() and summary["train"]["n"] == ref["train"]["n"]
    for name in ("train", "test"):  # the same head on the same features
        assert summary[name]["scatter"] == pytest.approx(ref[name]["scatter"], rel=1e-4)
    assert 13.0 < np.nanmedian(col[lab]) < 15.5
    with pytest.raises(Exception, match="overwrite"):
        mass_job(ws)
    # the object catalogue carries the CNN mass of each candidate's cell, in Msun
    from astropy.table import Table

    assert main(["mf", str(scratch_ws)]) == 0
    out = scratch_ws / "cands.ecsv"
    assert main(["export", str(scratch_ws), "--method", "mf", "--out", str(out)]) == 0
    cat = Table.read(out)
    assert str(cat["m500_cnn"].unit) == "solMass"
    cid = np.asarray(cat["cutout_id"])
    by_id = dict(zip(ids.tolist(), col.tolist(), strict=True))
    want = np.array([10 ** by_id[c] if c in by_id and np.isfinite(by_id[c]) else np.nan for c in cid])
    np.testing.assert_allclose(np.asarray(cat["m500_cnn"], float), want, rtol=1e-9)
    assert np.isfinite(want).any()
