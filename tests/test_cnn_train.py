"""Dynamic stratified training (paper section 2.2.2): schedule, sampler, learning, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.model import NetConfig  # noqa: E402
from szviewer.cnn.train import (  # noqa: E402
    SplitData,
    TrainSettings,
    batch_plan,
    learning_rate,
    load_checkpoint,
    train,
    weighted_val_loss,
)
from szviewer.errors import Cancelled, InputError  # noqa: E402

TINY = NetConfig(**TINY_NET)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def easy_set(n: int, n_pos: int, seed: int) -> SplitData:
    """Noise cutouts; positives carry a strong tSZ-like decrement (negative at 90/148 GHz) near the centre."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 3, 32, 32)) * 30).astype(np.float32)
    y = np.zeros(n, dtype=bool)
    y[rng.choice(n, n_pos, replace=False)] = True
    yy, xx = np.mgrid[:32, :32]
    for i in np.nonzero(y)[0]:
        cx, cy = 15.5 + rng.uniform(-8, 8, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0**2))
        x[i] += (np.array([-250.0, -150.0, 10.0])[:, None, None] * blob).astype(np.float32)
    return SplitData(x, y, np.arange(n))


def tiny_settings(**kw) -> TrainSettings:
    base = dict(ratios=(1, 2), batch=32, warmup_batches=5, lr_steps=(40,), eval_every=5, patience=15,
                max_batches_per_ratio=25, checkpoint_every=7, fast=False, augment=True, net=TINY, seed=3,
                max_seconds=None)
    base.update(kw)
    return TrainSettings.preset_named("quick", **base)


def test_presets():
    p = TrainSettings.preset_named("paper")
    assert p.ratios == tuple(range(1, 21)) and p.batch == 128 and p.momentum == 0.9 and p.lr == 5e-3
    assert p.weight_decay == 0.003 and p.warmup_batches == 500 and p.lr_steps == (1000,)
    assert p.eval_every == 100 and p.patience == 1000 and p.net == NetConfig()
    q = TrainSettings.preset_named("quick")
    assert q.fast and len(q.ratios) < 20 and q.patience < 1000
    assert TrainSettings.from_dict(q.to_dict()) == q
    long = TrainSettings.preset_named("long")
    assert long.batch == 128 and long.ratios == (1, 2, 4, 8) and long.max_seconds is None and long.fast
    assert len(long.ratios) * long.max_batches_per_ratio == 8000 and long.lr_steps[0] < long.max_batches_per_ratio
    assert (long.momentum, long.lr, long.weight_decay) == (p.momentum, p.lr, p.weight_decay)
    with pytest.raises(ValueError):
        TrainSettings.preset_named("slow")


def test_learning_rate_schedule():
    s = TrainSettings.preset_named("paper")
    assert math.isclose(learning_rate(s, 0), 5e-3 / 3)
    assert math.isclose(learning_rate(s, 250), 5e-3 * (1 / 3 + 2 / 3 * 0.5))
    assert math.isclose(learning_rate(s, 500), 5e-3)
    assert math.isclose(learning_rate(s, 999), 5e-3)
    assert math.isclose(learning_rate(s, 1000), 5e-4)


def test_sampler_is_pure_and_stratified():
    a = batch_plan(5, 123, 4, 10, 1000, 128)
    b = batch_plan(5, 123, 4, 10, 1000, 128)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(batch_plan(5, 124, 4, 10, 1000, 128)[1], a[1])
    frac = np.mean([batch_plan(0, t, 4, 10, 1000, 128)[0].mean() for t in range(200)])
    assert abs(frac - 1 / 5) < 0.01  # negatives : positives = r = 4


def test_weighted_val_loss_is_the_oversampled_loss():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=50)
    y = np.zeros(50, bool)
    y[:5] = True
    r = 3  # 45 negatives, 5 positives -> repeat each positive 3 times for 45:15
    ce = np.where(y, np.logaddexp(0, -raw), np.logaddexp(0, raw))
    explicit = np.concatenate([ce[~y], np.repeat(ce[y], 3)]).mean()
    assert math.isclose(weighted_val_loss(raw, y, r), explicit, rel_tol=1e-12)
    assert math.isclose(weighted_val_loss(raw, y, None), ce.mean(), rel_tol=1e-12)


def test_tiny_training_learns(tmp_path):
    from sklearn.metrics import roc_auc_score

    tr, va = easy_set(400, 40, 0), easy_set(200, 20, 1)
    s = tiny_settings(ratios=(1, 2), max_batches_per_ratio=30, patience=30, lr=0.02)
    res = train(None, s, data=(tr, va), checkpoint_path=tmp_path / "ck.pt", log_path=tmp_path / "log.csv")
    vl = [row["val_loss"] for row in res.log if row["val_loss"] is not None]
    assert min(vl) < vl[0] - 0.1
    assert roc_auc_score(va.y, res.val_raw) > 0.9
    assert [p["ratio"] for p in res.per_ratio] == [1, 2]
    text = (tmp_path / "log.csv").read_text().splitlines()
    assert text[0] == "step,ratio,step_in_ratio,lr,loss,val_loss" and len(text) == len(res.log) + 1


def test_resume_equals_uninterrupted(tmp_path):
    tr, va = easy_set(120, 12, 2), easy_set(60, 6, 3)
    s = tiny_settings()
    full = train(None, s, data=(tr, va), checkpoint_path=tmp_path / "a.pt")

    calls = {"n": 0}

    def cancel_after_17_batches():
        calls["n"] += 1
        return calls["n"] > 17

    with pytest.raises(Cancelled):
        train(None, s, data=(tr, va), checkpoint_path=tmp_path / "b.pt", cancelled=cancel_after_17_batches)
    ck = load_checkpoint(tmp_path / "b.pt")
    assert 7 <= ck["state"]["step"] < 17  # the last checkpoint before the cancel is valid
    resumed = train(None, s, data=(tr, va), checkpoint_path=tmp_path / "b.pt", resume=True)
    assert resumed.steps == full.steps and resumed.best_ratio == full.best_ratio
    a, b = full.net.state_dict(), resumed.net.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(resumed.val_raw, full.val_raw, rtol=1e-6, atol=1e-6)
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in full.log]


def test_resume_refuses_other_settings_or_no_checkpoint(tmp_path):
    tr, va = easy_set(60, 6, 4), easy_set(30, 3, 5)
    s = tiny_settings(ratios=(1,), max_batches_per_ratio=7)
    train(None, s, data=(tr, va), checkpoint_path=tmp_path / "c.pt")
    with pytest.raises(InputError, match="c.pt"):
        train(None, tiny_settings(ratios=(1,), max_batches_per_ratio=8), data=(tr, va),
              checkpoint_path=tmp_path / "c.pt", resume=True)
    with pytest.raises(InputError, match="nothing.pt"):
        train(None, s, data=(tr, va), checkpoint_path=tmp_path / "nothing.pt", resume=True)
