"""Platt calibration and the model file: weights plus a model card (paper section 2.2.2, last paragraph).

Platt scaling (Platt 1999, as in the paper): a logistic regression of the label on the raw CNN output
(the logit difference z1 - z0), fit on the validation set: ``p = 1 / (1 + exp(-(a * raw + b)))``. With a > 0 the
calibrated probability is a strictly increasing function of the raw score, so rankings are unchanged.

The model file is ``torch.save`` of a plain dict, written atomically::

    {"format": "szviewer-cnn-model", "format_version": 1,
     "arch": {"name": "deepsz-resnet50-32", "version": 1, "config": NetConfig.to_dict()},
     "state_dict": {name: tensor (float16 or float32; integer buffers unchanged)},
     "card": {...JSON-able: architecture, input scaling, platt {a, b}, training sky, preset, F1s, versions}}

It is read with ``torch.load(weights_only=True)``; :func:`load_model` refuses, with an
:class:`~szviewer.errors.InputError` naming the file, anything that is not such a file, is truncated, or
whose architecture (name, version, state-dict keys and shapes) differs from this szviewer's network.

Integrity: the card's ``sha256`` (:func:`payload_sha256`) is the SHA-256 of everything that decides a score: the
format tag, the architecture, every tensor of the state dict (name, dtype, shape and bytes, in name order) and
the rest of the card (canonical JSON, so the Platt coefficients are covered). :func:`load_model` recomputes it
and refuses a file whose payload differs ("damaged: checksum mismatch"), so a flipped byte anywhere in the
file is either unreadable or caught, never silently wrong scores. Files written before the checksum existed
load with a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from szviewer.atomic import atomic_path
from szviewer.cnn.model import ARCH_NAME, ARCH_VERSION, DeepSZNet, NetConfig
from szviewer.cnn.platt import Platt, fit_platt
from szviewer.errors import InputError

__all__ = ["CNNModel", "Platt", "fit_platt", "library_versions", "load_model", "payload_sha256", "read_card",
           "save_model"]

MODEL_FORMAT = "szviewer-cnn-model"
MODEL_FORMAT_VERSION = 1
CHECKSUM_KEY = "sha256"  # in the card


def payload_sha256(arch: dict, state_dict: dict, card: dict) -> str:
    """SHA-256 (hex) of a model file's payload: format, architecture, tensors (name, dtype, shape, bytes in name
    order) and the card without its own ``sha256`` entry (canonical JSON)."""
    h = hashlib.sha256()
    rest = {k: v for k, v in card.items() if k != CHECKSUM_KEY}
    head = {"format": MODEL_FORMAT, "arch": arch, "card": rest}
    h.update(json.dumps(head, sort_keys=True, separators=(",", ":"), allow_nan=True).encode())
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            h.update(f"\0{name}\0{type(t).__name__}\0".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def library_versions() -> dict:
    import sklearn

    from szviewer import __version__

    return {"szviewer": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


class CNNModel:
    """A loaded model: the network (eval mode, fp32), its Platt calibration and card."""

    def __init__(self, net: DeepSZNet, platt: Platt, card: dict | None = None, path: Path | None = None):
        self.net = net.eval()
        self.platt = platt
        self.card = card or {}
        self.path = path
        self._scorers: dict = {}  # precision -> szviewer.cnn.predict.Scorer, built on first use by raw()

    @property
    def config(self) -> NetConfig:
        return self.net.config

    def calibrate(self, raw) -> np.ndarray:
        return self.platt(raw)

    def raw(self, images: np.ndarray, precision: str = "auto") -> np.ndarray:
        """Raw scores of (n, 3, 32, 32) uK cutouts (a :class:`szviewer.cnn.predict.Scorer`, built once per precision).

        ``precision='eager'`` is the plain fp32 network; the others are those of the Scorer.
        """
        from szviewer.cnn.predict import Scorer

        if precision not in self._scorers:
            dev = str(next(self.net.parameters()).device)
            self._scorers[precision] = Scorer(self.net, fast=precision != "eager", device=dev,
                                              precision="fp32" if precision == "eager" else precision,
                                              platt=self.platt)
        return self._scorers[precision].raw(images)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def save_model(path: str | os.PathLike, net: DeepSZNet, platt: Platt, card: dict, half: bool = True) -> Path:
    """Write the model file atomically; ``half`` stores floating-point tensors as float16 (about 19 MB).

    The card gets its ``sha256`` (:func:`payload_sha256`), which :func:`load_model` verifies."""
    path = Path(path)
    sd = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        sd[k] = v.clone()
    card = dict(card)
    card.update({"architecture": {"name": ARCH_NAME, "version": ARCH_VERSION, "config": net.config.to_dict()},
                 "input_scaling": net.config.scaling, "platt": platt.to_dict(),
                 "weights_dtype": "float16" if half else "float32"})
    card.setdefault("versions", library_versions())
    card.pop(CHECKSUM_KEY, None)
    arch = {"name": ARCH_NAME, "version": ARCH_VERSION, "config": net.config.to_dict()}
    card = _jsonable(card)
    card[CHECKSUM_KEY] = payload_sha256(arch, sd, card)
    obj = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "arch": arch, "state_dict": sd,
           "card": card}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: the archive's inner folder is 'archive',
        torch.save(obj, fh)  # not the temporary name, so equal models give equal files
    return path


def read_card(path: str | os.PathLike) -> dict:
    """The model card of a model file (loads the file, so it is checked as well)."""
    return load_model(path).card


def first_shape_mismatch(want: dict, have: dict) -> tuple[str, object, tuple] | None:
    """The first tensor of the state dict ``want`` that ``have`` lacks or holds in another shape, as (name, the shape
    found, or 'none' / the type of a non-tensor, the shape wanted); None when every tensor fits."""
    for k, v in want.items():
        got = have.get(k)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape):
            found = tuple(got.shape) if isinstance(got, torch.Tensor) else "none" if got is None else type(got).__name__
            return k, found, tuple(v.shape)
    return None


def load_model(path: str | os.PathLike, device: str = "cpu") -> CNNModel:
    """Load and check a model file; InputError naming the file when it is missing, damaged (unreadable, or its
    checksum differs), of another kind or mismatching this szviewer's architecture."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle with foreign objects ...
        raise InputError(path, f"not a readable szviewer CNN model file (damaged, or of another kind: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise InputError(path, "not an szviewer CNN model file (no 'szviewer-cnn-model' format tag)")
    try:
        version = int(obj.get("format_version", -1))
    except (TypeError, ValueError):
        raise InputError(path, "damaged: its format version is not a number") from None
    if version > MODEL_FORMAT_VERSION:
        raise InputError(path, f"model file format version {version} is newer than this szviewer reads "
                               f"({MODEL_FORMAT_VERSION})")
    arch, sd, card = obj.get("arch"), obj.get("state_dict"), obj.get("card")
    if not isinstance(arch, dict) or not isinstance(sd, dict) or not isinstance(card, dict):
        raise InputError(path, "damaged: the model file lacks its architecture, weights or card")
    _verify_checksum(path, arch, sd, card)
    if arch.get("name") != ARCH_NAME or arch.get("version") != ARCH_VERSION:
        raise InputError(path, f"architecture {arch.get('name')!r} v{arch.get('version')} does not match this "
                               f"szviewer's {ARCH_NAME!r} v{ARCH_VERSION}")
    try:
        config = NetConfig.from_dict(arch["config"])
        net = DeepSZNet(config)
    except Exception as exc:
        raise InputError(path, f"bad network configuration in the model file: {exc}") from None
    want = net.state_dict()
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    if missing or extra:
        raise InputError(path, f"weights do not match the architecture: missing {missing[:3]}, unexpected "
                               f"{extra[:3]} ({len(missing)} missing, {len(extra)} unexpected)")
    bad = first_shape_mismatch(want, sd)
    if bad is not None:
        raise InputError(path, f"weight {bad[0]} has shape {bad[1]}, the architecture wants {bad[2]}")
    for k in want:
        if sd[k].is_floating_point() and not torch.isfinite(sd[k]).all():
            raise InputError(path, f"weight {k} holds NaN or inf values")
    net.load_state_dict({k: v.to(want[k].dtype) for k, v in sd.items()})
    p = card.get("platt") or {}
    try:
        platt = Platt(float(p["a"]), float(p["b"]))
    except (KeyError, TypeError, ValueError):
        raise InputError(path, "model card has no Platt calibration (platt.a, platt.b)") from None
    if not (math.isfinite(platt.a) and math.isfinite(platt.b)):
        raise InputError(path, "model card's Platt coefficients are not finite")
    net = net.to(device).eval()
    return CNNModel(net, platt, card, path)


def _verify_checksum(path: Path, arch: dict, sd: dict, card: dict) -> None:
    """InputError 'damaged: checksum mismatch' unless the payload hashes to the card's sha256; a warning if the
    card has none (a file from before checksums)."""
    want = card.get(CHECKSUM_KEY)
    if want is None:
        warnings.warn(f"{path}: model file has no checksum (written before szviewer checked them), so damage to it "
                      "cannot be detected; save it again to add one", stacklevel=3)
        return
    try:
        got = payload_sha256(arch, sd, card)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(path, f"damaged: its payload cannot be checksummed ({type(exc).__name__})") from None
    if got != want:
        raise InputError(path, "damaged: checksum mismatch (the weights or the card are not what was written; "
                               "use an intact copy of the file)")
