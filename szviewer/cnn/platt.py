"""Platt calibration of the raw CNN score (Platt 1999; paper section 2.2.2, last paragraph).

A logistic regression of the label on the raw CNN output (the logit difference z1 - z0), fit on the validation
set: ``p = 1 / (1 + exp(-(a * raw + b)))``. Its own module so that :mod:`szviewer.cnn.predict` and
:mod:`szviewer.cnn.modelfile` both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Platt:
    """p = sigmoid(a * raw + b)."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, raw) -> np.ndarray:
        z = self.a * np.asarray(raw, dtype=np.float64) + self.b
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow warnings

    def to_dict(self) -> dict:
        return {"a": float(self.a), "b": float(self.b)}


def fit_platt(raw, labels) -> Platt:
    """Fit Platt's sigmoid on (raw score, label) pairs with scikit-learn (no regularisation)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(raw, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(labels, dtype=bool).ravel()
    if y.all() or not y.any():
        raise ValueError("Platt scaling needs both positive and negative validation cutouts")
    lr = LogisticRegression(C=1e10, max_iter=1000)  # effectively unregularised, on every scikit-learn version
    lr.fit(x, y)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if not a > 0:  # a network no better than chance: keep the ranking (never invert it)
        a = 1e-6
    return Platt(a, b)
