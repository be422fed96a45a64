"""The CNN jobs on a workspace: train (tiny settings), predict writes ``cnn_prob``, default model lookup."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from szviewer.cnn.model import NetConfig  # noqa: E402
from szviewer.errors import Cancelled, InputError, OutputExistsError  # noqa: E402
from szviewer.workspace import Workspace  # noqa: E402

TINY = dict(ratios=(1, 2), batch=32, warmup_batches=4, lr_steps=(20,), eval_every=4, patience=8,
            max_batches_per_ratio=8, checkpoint_every=4,
            net=NetConfig(width=8, blocks=(1, 1, 1), head=32, scaling="fixed"))


@pytest.fixture(scope="module")
def trained(small_ws, tmp_path_factory):
    """A tiny CNN trained on a private copy of the shared small workspace (other tests see no CNN products)."""
    import shutil

    from szviewer.jobs.cnn import train_job

    copy = tmp_path_factory.mktemp("cnnws") / "small"
    shutil.copytree(small_ws["path"], copy)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ws = Workspace(copy)
        summary = train_job(ws, preset="quick", device="cpu", overrides=TINY)
    finally:
        torch.set_num_threads(n)
    return ws, summary


def test_train_job_writes_model_log_and_checkpoint(trained):
    from szviewer.cnn.modelfile import load_model
    from szviewer.jobs.cnn import CHECKPOINT, TRAIN_LOG

    ws, summary = trained
    ws = Workspace(ws.root)
    assert ws.has("cnn_model")
    for f in (CHECKPOINT, TRAIN_LOG):
        assert ws.path(f).is_file()
    assert ws.file("cnn_model", "train_log.csv").is_file()
    model = ws.file("cnn_model", "model.pt")
    assert summary["model"] == str(model) and model.parts[-2].startswith("g")
    card = load_model(model).card
    assert card["preset"] == "quick" and card["training_sky"]["seed"] == 7
    assert card["training_sky"]["area_deg2"] == pytest.approx(4.0, rel=0.05)
    rule = card["training_sky"]["label_rule"]  # what "positive" meant: the paper's M_vir >= 2e14 Msun, z >= 0.25
    assert rule["mass_def"] == "vir" and rule["mass_min_msun"] == 2e14 and rule["z_min"] == 0.25
    for key in ("val_f1", "test_f1", "platt", "architecture", "input_scaling", "versions", "sha256"):
        assert key in card
    assert summary["steps"] > 0 and summary["platt"]["a"] > 0
    assert summary["plan_max_steps"] == card["plan_max_steps"] == 16 and summary["stopped_by_time"] is False
    assert card["train_settings"]["max_seconds"] is None and card["seconds_per_step"] > 0


def test_predict_job_writes_scores(trained):
    from szviewer.jobs.cnn import predict_job

    ws, _ = trained
    summary = predict_job(ws, device="cpu")  # the workspace's own trained model
    ws = Workspace(ws.root)
    assert ws.has("cnn")
    with ws.cutout_store() as store:
        ids = np.asarray(store.table["id"])
    cols = ws.scores(ids)
    assert cols["cnn_prob"].shape == ids.shape and np.all((cols["cnn_prob"] >= 0) & (cols["cnn_prob"] <= 1))
    order = np.argsort(cols["cnn_raw"])
    assert np.all(np.diff(cols["cnn_prob"][order]) >= -1e-12)  # calibration keeps the ranking
    assert summary["cutouts"] == ids.size and summary["precision"] in ("checked", "fp32")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_job(ws, device="cpu", precision="fp32")
    exact = predict_job(ws, device="cpu", precision="fp32", overwrite=True)
    assert exact["precision"] == "fp32" and exact["refined_fp32"] == 0
    cols32 = Workspace(ws.root).scores(ids)
    assert np.max(np.abs(cols32["cnn_prob"] - cols["cnn_prob"])) <= 0.01
    assert Workspace(ws.root).products["cnn"]["settings"]["precision"] == "fp32"


def test_resume_and_cancel_job(trained):
    from szviewer.jobs.cnn import train_job

    ws, first = trained
    ws = Workspace(ws.root)
    gen = ws.products["cnn_model"]["generation"]
    with pytest.raises(OutputExistsError, match="--overwrite"):  # a trained model is not replaced unasked
        train_job(ws, preset="quick", device="cpu", overrides=TINY)
    with pytest.raises(Cancelled):
        train_job(ws, preset="quick", device="cpu", overrides=TINY, cancelled=lambda: True, resume=True)
    assert Workspace(ws.root).products["cnn_model"]["generation"] == gen  # a cancel changes nothing
    again = train_job(ws, preset="quick", device="cpu", overrides=TINY, resume=True)  # resumes the finished run
    assert again["steps"] == first["steps"]


def test_predict_job_refuses_bad_model(trained, tmp_path):
    from szviewer.jobs.cnn import predict_job

    ws, _ = trained
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="bad.pt"):
        predict_job(ws, model_path=bad, device="cpu", overwrite=True)


def test_default_model_path(monkeypatch, tmp_path):
    from szviewer.jobs.cnn import default_model_path

    p = default_model_path()
    assert p.name == "deepsz_synthetic.pt" and p.parent.name == "models"
    monkeypatch.setenv("SZVIEWER_MODEL", str(tmp_path / "x.pt"))
    assert default_model_path() == tmp_path / "x.pt"


def test_shipped_model_loads_and_scores(small_ws):
    from szviewer.cnn.modelfile import load_model
    from szviewer.jobs.cnn import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model in models/")
    assert path.stat().st_size <= 40 * 2**20
    model = load_model(path)
    card = model.card
    assert card["architecture"]["config"]["blocks"] == [3, 4, 6] and card["preset"] == "long"
    for key in ("val_f1", "test_f1", "training_sky", "platt"):
        assert key in card
    with Workspace(small_ws["path"]).cutout_store() as store:
        x = store.images(np.arange(16))
    p = model.calibrate(model.raw(x))
    assert p.shape == (16,) and np.all(np.isfinite(p))


def test_checked_precision_on_real_cutouts_with_the_shipped_model(small_ws):
    """The default precision on real cutouts and the paper-sized network: within 0.01 of eager fp32."""
    from szviewer.cnn.modelfile import load_model
    from szviewer.cnn.predict import Scorer
    from szviewer.jobs.cnn import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model in models/")
    from szviewer.cnn.fused import bf16_native

    model = load_model(path)
    with Workspace(small_ws["path"]).cutout_store() as store:
        labels = np.asarray(store.table["label"], dtype=bool)
        rows = np.arange(len(store))
        if not bf16_native():  # emulated bf16 is ~10x slower: every positive and as many negatives, not all
            rows = np.sort(np.concatenate([np.nonzero(labels)[0], np.nonzero(~labels)[0][:64]]))
        x = store.images(rows)
        labels = labels[rows]
    ref = model.calibrate(Scorer(model.net, fast=False).raw(x))
    checked = Scorer(model.net, precision="checked", platt=model.platt)
    got = model.calibrate(checked.raw(x))
    assert np.max(np.abs(got - ref)) <= 0.01
    assert 0 < checked.stats["refined"] < len(x)
    fp32 = model.calibrate(Scorer(model.net, precision="fp32").raw(x))
    assert np.max(np.abs(fp32 - ref)) < 1e-4
    assert labels.any() and ref[labels].mean() > ref[~labels].mean()  # the model separates the classes


FIXED_RATES = {"step_seconds": 2.0, "eval_seconds_per_cutout": 0.0, "steps": 3, "batch": 64, "device": "cpu",
               "threads": 2, "bf16_autocast": False}


def test_train_estimate_measures_caches_and_never_loads_torch_without_measuring(trained, tmp_path, monkeypatch):
    import subprocess
    import sys

    from szviewer.jobs.cnn import train_estimate

    ws, _ = trained
    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))
    assert train_estimate(ws, "quick", device="cpu", overrides=TINY, measure=False) is None  # nothing cached yet
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est = train_estimate(ws, "quick", device="cpu", overrides=TINY)  # real steps of the tiny network, here
    finally:
        torch.set_num_threads(n)
    assert est["steps"] == est["plan_steps"] == 16 and est["step_seconds"] > 0 and est["batch"] == 32
    assert est["seconds"] >= 16 * est["step_seconds"] and "at most" in est["text"] and "measured here" in est["text"]
    again = train_estimate(ws, "quick", device="cpu", overrides=TINY, measure=False)  # the cached measurement
    assert again["step_seconds"] == est["step_seconds"] and "measured here on" in again["text"]
    # the app's dialog path: a fresh interpreter answers from the cache without importing torch
    code = ("import sys; from szviewer.workspace import Workspace; from szviewer.jobs.cnn import train_estimate; "
            f"from szviewer.cnn.settings import NetConfig; o = {TINY!r}; "
            f"e = train_estimate(Workspace({str(ws.root)!r}), 'quick', device='cpu', overrides=o, measure=False); "
            "print(e is not None, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**__import__("os").environ, "SZVIEWER_HOME": str(tmp_path / "home")})
    assert r.stdout.split() == ["True", "False"], r.stdout + r.stderr


def test_cli_train_estimate_prints_the_measured_duration(scratch_ws, tmp_path, monkeypatch, capsys):
    """`szviewer train WS --estimate`: 1,200 quick steps at a (stubbed) measured 2.0 s/step = at most 40 min."""
    import szviewer.cnn.train as train_mod
    from szviewer import cli

    monkeypatch.setenv("SZVIEWER_HOME", str(tmp_path / "home"))
    seen = {}

    def fake_measure(settings, x, y=None, device="cpu", steps=3, cancelled=None):
        seen.update(batch=settings.batch, n=len(x), device=device)
        return dict(FIXED_RATES)

    monkeypatch.setattr(train_mod, "measure_rates", fake_measure)
    assert cli.main(["train", str(scratch_ws), "--estimate", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "at most 40 min" in out and "1,200 steps of 64 at 2.00 s/step" in out
    assert seen["batch"] == 64 and seen["n"] > 0 and seen["device"] == "cpu"  # the quick preset's own batch
    assert cli.main(["train", str(scratch_ws), "--estimate", "--device", "cpu", "--max-seconds", "600"]) == 0
    assert "at most 10 min" in capsys.readouterr().out
    assert not Workspace(scratch_ws).has("cnn_model")  # --estimate trains nothing


def test_train_job_refuses_bad_time_options(scratch_ws):
    from szviewer.jobs.cnn import train_job

    ws = Workspace(scratch_ws)
    with pytest.raises(InputError, match="max-seconds"):
        train_job(ws, device="cpu", overrides=TINY, max_seconds=-5)
    with pytest.raises(InputError, match="checkpoint-seconds"):
        train_job(ws, device="cpu", overrides=TINY, checkpoint_seconds=0)


def test_a_cnn_per_instrument_trains_on_act_dr6_and_the_paper_model_is_refused(tmp_path):
    """act-dr6 cuts 16 x 16 cutouts of 0.5' pixels: the network adapts (the stem at stride 1, so the trunk ends at
    2 x 2 as the paper's), a real small training run saves a 16-pixel model that scores the workspace, a 32-pixel
    model is refused in one line, and ``--init-from`` starts the 16-pixel network from a 32-pixel model's
    weights (the shipped paper model fits it tensor for tensor)."""
    from szviewer.cli import main
    from szviewer.cnn.modelfile import load_model
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cnn import default_model_path, predict_job, train_job
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.dense import dense_job
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    root = tmp_path / "act"
    simulate_workspace(root, SimulationSettings(area_deg2=4.0, seed=5, instrument="act-dr6"))
    make_cutouts(Workspace(root), CutoutSettings())
    ws = Workspace(root)
    with pytest.raises(InputError, match=r"reads 32 x 32-pixel cutouts of 3 bands; this workspace's are 16 x 16"):
        predict_job(ws, model_path=default_model_path(), device="cpu")
    with pytest.raises(InputError, match="16 x 16"):
        dense_job(ws, model_path=default_model_path(), device="cpu")
    assert main(["predict", str(root), "--model", str(default_model_path())]) == 2
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = train_job(ws, preset="quick", device="cpu", overrides=TINY)
    finally:
        torch.set_num_threads(n)
    model = load_model(s["model"])
    assert model.config.npix == 16 and model.config.in_bands == 3 and model.config.stem_stride == 1
    assert model.config.feature_size == 512  # 8 x 4 x 2^2 channels at 2 x 2
    assert model.card["training_sky"]["instrument"] == "act-dr6" and model.card["training_sky"]["pixel_arcmin"] == 0.5
    p = predict_job(Workspace(root), device="cpu")  # the workspace's own model
    assert p["cutouts"] == len(Workspace(root).cutout_store().table)
    probs = Workspace(root).scores(np.asarray(Workspace(root).cutout_store().table["id"]))["cnn_prob"]
    assert np.isfinite(probs).all() and probs.std() > 0

    # --init-from: the shipped paper model (32 x 32 at 0.25') has every tensor the 0.5' network needs
    from szviewer.cnn.model import DeepSZNet
    from szviewer.cnn.modelfile import Platt, save_model
    from szviewer.jobs.cnn import init_state_for, train_settings

    paper = load_model(default_model_path())
    with Workspace(root).cutout_store() as store:
        fit = train_settings("finetune", store=store, one_over_f=True, init=paper)
    assert fit.net.npix == 16 and fit.net.stem_stride == 1 and fit.net.scaling == "detrend"
    assert fit.init_from == paper.card["sha256"]
    assert len(init_state_for(paper, fit, default_model_path())) == len(paper.net.state_dict())
    # a real fine-tuning run from a tiny 32-pixel model: at learning rate 0 the weights stay the start's exactly
    torch.manual_seed(7)
    src = tmp_path / "src.pt"
    save_model(src, DeepSZNet(TINY["net"]), Platt(1.0, 0.0), {"training_sky": {"instrument": "spt3g-paper"}})
    start = load_model(src)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ft = train_job(ws, preset="finetune", device="cpu", overrides={**TINY, "lr": 0.0, "weight_decay": 0.0},
                       init_from=src, model_out=tmp_path / "ft.pt", overwrite=True)
        free = train_job(ws, preset="finetune", device="cpu", overrides={**TINY, "lr": 0.0, "weight_decay": 0.0},
                         model_out=tmp_path / "free.pt", overwrite=True)
        # the start already loaded (train_workspace loads it once for the forecast and the run): the same run
        again = train_job(ws, preset="finetune", device="cpu", overrides={**TINY, "lr": 0.0, "weight_decay": 0.0},
                          init_from=start, model_out=tmp_path / "again.pt", overwrite=True)
    finally:
        torch.set_num_threads(n)
    ft, free, again = load_model(ft["model"]), load_model(free["model"]), load_model(again["model"])
    assert ft.card["init_from"] == again.card["init_from"] and ft.card["init_from"]["file"] == "src.pt"
    assert all(torch.equal(v, again.net.state_dict()[k]) for k, v in ft.net.state_dict().items())
    assert ft.card["init_from"]["sha256"] == start.card["sha256"] == ft.card["train_settings"]["init_from"]
    assert ft.card["init_from"]["training_sky"]["instrument"] == "spt3g-paper" and free.card["init_from"] is None
    for k in ("stem.0.weight", "stem.3.weight", "stages.2.0.conv2.weight", "head.2.weight", "head.6.bias"):
        assert torch.equal(ft.net.state_dict()[k], start.net.state_dict()[k]), k
        assert not torch.equal(free.net.state_dict()[k], start.net.state_dict()[k]), k
    # a model of other bands is refused before any step, in one line naming its file
    bad = tmp_path / "two_bands.pt"
    save_model(bad, DeepSZNet(NetConfig(width=8, blocks=(1, 1, 1), head=32, in_bands=2, scale_uk=(100.0, 100.0),
                                        scaling="fixed")), Platt(1.0, 0.0), {})
    with pytest.raises(InputError, match=r"two_bands.pt.*cannot start from this model: its weight stem.0.weight has "
                                         r"shape \(8, 2, 3, 3\).*needs \(8, 3, 3, 3\)"):
        train_job(ws, preset="finetune", device="cpu", overrides=TINY, init_from=bad, model_out=tmp_path / "x.pt",
                  overwrite=True)
    assert main(["train", str(root), "--preset", "finetune", "--init-from", str(bad)]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_the_shipped_act_dr6_model_finds_clusters_on_an_unseen_act_dr6_sky(tmp_path):
    """models/deepsz_act-dr6.pt (the paper model fine-tuned on act-dr6's 16 x 16 cutouts) is what `predict` picks
    on an act-dr6 workspace, and on a sky of a seed it never saw (25 deg^2, labels M500c >= 2e14 Msun as it was
    trained) it ranks positives above negatives far better than chance (AUC 0.90 here; 0.92 on the 300 deg^2
    seed-2 sky of its card; the from-scratch network it replaces scored 0.51)."""
    from szviewer.cnn.modelfile import load_model
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.evaluate.curves import roc_curve
    from szviewer.jobs.cnn import default_model_path, predict_job
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    shipped = default_model_path("act-dr6")
    assert shipped.name == "deepsz_act-dr6.pt" and default_model_path().name == "deepsz_synthetic.pt"
    card = load_model(shipped).card
    assert card["init_from"]["sha256"] == load_model(default_model_path()).card["sha256"]
    assert card["architecture"]["config"]["stem_stride"] == 1 and card["input_scaling"] == "detrend"
    root = tmp_path / "act"
    simulate_workspace(root, SimulationSettings(area_deg2=25.0, seed=31, instrument="act-dr6"))
    make_cutouts(Workspace(root), CutoutSettings(labels=LabelSettings.from_options("500c", 2e14, None)))
    s = predict_job(Workspace(root), device="cpu")
    assert s["model"] == str(shipped)
    ws = Workspace(root)
    with ws.cutout_store() as store:
        ids, y = np.asarray(store.table["id"]), np.asarray(store.table["label"], dtype=bool)
    assert 10 <= y.sum() <= 40
    assert roc_curve(ws.scores(ids)["cnn_prob"], y).auc > 0.8
