"""Platt calibration and model files (paper section 2.2.2): monotone calibration, round trip, refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.model import DeepSZNet, NetConfig  # noqa: E402
from szviewer.cnn.modelfile import Platt, fit_platt, load_model, save_model  # noqa: E402
from szviewer.errors import InputError  # noqa: E402

TINY = NetConfig(**TINY_NET)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    net = DeepSZNet(TINY).eval()
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_model(path, net, Platt(1.5, -2.0), {"preset": "test", "val_f1": 0.5, "test_f1": 0.4})
    return path, net


def test_platt_fit_is_monotone_and_calibrated():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=4000) * 2
    p_true = 1 / (1 + np.exp(-(1.3 * raw - 2.5)))
    y = rng.random(4000) < p_true
    platt = fit_platt(raw, y)
    assert abs(platt.a - 1.3) < 0.2 and abs(platt.b + 2.5) < 0.3
    grid = np.linspace(-20, 20, 2001)
    p = platt(grid)
    assert np.all(np.diff(p) >= 0) and np.all((p >= 0) & (p <= 1))
    order = np.argsort(raw)
    assert np.all(np.diff(platt(raw[order])) >= 0)
    # a useless score never inverts the ranking
    flat = fit_platt(-raw, y)
    assert flat.a > 0
    with pytest.raises(ValueError):
        fit_platt(raw, np.zeros(raw.size, bool))


def test_round_trip_fp16(tiny_file):
    path, net = tiny_file
    model = load_model(path)
    assert model.card["architecture"]["name"] == "deepsz-resnet50-32"
    assert model.card["input_scaling"] == "fixed" and model.card["platt"] == {"a": 1.5, "b": -2.0}
    assert model.card["weights_dtype"] == "float16" and "torch" in model.card["versions"]
    assert model.config == TINY
    x = (np.random.default_rng(1).standard_normal((8, 3, 32, 32)) * 80).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).float()
    got = model.raw(x, precision="eager")
    np.testing.assert_allclose(got, (ref[:, 1] - ref[:, 0]).numpy(), atol=2e-2)
    assert np.all(np.diff(model.calibrate(np.sort(got))) >= 0)


def _refused(path, match=None):
    with pytest.raises(InputError) as err:
        load_model(path)
    assert str(path) in str(err.value)
    if match:
        assert match in str(err.value)


def test_refuses_missing_random_truncated_and_foreign(tmp_path, tiny_file):
    good, _ = tiny_file
    _refused(tmp_path / "absent.pt", "not found")
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(np.random.default_rng(0).bytes(5000))
    _refused(rnd)
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _refused(trunc)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    _refused(plain, "not an szviewer CNN model file")


def test_refuses_other_architecture(tmp_path, tiny_file):
    good, _ = tiny_file
    obj = torch.load(good, weights_only=True)
    other = dict(obj, arch=dict(obj["arch"], name="resnet18"))
    torch.save(other, tmp_path / "other_arch.pt")
    _refused(tmp_path / "other_arch.pt", "architecture")
    newer = dict(obj, arch=dict(obj["arch"], version=99))
    torch.save(newer, tmp_path / "newer.pt")
    _refused(tmp_path / "newer.pt", "architecture")
    sd = dict(obj["state_dict"])
    sd.pop(next(iter(sd)))
    torch.save(dict(obj, state_dict=sd), tmp_path / "missing_key.pt")
    _refused(tmp_path / "missing_key.pt", "missing")
    sd = dict(obj["state_dict"])
    k = "head.6.weight"
    sd[k] = torch.zeros(3, sd[k].shape[1])
    torch.save(dict(obj, state_dict=sd), tmp_path / "bad_shape.pt")
    _refused(tmp_path / "bad_shape.pt", "shape")
    card = dict(obj["card"])
    card.pop("platt")
    torch.save(dict(obj, card=card), tmp_path / "no_platt.pt")
    _refused(tmp_path / "no_platt.pt", "Platt")
