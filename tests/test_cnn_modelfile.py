"""Platt calibration and model files (paper section 2.2.2): monotone calibration, round trip, refusals, and the
checksum that catches a damaged file (issue 11.8)."""

from __future__ import annotations

import struct
import warnings
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET  # noqa: E402

from szviewer.cnn.model import DeepSZNet, NetConfig  # noqa: E402
from szviewer.cnn.modelfile import Platt, fit_platt, load_model, payload_sha256, save_model  # noqa: E402
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
    obj = torch.load(path, weights_only=True)
    assert len(model.card["sha256"]) == 64
    assert model.card["sha256"] == payload_sha256(obj["arch"], obj["state_dict"], obj["card"])
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


def _save_intact(obj: dict, path) -> None:
    """Save a hand-made variant as an intact file (its checksum recomputed), as another szviewer would write it."""
    card = dict(obj["card"])
    card["sha256"] = payload_sha256(obj["arch"], obj["state_dict"], card)
    torch.save(dict(obj, card=card), path)


def test_refuses_other_architecture(tmp_path, tiny_file):
    good, _ = tiny_file
    obj = torch.load(good, weights_only=True)
    other = dict(obj, arch=dict(obj["arch"], name="resnet18"))
    _save_intact(other, tmp_path / "other_arch.pt")
    _refused(tmp_path / "other_arch.pt", "architecture")
    newer = dict(obj, arch=dict(obj["arch"], version=99))
    _save_intact(newer, tmp_path / "newer.pt")
    _refused(tmp_path / "newer.pt", "architecture")
    sd = dict(obj["state_dict"])
    sd.pop(next(iter(sd)))
    _save_intact(dict(obj, state_dict=sd), tmp_path / "missing_key.pt")
    _refused(tmp_path / "missing_key.pt", "missing")
    sd = dict(obj["state_dict"])
    k = "head.6.weight"
    sd[k] = torch.zeros(3, sd[k].shape[1])
    _save_intact(dict(obj, state_dict=sd), tmp_path / "bad_shape.pt")
    _refused(tmp_path / "bad_shape.pt", f"weight {k} has shape (3, {sd[k].shape[1]}), the architecture wants "
                                         f"(2, {sd[k].shape[1]})")
    card = dict(obj["card"])
    card.pop("platt")
    _save_intact(dict(obj, card=card), tmp_path / "no_platt.pt")
    _refused(tmp_path / "no_platt.pt", "Platt")


def _flip(src, dst, offset: int, mask: int = 0x10) -> None:
    data = bytearray(src.read_bytes())
    data[offset] ^= mask
    dst.write_bytes(bytes(data))


def _record_offset(path, suffix: str) -> int:
    """Where the bytes of the zip record whose name ends with ``suffix`` start in the file (stored, uncompressed)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
        assert info.compress_type == zipfile.ZIP_STORED
        with open(path, "rb") as fh:  # local header: 30 bytes + name + extra field
            fh.seek(info.header_offset)
            head = fh.read(30)
        n_name, n_extra = struct.unpack("<HH", head[26:30])
        return info.header_offset + 30 + n_name + n_extra


def test_a_flipped_byte_in_the_weights_or_the_calibration_is_caught(tmp_path, tiny_file):
    good, _ = tiny_file
    obj = torch.load(good, weights_only=True)
    # a weight: the largest tensor's bytes (torch.load itself does not check the zip CRC, so only the checksum can)
    big = max(range(len(obj["state_dict"])), key=lambda i: list(obj["state_dict"].values())[i].numel())
    bad = tmp_path / "bad_weight.pt"
    _flip(good, bad, _record_offset(good, f"data/{big}") + 101)
    _refused(bad, "damaged: checksum mismatch")
    # the Platt slope a = 1.5 inside the pickled card (a big-endian double): scores would be silently wrong
    raw = good.read_bytes()
    at = raw.find(struct.pack(">d", 1.5), _record_offset(good, "data.pkl"))
    assert at > 0
    bad = tmp_path / "bad_platt.pt"
    _flip(good, bad, at + 7, 0x01)  # the last mantissa byte: 1.5 -> 1.5000000000000002
    _refused(bad, "damaged: checksum mismatch")


def test_no_flipped_byte_anywhere_gives_a_traceback_or_other_scores(tmp_path, tiny_file):
    """A byte flipped at 40 places spread over the whole file: each is refused with a one-line InputError naming
    the file, or (zip padding, unused fields) loads the very same model."""
    good, _ = tiny_file
    ref = load_model(good)
    x = (np.random.default_rng(3).standard_normal((4, 3, 32, 32)) * 80).astype(np.float32)
    ref_raw = ref.raw(x, precision="eager")
    size = good.stat().st_size
    refused = 0
    for k, offset in enumerate(np.linspace(0, size - 1, 40).astype(int)):
        bad = tmp_path / f"flip{k}.pt"
        _flip(good, bad, int(offset))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a file that lost its checksum would warn, not load quietly
                model = load_model(bad)
        except InputError as exc:
            assert str(bad) in str(exc) and "\n" not in str(exc)
            refused += 1
            continue
        assert model.platt == ref.platt and model.card == ref.card
        np.testing.assert_array_equal(model.raw(x, precision="eager"), ref_raw)
    assert refused >= 30


def test_a_file_without_a_checksum_loads_with_a_warning(tmp_path, tiny_file):
    good, net = tiny_file
    obj = torch.load(good, weights_only=True)
    card = dict(obj["card"])
    card.pop("sha256")
    old = tmp_path / "before_checksums.pt"
    torch.save(dict(obj, card=card), old)
    with pytest.warns(UserWarning, match="no checksum"):
        model = load_model(old)
    assert model.platt == Platt(1.5, -2.0)


def test_the_shipped_model_carries_a_valid_checksum():
    from szviewer.jobs.cnn import default_model_path

    path = default_model_path()
    if not path.is_file():
        pytest.skip("no shipped model in models/")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card = load_model(path).card
    assert len(card["sha256"]) == 64 and card["preset"] == "long"


def test_predict_with_a_damaged_model_is_one_line_exit_2(tmp_path, tiny_file, scratch_ws, capsys):
    from szviewer import cli

    good, _ = tiny_file
    bad = tmp_path / "damaged.pt"
    _flip(good, bad, _record_offset(good, "data/0") + 3)
    assert cli.main(["predict", str(scratch_ws), "--model", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "damaged: checksum mismatch" in err[0]
