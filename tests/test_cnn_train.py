"""Dynamic stratified training (paper section 2.2.2): schedule, sampler, learning, exact resume (also after a
wall-time checkpoint and a real kill -9), presets by steps, measured step times and the ETA."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

import szviewer.cnn.train as train_mod  # noqa: E402
from szviewer.cnn.model import NetConfig  # noqa: E402
from szviewer.cnn.train import (  # noqa: E402
    SplitData,
    TrainSettings,
    batch_plan,
    estimate_seconds,
    learning_rate,
    load_checkpoint,
    measure_rates,
    plan_max_evals,
    plan_max_steps,
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
                max_batches_per_ratio=25, checkpoint_every=7, fast=False, augment=True, net=TINY, seed=3)
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
    assert long.batch == 128 and long.ratios == (1, 2, 4, 8) and long.fast
    assert len(long.ratios) * long.max_batches_per_ratio == 8000 and long.lr_steps[0] < long.max_batches_per_ratio
    assert (long.momentum, long.lr, long.weight_decay) == (p.momentum, p.lr, p.weight_decay)
    with pytest.raises(ValueError):
        TrainSettings.preset_named("slow")
    # every preset is a number of steps, never a wall-clock budget (issue 11.9)
    assert [TrainSettings.preset_named(n).max_seconds for n in ("paper", "quick", "long")] == [None, None, None]
    assert [plan_max_steps(TrainSettings.preset_named(n)) for n in ("quick", "long", "paper")] == [1200, 8000, 400000]
    assert TrainSettings.preset_named("quick", max_seconds=60.0).max_seconds == 60.0  # the explicit opt-in


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


def _assert_same_run(got, ref):
    """Bit-identical weights, steps, ratio choice, validation scores and loss log."""
    assert got.steps == ref.steps and got.best_ratio == ref.best_ratio
    a, b = ref.net.state_dict(), got.net.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(b[k], a[k]), k
    np.testing.assert_array_equal(got.val_raw, ref.val_raw)
    assert [r["loss"] for r in got.log] == [r["loss"] for r in ref.log]


class FakeClock:
    """A wall clock that advances ``dt`` seconds every time it is read (a machine of any speed)."""

    def __init__(self, dt: float):
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.t += self.dt
        return self.t


@pytest.fixture(scope="module")
def resume_case():
    """Small data, tiny settings and the uninterrupted run that every resume must reproduce bit for bit."""
    tr, va = easy_set(120, 12, 2), easy_set(60, 6, 3)
    s = tiny_settings()
    full = train(None, s, data=(tr, va))
    assert full.steps > 30  # both ratios ran, so the resumes below cross a ratio boundary
    return tr, va, s, full


def cancel_after(n: int):
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > n

    return cancelled


def test_resume_equals_uninterrupted(tmp_path, resume_case):
    tr, va, s, full = resume_case
    with pytest.raises(Cancelled):
        train(None, s, data=(tr, va), checkpoint_path=tmp_path / "b.pt", checkpoint_seconds=None,
              cancelled=cancel_after(30))
    ck = load_checkpoint(tmp_path / "b.pt")
    # checkpoints every 7 batches and at the end of ratio 1 (batch 15, by patience): the last is 28, in ratio 2
    assert ck["state"]["step"] == 28 and ck["state"]["ratio_index"] == 1
    resumed = train(None, s, data=(tr, va), checkpoint_path=tmp_path / "b.pt", resume=True)
    _assert_same_run(resumed, full)


def test_wall_time_checkpoint_and_exact_resume(tmp_path, resume_case, monkeypatch):
    """No step checkpoint (checkpoint_every is huge): only the wall-time rule writes one, at a step that is no
    multiple of anything, and resuming from it still gives the uninterrupted run bit for bit."""
    tr, va, s, full = resume_case
    s = TrainSettings.from_dict({**s.to_dict(), "checkpoint_every": 10**6})
    monkeypatch.setattr(train_mod, "_clock", FakeClock(1.0))  # each reading of the clock: one more second
    with pytest.raises(Cancelled):
        train(None, s, data=(tr, va), checkpoint_path=tmp_path / "w.pt", checkpoint_seconds=5.0,
              cancelled=cancel_after(24))
    ck = load_checkpoint(tmp_path / "w.pt")
    # ratio 1 ends at batch 15 (a ratio-end checkpoint); the last one is mid ratio 2, so the clock rule wrote it
    assert 15 < ck["state"]["step"] < 24 and ck["state"]["ratio_index"] == 1 and ck["state"]["k"] > 0
    assert ck["state"]["checkpoints"] >= 4  # the clock rule fired repeatedly
    monkeypatch.setattr(train_mod, "_clock", train_mod.time.monotonic)
    resumed = train(None, s, data=(tr, va), checkpoint_path=tmp_path / "w.pt", resume=True)
    _assert_same_run(resumed, full)


KILL_CHILD = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_cnn_train import easy_set, tiny_settings
from szviewer.cnn.train import train
tr, va = easy_set(120, 12, 2), easy_set(60, 6, 3)
def progress(done, total, msg):
    print("step", done, flush=True)
    time.sleep(0.02)  # slower, not different: the parent kills it mid-run
train(None, tiny_settings(checkpoint_every=10**6), data=(tr, va), checkpoint_path={ck!r}, checkpoint_seconds=0.2,
      progress=progress)
print("finished", flush=True)
"""


