"""The jobs the app runs (pure Python, no Qt): one small function per pipeline step, called in the job's own
process with plain arguments (paths, numbers) and ``progress`` / ``cancelled``; each calls the application
layer (:mod:`szviewer.jobs`) exactly as the CLI does. :data:`JOB_KINDS` lists those offered on an open workspace.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

#: Job kinds whose tiles can run on a Dask cluster (``workers`` / ``scheduler``, :mod:`szviewer.parallel`).
TILE_KINDS = ("simulate", "cutouts", "mf", "dense")

# ---------------------------------------------------------------------------------------------- job functions
# Module-level functions so a spawned child can import them; each takes plain arguments (paths, numbers).


@contextlib.contextmanager
def tile_executor(workers: int = 0, scheduler: str | None = None):
    """The executor a job's tiles run on (as ``--workers`` / ``--scheduler`` give the CLI's); a Dask cluster
    prints its one line (scheduler and dashboard address) into the job's log, and is shut down when the job ends
    or is cancelled."""
    from szviewer.parallel import ExecutorSettings, make_executor

    settings = ExecutorSettings(workers=int(workers or 0), scheduler=scheduler or None)
    ex = make_executor(settings)
    try:
        if settings.distributed:
            print(ex.describe(), flush=True)
        yield ex
    finally:
        ex.close()


def simulate(out: str, area_deg2: float = 25.0, seed: int = 0, overwrite: bool = False, progress=None,
             cancelled=None, workers: int = 0, scheduler: str | None = None) -> dict:
    """A synthetic sky in a new workspace (szviewer simulate)."""
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    with tile_executor(workers, scheduler) as ex:
        card = simulate_workspace(out, SimulationSettings(seed=int(seed), area_deg2=float(area_deg2)),
                                  overwrite=overwrite, progress=progress, cancelled=cancelled, executor=ex)
    print(f"workspace {out}: {area_deg2:g} deg^2, seed {seed}, {card.get('seconds', 0):.1f} s")
    return {"workspace": str(out), "seconds": card.get("seconds")}


def cutouts(workspace: str, overwrite: bool = False, progress=None, cancelled=None, workers: int = 0,
            scheduler: str | None = None) -> dict:
    """The DeepSZ cutout set of a workspace (szviewer cutouts); a HEALPix sky's sampling on ``workers`` (a tiled
    sky's cutouts are windows of its maps, cut in one pass here)."""
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.workspace import Workspace

    ws = Workspace(workspace)
    if ws.kind != "sehgal":
        workers, scheduler = 0, None
    with tile_executor(workers, scheduler) as ex:
        s = make_cutouts(ws, CutoutSettings(), overwrite=overwrite, progress=progress, cancelled=cancelled,
                         executor=ex)
    print(f"{s['cutouts']} cutouts, {s['positives']} positive, {s['seconds']:.1f} s")
    return {k: v for k, v in s.items() if not isinstance(v, (list, dict))}


def mf(workspace: str, overwrite: bool = False, progress=None, cancelled=None, workers: int = 0,
       scheduler: str | None = None) -> dict:
    """The matched filter over a workspace: its catalogue and the ``mf_snr`` score column (szviewer mf)."""
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.workspace import Workspace

    with tile_executor(workers, scheduler) as ex:
        s = run_mf_on_workspace(Workspace(workspace), progress=progress, cancelled=cancelled, overwrite=overwrite,
                                executor=ex)
    print(f"matched filter: {s.get('detections')} detections, {s.get('positives_detected')} of "
          f"{s.get('positives')} clusters detected, {s.get('seconds')} s")
    return s


def train(workspace: str, preset: str = "quick", device: str = "auto", overwrite: bool = False, progress=None,
          cancelled=None) -> dict:
    """Train the CNN on the workspace's training cutouts (szviewer train); torch loads in this process only. The
    'finetune' preset starts from the shipped paper model (``szviewer train --init-from``)."""
    from szviewer.jobs.cnn import default_model_path
    from szviewer.jobs.training import train_workspace
    from szviewer.workspace import Workspace

    init_from = default_model_path() if preset == "finetune" else None
    s = train_workspace(Workspace(workspace), preset=preset, device=device, overwrite=overwrite, forecast=False,
                        progress=progress, cancelled=cancelled, init_from=init_from)
    print(f"trained ({preset}, {device}): val F1 {s.get('val_f1')}, test F1 {s.get('test_f1')}, {s.get('seconds')} s")
    return s


