"""A CNN estimate of log10 M500 for positive cutouts (issue 13 part 7; the paper's future work, section 4).

A small head on the trained DeepSZ network: the network is frozen and each positive cutout is described by its
activations, the 1024 x 2 x 2 trunk features after the head's BatchNorm and the 256 + 256 activations of the
two hidden fully connected layers (4,608 numbers). A ridge regression (scikit-learn ``RidgeCV`` on standardised
features, the penalty chosen by leave-one-out cross-validation on the training positives) maps them to
log10(M500 / Msun) of the cell's halo (the cutout table's ``m500`` column). Trained on the 'train' split's
positives, judged on the 'test' split's: bias = median(predicted - true) and scatter = the standard deviation of
(predicted - true) [dex], with the robust 1.4826 x MAD beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from szviewer.cnn.model import DeepSZNet


def mass_features(net: DeepSZNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(n, 4608) float32 activations of the frozen eval-mode network for (n, bands, 32, 32) uK cutouts."""
    net = net.eval()
    out = []
    with torch.inference_mode():
        for a in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[a:a + batch], dtype=np.float32))
            f = net.head[1](net.head[0](net.features(x)))  # flatten + BatchNorm1d: 4096
            h1 = net.head[3](net.head[2](f))
            h2 = net.head[5](net.head[4](h1))
            out.append(torch.cat([f, h1, h2], dim=1).float().numpy())
    n_feat = net.config.feature_size + 2 * net.config.head
    return np.concatenate(out) if out else np.zeros((0, n_feat), np.float32)


@dataclass
class MassHead:
    """log10 M500 [Msun] from :func:`mass_features`: standardisation + ridge (``fit`` / ``predict``)."""

    alphas: tuple[float, ...] = tuple(np.logspace(0, 5, 11))
    pipeline: object | None = None

    def fit(self, features: np.ndarray, log_m500: np.ndarray) -> MassHead:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if len(features) < 5:
            raise ValueError(f"the mass head needs at least 5 positive cutouts to train on, not {len(features)}")
        self.pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=self.alphas)).fit(features, log_m500)
        return self

    @property
    def alpha(self) -> float:
        return float(self.pipeline[-1].alpha_)

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.pipeline is None:
            raise RuntimeError("MassHead.predict before fit")
        return np.asarray(self.pipeline.predict(features), dtype=float)


def scatter_and_bias(pred: np.ndarray, true: np.ndarray) -> dict:
    """{'n', 'bias' (median of pred - true), 'scatter' (std), 'robust_scatter' (1.4826 MAD)} in dex."""
    d = np.asarray(pred, float) - np.asarray(true, float)
    if d.size == 0:
        return {"n": 0, "bias": float("nan"), "scatter": float("nan"), "robust_scatter": float("nan")}
    med = float(np.median(d))
    return {"n": int(d.size), "bias": med, "scatter": float(np.std(d)),
            "robust_scatter": float(1.4826 * np.median(np.abs(d - med)))}


def fit_and_report(features: np.ndarray, log_m500: np.ndarray, split: np.ndarray) -> tuple[MassHead, dict]:
    """Fit a :class:`MassHead` on the 'train' rows of the positives' ``features`` and report on each split.

    Returns the head and {'alpha', 'train': {...}, 'val': {...}, 'test': {...}, 'baseline_test': {...}} where the
    baseline predicts every test cutout at the training positives' mean log M500 (the scatter of the sample)."""
    split = np.asarray(split)
    at = {name: np.nonzero(split == name)[0] for name in ("train", "val", "test")}
    head = MassHead().fit(features[at["train"]], log_m500[at["train"]])
    out = {"alpha": head.alpha}
    for name, rows in at.items():
        out[name] = scatter_and_bias(head.predict(features[rows]) if rows.size else np.zeros(0), log_m500[rows])
    mean = float(np.mean(log_m500[at["train"]]))
    out["baseline_test"] = scatter_and_bias(np.full(at["test"].size, mean), log_m500[at["test"]])
    return head, out


def evaluate_mass_head(store, model, level: str = "all") -> dict:
    """Train a :class:`MassHead` on the store's 'train' positives, report on 'val' and 'test' positives
    (:func:`fit_and_report`)."""
    t = store.table
    m500 = np.asarray(t["m500"], dtype=float)
    rows = np.nonzero(np.asarray(t["label"], dtype=bool) & np.isfinite(m500) & (m500 > 0))[0]
    feats = mass_features(model.net, store.images(rows, level))
    return fit_and_report(feats, np.log10(m500[rows]), np.asarray(t["split"])[rows])[1]
