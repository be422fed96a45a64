"""Shared fixtures: one small synthetic workspace (4 deg^2) built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

#: A tiny DeepSZ network for tests (szviewer.cnn.model.NetConfig keyword arguments); the paper's is width 64,
#: blocks (3, 4, 6), head 256.
TINY_NET = {"width": 8, "blocks": (1, 1, 1), "head": 32, "scaling": "fixed"}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks run fastest (and are not hurt by busy neighbours) on one intra-op thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def small_ws(tmp_path_factory):
    """A 4 deg^2 synthetic workspace with its cutouts (about 1 s to build)."""
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    path = tmp_path_factory.mktemp("ws") / "small"
    card = simulate_workspace(path, SimulationSettings(area_deg2=4.0, seed=7))
    ws = Workspace(path)
    summary = make_cutouts(ws, CutoutSettings())
    return {"path": path, "card": card, "cutouts": summary}


@pytest.fixture
def scratch_ws(small_ws, tmp_path):
    """A private copy of the small workspace for tests that write to it (``small_ws`` is shared: read only)."""
    import shutil

    path = tmp_path / "scratch"
    shutil.copytree(small_ws["path"], path)
    return path
