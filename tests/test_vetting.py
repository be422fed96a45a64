"""Vetting (issue 14.5): a class per cutout on single keys, saved atomically in the workspace, a gallery filter,
and catalogue columns (szviewer.workspace.vetting)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scored_workspaces import scored_copy

from szviewer.workspace.vetting import VET_CLASSES, load, vetting_columns, vetting_table


@pytest.fixture(scope="module")
def vet_ws(small_ws, tmp_path_factory):
    return scored_copy(small_ws["path"], tmp_path_factory.mktemp("vetting") / "ws", seed=2)


@pytest.fixture()
def state(vet_ws):
    from szviewer.gui.state import ViewerState

    (vet_ws / "annotations.json").unlink(missing_ok=True)
    s = ViewerState()
    s.open_workspace(vet_ws)
    yield s
    s.close()


def test_classes_are_saved_filtered_and_exported(state, vet_ws):
    ids = state.data.columns["id"]
    seen = []
    state.events.annotations.connect(seen.append)
    state.set_annotation(2, vet="cluster")
    state.set_annotation(5, vet="not", note="a radio source")
    state.set_annotation(9, vet="unsure", flag=True)
    assert seen == [2, 5, 9]
    doc = json.loads((vet_ws / "annotations.json").read_text())
    assert doc["version"] == 2 and doc["cutouts"][str(int(ids[5]))]["vet"] == "not"
    assert doc["cutouts"][str(int(ids[2]))]["ra"] == pytest.approx(float(state.data.columns["ra"][2]))
    with pytest.raises(ValueError, match="cluster, not, unsure"):
        state.set_annotation(3, vet="maybe")

    state.set_filter(vet="cluster")
    assert list(state.visible_rows()) == [2]
    state.set_filter(vet="vetted")
    assert list(state.visible_rows()) == [2, 5, 9]
    state.set_filter(vet="unvetted")
    assert state.visible_rows().size == state.n - 3 and 5 not in state.visible_rows()
    state.set_annotation(4, vet="unsure")  # the filtered rows follow a new class at once
    assert 4 not in state.visible_rows()
    state.set_filter(vet=None)

    t = vetting_table(vet_ws)
    assert list(t["cutout_id"]) == sorted(int(ids[r]) for r in (2, 4, 5, 9))
    by_id = {int(r["cutout_id"]): r for r in t}
    assert by_id[int(ids[5])]["vet_class"] == "not" and by_id[int(ids[5])]["vet_note"] == "a radio source"
    assert bool(by_id[int(ids[9])]["vet_flag"]) and by_id[int(ids[9])]["vet_class"] == "unsure"
    assert t["ra"].unit == "deg"
    cols = vetting_columns(vet_ws, ids[:10])
    assert list(cols["vet_class"]) == ["", "", "cluster", "", "unsure", "not", "", "", "", "unsure"]

    # the app's export carries the vetting as catalogue columns
    state.set_threshold("CNN", -1.0)  # every cutout is a candidate
    out, _, table = state.export_catalog(vet_ws / "exports" / "all.ecsv", "CNN", split="all", overwrite=True)
    from astropy.table import Table

    back = Table.read(out)
    k = int(np.flatnonzero(np.asarray(back["cutout_id"]) == ids[5])[0])
    assert back["vet_class"][k] == "not" and back["vet_note"][k] == "a radio source"

    # clearing everything drops the entry; another session reads what is left
    state.set_annotation(5, vet=None, note="")
    assert str(int(ids[5])) not in load(vet_ws)
    from szviewer.gui.state import ViewerState

    other = ViewerState()
    other.open_workspace(vet_ws)
    assert other.annotation(2)["vet"] == "cluster" and "vet" not in other.annotation(5)
    other.close()


def test_a_version_1_file_and_a_broken_file_read(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps(
        {"format": "szviewer-annotations", "version": 1, "cutouts": {"7": {"flag": True, "note": "x"},
                                                                      "8": {"flag": False, "vet": "bogus"}}}))
    ann = load(tmp_path)
    assert ann["7"] == {"flag": True, "note": "x"} and "vet" not in ann["8"]
    assert len(vetting_table(tmp_path)) == 2
    (tmp_path / "annotations.json").write_text("{not json")
    assert load(tmp_path) == {} and len(vetting_table(tmp_path)) == 0
    assert VET_CLASSES == ("cluster", "not", "unsure")


def test_single_keys_vet_in_the_gallery_and_the_inspector(qtbot, state, monkeypatch, tmp_path):
    pytest.importorskip("pytestqt")
    from PyQt6 import QtCore

    from szviewer.gui.gallery import Gallery
    from szviewer.gui.inspector import CutoutInspector

    g = Gallery(state)
    ins = CutoutInspector(state)
    qtbot.addWidget(g)
    qtbot.addWidget(ins)
    state.select(int(state.visible_rows()[3]))
    row = state.current
    g.table.setFocus()
    qtbot.keyClick(g.table, "c")
    assert state.annotation(row)["vet"] == "cluster"
    assert ins.vet_buttons["cluster"].isChecked() and not ins.vet_buttons["not"].isChecked()
    qtbot.keyClick(g.table, "2")
    assert state.annotation(row)["vet"] == "not"
    keys = [k for k, _ in g.model.cols]
    pos = g.model.position_of(row)
    assert g.model.data(g.model.index(pos, keys.index("vet"))) == "not a cluster"
    qtbot.keyClick(ins, "u")
    assert state.annotation(row)["vet"] == "unsure"
    qtbot.keyClick(ins, "u")  # again: cleared
    assert "vet" not in state.annotation(row)
    ins.vet_buttons["cluster"].click()
    assert state.annotation(row)["vet"] == "cluster"
    g.vet.setCurrentIndex(g.vet.findData("cluster"))
    assert list(g.model.rows) == [row] and g.count.text().startswith("1 of")
    qtbot.keyClick(g.table, QtCore.Qt.Key.Key_0)
    assert "vet" not in state.annotation(row)
    assert g.model.rowCount() == 0


def test_objects_take_the_vetting_of_the_cell_they_fall_in(tmp_path):
    from astropy.table import Table

    from szviewer.workspace.vetting import add_vetting_columns, save

    save(tmp_path, {"11": {"vet": "cluster", "flag": False, "note": "", "ra": 10.0, "dec": -5.0},
                    "12": {"vet": "not", "flag": True, "note": "dust", "ra": 10.1, "dec": -5.0}})
    t = Table({"ra": [10.0 + 2.9 / 60 / np.cos(np.radians(5.0)), 10.1, 10.05, 12.0], "dec": [-5.0, -5.04, -5.0, 0.0]})
    add_vetting_columns(t, tmp_path)
    # 2.9' east of cutout 11 (inside its 6' cell); 2.4' south of 12; 3' from both centres; far from both
    assert list(t["vet_class"]) == ["cluster", "not", "not", ""]
    assert list(t["vet_flag"]) == [False, True, True, False] and t["vet_note"][1] == "dust"
    c = Table({"cutout_id": [12, 99]})
    add_vetting_columns(c, tmp_path)
    assert list(c["vet_class"]) == ["not", ""]
