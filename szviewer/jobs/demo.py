"""The demo workspace: one function for the CLI's main job (``szviewer --headless``) and the app's welcome view.

A synthetic sky of the paper's instrument (README: 100 deg^2, seed 0), its DeepSZ cutouts, the matched filter,
the CNN on the cutouts (the workspace's model, else the shipped one) and on the whole map (fully convolutional, 1':
the CNN's candidates with positions). Steps already done are kept, so running it again only
adds what is missing. Where the demo goes: ``$SZVIEWER_HOME/demo`` (default ``~/.szviewer/demo``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from szviewer.progress import CancelFn, ProgressFn

#: The README's demo sky [deg^2] and seed.
DEMO_AREA_DEG2 = 100.0
DEMO_SEED = 0


@dataclass(frozen=True)
class DemoSettings:
    """What the demo simulates: ``area_deg2`` of synthetic sky [deg^2] from ``seed``."""

    area_deg2: float = DEMO_AREA_DEG2
    seed: int = DEMO_SEED

    def simulation(self):
        """The :class:`~szviewer.sky.synthetic.SimulationSettings` of this demo (the paper's instrument)."""
        from szviewer.sky.synthetic import SimulationSettings

        return SimulationSettings(seed=int(self.seed), area_deg2=float(self.area_deg2))


def szviewer_home() -> Path:
    """``$SZVIEWER_HOME`` when set, else ``~/.szviewer``."""
    return Path(os.environ.get("SZVIEWER_HOME") or Path.home() / ".szviewer")


def demo_workspace_path() -> Path:
    return szviewer_home() / "demo"


#: ``progress_for(stage)``: a context manager that yields the progress callback of one stage (a tqdm bar in
#: the CLI, a prefixed message in the app).
ProgressFor = Callable[[str], contextlib.AbstractContextManager]


def _no_bar(stage: str):
    return contextlib.nullcontext(None)


def prefixed(progress: ProgressFn | None) -> ProgressFor:
    """A ``progress_for`` that sends every stage to one ``progress`` callback, as ``"stage: message"``."""
    if progress is None:
        return _no_bar

    def stage(name: str):
        return contextlib.nullcontext(lambda d, t, m="": progress(d, t, f"{name}: {m}"))

    return stage


def build_demo(path: str | os.PathLike | None = None, settings: DemoSettings | None = None,
               progress_for: ProgressFor | None = None, cancelled: CancelFn | None = None,
               say: Callable[[str], None] = print, report: bool = False) -> dict:
    """Build (or complete) the demo workspace at ``path`` (default :func:`demo_workspace_path`).

    Returns ``{"workspace", "steps", "card"}``: the steps that ran (``simulate``, ``cutouts``, ``mf``,
    ``predict``, ``dense``) and the sky card of a new sky (None when the sky existed). With ``report`` (the CLI's
    main job) also ``"description"``, the workspace as ``szviewer info`` describes it once built, and ``"table1"``, the
    paper's Table 1 of its scores (:func:`szviewer.jobs.evaluate.evaluate_workspace`; None when nothing has
    scored the cutouts).
    """
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.info import summary_line
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.workspace import Workspace

    settings = settings or DemoSettings()
    path = Path(path) if path is not None else demo_workspace_path()
    bars = progress_for or _no_bar
    steps: list[str] = []
    card = None
    if not (path / "workspace.json").exists():
        say(f"building the demo workspace at {path} ({settings.area_deg2:g} deg^2 synthetic sky, "
            f"seed {settings.seed})")
        with bars("simulate") as bar:
            card = simulate_workspace(path, settings.simulation(), progress=bar, cancelled=cancelled)
        steps.append("simulate")
    ws = Workspace(path)
    if not ws.has("cutouts"):
        with bars("cutouts") as bar:
            s = make_cutouts(ws, CutoutSettings(), progress=bar, cancelled=cancelled)
        say(f"{s['cutouts']} cutouts, {s['positives']} positive")
        steps.append("cutouts")
    if not ws.has("mf"):
        from szviewer.jobs.mf import run_mf_on_workspace

        with bars("mf") as bar:
            s = run_mf_on_workspace(ws, progress=bar, cancelled=cancelled)
        say(f"matched filter: {s['detections']} detections, {s['positives_detected']} of {s['positives']} "
            f"positive cutouts detected ({s['seconds']:.1f} s)")
        steps.append("mf")
    if not ws.has("cnn"):
        from szviewer.jobs.cnn import predict_job

        with bars("predict") as bar:
            s = predict_job(ws, progress=bar, cancelled=cancelled)
        say("CNN: " + summary_line(s))
        steps.append("predict")
    if not ws.has("cnn_dense"):  # the CNN's candidates with positions, for the object-level table
        from szviewer.jobs.dense import dense_job

        with bars("dense") as bar:
            s = dense_job(ws, progress=bar, cancelled=cancelled)
        say(f"CNN candidates: {s['candidates']} peaks of the fully convolutional {s['grid_arcmin']:g}' map "
            f"({s['seconds']:.1f} s)")
        steps.append("dense")
    done = {"workspace": str(path), "steps": steps, "card": card}
    if report:
        done.update(_report(path))
    return done


def _report(path: Path) -> dict:
    """The demo workspace described, then its Table 1 (which commits the product ``evaluation``)."""
    from szviewer.jobs.evaluate import evaluate_workspace
    from szviewer.jobs.info import describe_workspace
    from szviewer.workspace import Workspace

    ws = Workspace(path)
    description = describe_workspace(ws)
    table1 = evaluate_workspace(ws)[1] if ws.scores() else None
    return {"description": description, "table1": table1}
