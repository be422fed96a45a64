"""Scoring a workspace with the CNN (``szviewer predict``, the app's "score with the CNN"): every cutout at one
component level or at all of them (:func:`szviewer.jobs.cnn.predict_job`), and optionally the whole map fully
convolutionally with its CNN candidates (``dense_job``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn
from szviewer.workspace import Workspace


def predict_workspace(ws: Workspace, model_path: str | os.PathLike | None = None, level: str = "all",
                      device: str = "auto", precision: str = "auto", all_levels: bool = False, dense: bool = False,
                      windowed: bool = False, distilled: bool = False, resolution_arcmin: float = 1.0,
                      stride_arcmin: float = 2.0,
                      progress: ProgressFn | None = None, cancelled: CancelFn | None = None,
                      overwrite: bool = False, say: Callable[[str], None] | None = None, executor=None) -> dict:
    """Score the cutouts at ``level`` (every level of the cutout store with ``all_levels``: products
    ``cnn_<level>``) and, with ``dense``, the whole map (product ``cnn_dense``: fully convolutional at
    ``resolution_arcmin``, or each window on its own every ``stride_arcmin`` with ``windowed``, or the 4' pass
    and the model's distilled fine head for the 1' map with ``distilled``).

    The dense tiles are tasks of ``executor`` (:mod:`szviewer.parallel`; default in process). Every output is
    checked (``overwrite``) before any scoring starts; with ``dense`` and no ``overwrite``, cutout scores of the
    same model that are still current (:func:`current_scores`) are kept instead of refused. ``say`` hears one
    line per finished product. Returns ``{"levels": [predict_job summaries], "dense": dense summary or None}``.
    """
    from szviewer.jobs.cnn import model_for, predict_job, score_product
    from szviewer.jobs.info import summary_line

    levels = [level]
    if all_levels:
        with ws.cutout_store() as st:
            levels = list(st.levels)
    kept = []
    if dense and not overwrite:  # `predict --dense` after `predict`: the cutout scores stay when still current
        model = str(model_for(ws, model_path))
        kept = [lv for lv in levels if current_scores(ws, score_product(lv), model)]
    for product in [score_product(lv) for lv in levels if lv not in kept] + (["cnn_dense"] if dense else []):
        ws.check_replace(product, overwrite)  # every output checked before any scoring
    if windowed and distilled:
        raise InputError(None, "--windowed and --distilled: choose one dense method")
    method = "windowed" if windowed else "distilled" if distilled else "fcn"
    if dense:
        from szviewer.jobs.dense import dense_grid_pix, dense_job

        dense_grid_pix(ws, method, resolution_arcmin, stride_arcmin)
        if method == "distilled":
            from szviewer.jobs.cnn import model_for
            from szviewer.jobs.dense import check_fine_head

            check_fine_head(model_for(ws, model_path))
    say = say or (lambda line: None)
    done = []
    for lv in levels:
        if lv in kept:
            say(f"{score_product(lv)}: kept (the cutout scores of this model are current; --overwrite scores them "
                "again)")
            continue
        s = predict_job(ws, model_path=model_path, level=lv, device=device, precision=precision, progress=progress,
                        cancelled=cancelled, overwrite=overwrite)
        say(summary_line(s))
        done.append(s)
    d = None
    if dense:
        d = dense_job(ws, model_path=model_path, level=level, stride_arcmin=stride_arcmin, device=device,
                      precision=precision, progress=progress, cancelled=cancelled, overwrite=overwrite,
                      method=method, resolution_arcmin=resolution_arcmin, executor=executor)
        say("dense: " + summary_line(d))
    return {"levels": done, "dense": d}


def current_scores(ws: Workspace, product: str, model: str) -> bool:
    """Whether ``product`` (cutout scores) exists, was made with the model file ``model`` and none of its inputs
    (the cutouts, the model) has changed since (:meth:`Workspace.stale`)."""
    made_with = ((ws.products.get(product) or {}).get("settings") or {}).get("model")
    return (ws.has(product) and made_with is not None and Path(made_with).resolve() == Path(model).resolve()
            and not ws.stale(product))