def train_estimate(workspace: str, preset: str = "quick", device: str = "auto", cancelled=None) -> dict:
    """How long training can take on this machine (szviewer train --estimate): a few real training steps are
    timed and remembered for the train dialog; torch loads in this process only."""
    from szviewer.jobs.cnn import train_estimate as estimate
    from szviewer.workspace import Workspace

    return estimate(Workspace(workspace), preset=preset, device=device, cancelled=cancelled)


def predict(workspace: str, device: str = "auto", overwrite: bool = False, progress=None, cancelled=None) -> dict:
    """Score every cutout with the CNN (szviewer predict): the workspace's model, else the shipped one."""
    from szviewer.jobs.predict import predict_workspace
    from szviewer.workspace import Workspace

    s = predict_workspace(Workspace(workspace), device=device, progress=progress, cancelled=cancelled,
                          overwrite=overwrite)["levels"][0]
    print(f"CNN: {s.get('cutouts')} cutouts scored with {s.get('model')} in {s.get('seconds')} s")
    return s


def dense(workspace: str, overwrite: bool = False, progress=None, cancelled=None, workers: int = 0,
          scheduler: str | None = None) -> dict:
    """The CNN's candidates with positions (szviewer predict --dense): the whole map fully convolutionally at 1',
    or window by window every 2' for a model whose input scaling depends on the whole window (act-dr6's)."""
    from szviewer.jobs.dense import dense_job
    from szviewer.workspace import Workspace

    with tile_executor(workers, scheduler) as ex:
        s = dense_job(Workspace(workspace), method="auto", overwrite=overwrite, progress=progress,
                      cancelled=cancelled, executor=ex)
    print(f"CNN candidates: {s['candidates']} peaks of the {s['grid_arcmin']:g}' map "
          f"({s['method']}, {s['seconds']:.1f} s)")
    return {k: s[k] for k in ("candidates", "grid_arcmin", "method", "seconds") if k in s}


def evaluate(workspace: str, overwrite: bool = True, cancelled=None) -> dict:
    """The paper's Table 1 for a workspace (szviewer evaluate): thresholds on validation, counts on test."""
    from szviewer.jobs.evaluate import evaluate_workspace
    from szviewer.workspace import Workspace

    _, text = evaluate_workspace(Workspace(workspace), overwrite=overwrite)
    print(text)
    return {"table1": text}


def demo(out: str, area_deg2: float | None = None, seed: int | None = None, progress=None, cancelled=None) -> dict:
    """The demo workspace of the README (``szviewer --headless``): :func:`szviewer.jobs.demo.build_demo`."""
    from szviewer.jobs.demo import DemoSettings, build_demo, prefixed

    d = DemoSettings()
    settings = DemoSettings(area_deg2=d.area_deg2 if area_deg2 is None else float(area_deg2),
                            seed=d.seed if seed is None else int(seed))
    s = build_demo(out, settings, progress_for=prefixed(progress), cancelled=cancelled)
    return {"workspace": s["workspace"], "steps": s["steps"]}


#: Jobs the app offers on an open workspace: ``target(workspace, **options, progress=, cancelled=)``. A kind is
#: offered when ``function`` exists in ``module`` (checked without importing it, so torch stays unloaded).
JOB_KINDS: dict[str, dict] = {
    "cutouts": {"label": "build cutouts", "target": "szviewer.gui.jobkinds:cutouts", "module": "szviewer.jobs.cutouts",
                "function": "make_cutouts"},
    "mf": {"label": "run the matched filter", "target": "szviewer.gui.jobkinds:mf", "module": "szviewer.jobs.mf",
           "function": "run_mf_on_workspace"},
    "train": {"label": "train the CNN", "target": "szviewer.gui.jobkinds:train", "module": "szviewer.jobs.training",
              "function": "train_workspace"},
    "predict": {"label": "score with the CNN", "target": "szviewer.gui.jobkinds:predict",
                "module": "szviewer.jobs.predict", "function": "predict_workspace"},
    "dense": {"label": "CNN candidates (map)", "target": "szviewer.gui.jobkinds:dense",
              "module": "szviewer.jobs.dense", "function": "dense_job"},
    "evaluate": {"label": "evaluate (Table 1)", "target": "szviewer.gui.jobkinds:evaluate",
                 "module": "szviewer.jobs.evaluate", "function": "evaluate_workspace"},
}


def available(kind: str) -> bool:
    """Whether a job kind's module and function exist (read from the source, not imported)."""
    entry = JOB_KINDS[kind]
    try:
        spec = importlib.util.find_spec(entry["module"])
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    try:
        return f"def {entry['function']}(" in Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return False


