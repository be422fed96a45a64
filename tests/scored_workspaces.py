"""Test workspaces with score columns, written the way the finders write them (shared by the GUI tests)."""

from __future__ import annotations

import shutil

import numpy as np

from szviewer.workspace import Workspace


def bare_copy(src, dst) -> Workspace:
    """Copy a workspace without any finder's output (other tests may have run finders on the shared one)."""
    shutil.copytree(src, dst)
    ws = Workspace(dst)
    for product in ("mf", "cnn", "cnn_dense", "cnn_model", "evaluation"):
        ws.forget(product)
    for name in ("scores.h5", "annotations.json"):
        (dst / name).unlink(missing_ok=True)
    return ws


def scored_copy(src, dst, mf: bool = True, cnn: bool = True, seed: int = 0):
    """Copy a workspace and write score columns the way the finders do (Workspace.write_scores), derived from
    the truth labels plus noise: CNN probabilities high for clusters, MF S/N growing with mass, NaN (no
    detection) below S/N 3.5."""
    ws = bare_copy(src, dst)
    with ws.cutout_store() as st:
        t = st.table
        ids = np.asarray(t["id"])
        y = np.asarray(t["label"])
        m = np.nan_to_num(np.asarray(t["m_vir"]), nan=0.0)
    rng = np.random.default_rng(seed)
    n = ids.size
    if cnn:
        ws.write_scores("cnn", ids, {"cnn_prob": np.where(y, rng.beta(4, 1.5, n), rng.beta(0.3, 12, n))})
    if mf:
        snr = np.where(y, rng.normal(4.5, 2.5, n) + 2 * np.log10(np.maximum(m, 1e13) / 2e14 + 1),
                       rng.normal(0, 1.5, n))
        snr[snr < 3.5] = np.nan
        ws.write_scores("mf", ids, {"mf_snr": snr})
    return dst
