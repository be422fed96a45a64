"""Training the CNN on a workspace (``szviewer train``, the app's "train the CNN"): first the forecast of how
long the preset takes on this machine (:func:`szviewer.jobs.cnn.train_estimate`), then the run itself
(:func:`szviewer.jobs.cnn.train_job`).
"""

from __future__ import annotations

from collections.abc import Callable

from szviewer.progress import CancelFn, ProgressFn
from szviewer.workspace import Workspace


def train_workspace(ws: Workspace, preset: str = "quick", level: str = "all", device: str = "auto",
                    resume: bool = False, seed: int = 0, max_seconds: float | None = None,
                    checkpoint_seconds: float | None = 120.0, overwrite: bool = False, forecast: bool = True,
                    estimate_only: bool = False, progress: ProgressFn | None = None,
                    cancelled: CancelFn | None = None, say: Callable[[str], None] | None = None,
                    init_from=None) -> dict:
    """Train the CNN; with ``forecast`` first measure a few steps here and ``say`` how long the run can take
    (the app's train dialog has measured already, so it passes ``forecast=False``), at the end ``say`` the
    summary. ``estimate_only``: stop after the forecast. ``init_from``: a model file to fine-tune (checked
    before the forecast). Returns the :func:`~szviewer.jobs.cnn.train_job` summary, or ``{"estimate": ...}``
    with ``estimate_only``."""
    from szviewer.jobs.cnn import start_model, train_estimate, train_job
    from szviewer.jobs.info import summary_line

    say = say or (lambda line: None)
    init_from = start_model(init_from)[0]  # loaded once, for the forecast and the run
    if forecast or estimate_only:
        est = train_estimate(ws, preset=preset, level=level, device=device, seed=seed, max_seconds=max_seconds,
                             resume=resume, cancelled=cancelled, init_from=init_from)
        say(est["text"])
        if estimate_only:
            return {"estimate": est}
    s = train_job(ws, preset=preset, level=level, device=device, resume=resume, progress=progress,
                  cancelled=cancelled, seed=seed, max_seconds=max_seconds, checkpoint_seconds=checkpoint_seconds,
                  overwrite=overwrite, init_from=init_from)
    say(summary_line(s))
    return s
