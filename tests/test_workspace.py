import json

import pytest

from szviewer.errors import Cancelled, InputError, OutputExistsError
from szviewer.workspace import Workspace


def test_manifest_records_products(small_ws):
    ws = Workspace(small_ws["path"])
    m = json.loads((small_ws["path"] / "workspace.json").read_text())
    assert m["schema_version"] == 2 and m["kind"] == "synthetic" and m["bands"] == [90, 148, 219]
    assert m["pixel_arcmin"] == 0.25
    for p in ("sky", "halos", "sources", "skycard", "cutouts"):
        assert ws.has(p), p
    assert m["products"]["sky"]["settings"]["seed"] == 7
    assert [name for name, _ in ws.missing()] == ["mf", "cnn", "evaluation"]
    # the folder has the usual permissions, not mkdtemp's private 0700
    assert small_ws["path"].stat().st_mode & 0o055 == 0o055 & ~_umask()
    # no temporary files left behind
    assert not [p for p in small_ws["path"].rglob("*") if ".part" in p.name]


def _umask() -> int:
    import os

    u = os.umask(0)
    os.umask(u)
    return u


def test_create_refuses_existing_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "ws"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        with Workspace.create(target, "synthetic", (90, 148, 219), 0.25, {}):
            pass
    with pytest.raises(OutputExistsError, match="not an szviewer workspace"):
        with Workspace.create(target, "synthetic", (90, 148, 219), 0.25, {}, overwrite=True):
            pass
    assert (target / "keep.txt").read_text() == "precious"
    new = tmp_path / "new"
    with pytest.raises(Cancelled):
        with Workspace.create(new, "synthetic", (90, 148, 219), 0.25, {}) as ws:
            ws.record("x", [])
            raise Cancelled("stop")
    assert not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]


def test_cancelled_simulation_leaves_nothing(tmp_path):
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    with pytest.raises(Cancelled):
        simulate_workspace(tmp_path / "ws", SimulationSettings(area_deg2=1.0), cancelled=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_when_complete(tmp_path, small_ws):
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    target = tmp_path / "ws"
    simulate_workspace(target, SimulationSettings(area_deg2=1.0, seed=1))
    before = (target / "workspace.json").read_text()
    with pytest.raises(Cancelled):
        simulate_workspace(target, SimulationSettings(area_deg2=1.0, seed=2), overwrite=True,
                           cancelled=lambda: True)
    assert (target / "workspace.json").read_text() == before
    simulate_workspace(target, SimulationSettings(area_deg2=1.0, seed=2), overwrite=True)
    assert Workspace(target).products["sky"]["settings"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]


def test_bad_manifests(tmp_path):
    with pytest.raises(InputError, match="no such workspace"):
        Workspace(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="not an szviewer workspace"):
        Workspace(tmp_path / "a")
    (tmp_path / "a" / "workspace.json").write_text("{broken")
    with pytest.raises(InputError, match="corrupt manifest"):
        Workspace(tmp_path / "a")
    (tmp_path / "a" / "workspace.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InputError, match="schema version 99"):
        Workspace(tmp_path / "a")