def test_kill_9_then_resume_is_bit_identical(tmp_path, resume_case):
    """A real SIGKILL mid-run (only wall-time checkpoints), then resume in this process: the uninterrupted run."""
    tr, va, s, full = resume_case
    ck = tmp_path / "k.pt"
    code = KILL_CHILD.format(tests=str(Path(__file__).parent), ck=str(ck))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if line.startswith("step") and int(line.split()[1]) >= 20 and ck.exists():
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    got = load_checkpoint(ck)["state"]
    assert 0 < got["step"] < full.steps
    resumed = train(None, TrainSettings.from_dict({**s.to_dict(), "checkpoint_every": 10**6}), data=(tr, va),
                    checkpoint_path=ck, resume=True)
    _assert_same_run(resumed, full)


def test_a_preset_does_not_depend_on_the_clock(tmp_path, resume_case, monkeypatch):
    """The same preset on a very slow machine (every clock reading +100 s): the same run, bit for bit, and a
    checkpoint every other batch (the wall-time rule) changes nothing. Only the opt-in max_seconds stops early."""
    tr, va, s, full = resume_case
    monkeypatch.setattr(train_mod, "_clock", FakeClock(100.0))
    slow = train(None, s, data=(tr, va), checkpoint_path=tmp_path / "slow.pt", checkpoint_seconds=120.0)
    _assert_same_run(slow, full)
    assert not slow.stopped_by_time and load_checkpoint(tmp_path / "slow.pt")["state"]["checkpoints"] >= full.steps // 2
    monkeypatch.setattr(train_mod, "_clock", FakeClock(100.0))
    budget = train(None, TrainSettings.from_dict({**s.to_dict(), "max_seconds": 2000.0}), data=(tr, va))
    assert budget.stopped_by_time and budget.steps < full.steps
    assert budget.per_ratio[-1]["ended_by"] == "time budget"


def test_progress_counts_the_plan_and_gives_an_eta(resume_case):
    tr, va, s, full = resume_case
    calls = []
    train(None, s, data=(tr, va), progress=lambda d, t, m: calls.append((d, t, m)))
    total = plan_max_steps(s)
    assert total == 50 and {t for _, t, _ in calls} == {total}  # the preset's real step count, never changing
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and done[-1] == total  # a ratio ended by patience jumps ahead; the bar ends full
    assert sum("at most" in m and "left" in m for _, _, m in calls) >= full.steps - 4


def test_measured_rates_and_the_estimate():
    tr = easy_set(64, 8, 7)
    s = tiny_settings(batch=16)
    rates = measure_rates(s, tr.x, tr.y, steps=2)
    assert rates["step_seconds"] > 0 and rates["eval_seconds_per_cutout"] > 0 and rates["batch"] == 16
    assert rates["bf16_autocast"] is False  # fast=False: fp32
    fixed = {"step_seconds": 2.0, "eval_seconds_per_cutout": 0.01, "read_seconds_per_cutout": 0.001}
    est = estimate_seconds(s, fixed, n_val=100, n_read=1000, n_score=300)
    assert est["steps"] == 50 and est["evals"] == plan_max_evals(s) == 2 * (25 // 5 + 2) + 1
    assert est["seconds"] == pytest.approx(50 * 2.0 + 15 * 100 * 0.01 + 1000 * 0.001 + 300 * 0.01)
    half = estimate_seconds(s, fixed, n_val=100, done_steps=25)  # a resumed run: only what is left
    assert half["steps"] == 25 and half["parts"]["steps"] == pytest.approx(50.0)
    capped = estimate_seconds(TrainSettings.from_dict({**s.to_dict(), "max_seconds": 30.0}), fixed, n_val=100)
    assert capped["seconds"] == pytest.approx(30.0)


def test_bf16_autocast_only_where_native(monkeypatch):
    import szviewer.cnn.fused as fused

    monkeypatch.setattr(fused, "bf16_native", lambda: False)
    assert not train_mod.bf16_autocast_pays("cpu")
    monkeypatch.setattr(fused, "bf16_native", lambda: True)
    assert train_mod.bf16_autocast_pays("cpu")

    def cuda_bf16(including_emulation=True):  # a pre-Ampere GPU: bf16 only emulated
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", cuda_bf16)
    assert not train_mod.bf16_autocast_pays("cuda")


def test_resume_refuses_other_settings_or_no_checkpoint(tmp_path):
    tr, va = easy_set(60, 6, 4), easy_set(30, 3, 5)
    s = tiny_settings(ratios=(1,), max_batches_per_ratio=7)
    train(None, s, data=(tr, va), checkpoint_path=tmp_path / "c.pt")
    with pytest.raises(InputError, match="c.pt"):
        train(None, tiny_settings(ratios=(1,), max_batches_per_ratio=8), data=(tr, va),
              checkpoint_path=tmp_path / "c.pt", resume=True)
    with pytest.raises(InputError, match="nothing.pt"):
        train(None, s, data=(tr, va), checkpoint_path=tmp_path / "nothing.pt", resume=True)
    # a time budget or the checkpoint interval may change on resume: neither changes what a step computes
    again = train(None, TrainSettings.from_dict({**s.to_dict(), "max_seconds": 3600.0, "checkpoint_every": 3}),
                  data=(tr, va), checkpoint_path=tmp_path / "c.pt", resume=True)
    assert again.steps == 7
