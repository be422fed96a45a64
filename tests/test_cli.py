import subprocess
import sys

import pytest

from szviewer.cli import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("simulate", "import", "info", "cutouts", "mf", "train", "predict", "evaluate", "export", "gui"):
        assert cmd in out


def test_version(capsys):
    from szviewer import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_missing_workspace_is_a_clear_error(capsys):
    for cmd in ("train", "predict", "mf", "evaluate", "cutouts", "info"):
        assert main([cmd, "/no/such/ws"]) == 2
        assert "/no/such/ws: no such workspace folder" in capsys.readouterr().err


def test_simulate_info_cutouts(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["simulate", "--out", str(ws), "--area", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "Sky card" in out and "positive halos" in out
    assert main(["simulate", "--out", str(ws), "--area", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "cutouts    make it with: szviewer cutouts WS" in out
    assert main(["cutouts", str(ws), "--levels", "cmb_tsz,ksz"]) == 0
    out = capsys.readouterr().out
    assert "components: cmb, tsz, ksz, ir, radio, dust; pixels: windows" in out and "train" in out
    assert main(["cutouts", str(ws)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["cutouts", str(ws), "--levels", "bogus", "--overwrite"]) == 2
    assert "not available" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "no such workspace" in capsys.readouterr().err


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "szviewer", "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("szviewer ")


def test_launcher_without_a_display_runs_the_cli(capsys, monkeypatch):
    from szviewer import launcher

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert launcher._can_show_windows() is False
    assert launcher.main(["train", "x"]) == 2
    with pytest.raises(SystemExit):
        launcher.main(["--version"])
    assert "szviewer" in capsys.readouterr().out


def test_the_main_job_runs_every_finder_prints_table1_and_keeps_what_is_done(tmp_path, capsys):
    """README command 1 without a display (``szviewer --headless``, here on a 16 deg^2 demo): the sky, its cutouts,
    the MF, the CNN on the cutouts and on the whole map, then Table 1 and the object-level table with a CNN row;
    a second run makes nothing again."""
    from szviewer.workspace import Workspace

    ws = tmp_path / "demo"
    assert main(["--headless", "--workspace", str(ws), "--area", "16", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    w = Workspace(ws)
    for product in ("cutouts", "mf", "cnn", "cnn_dense", "evaluation"):
        assert w.has(product) and not w.stale(product), product
    assert "Table 1 (thresholds chosen on validation, counts on test):" in out
    objects = out[out.index("Objects (one-to-one"):]
    rows = {ln.split()[0]: ln for ln in objects.splitlines()[3:] if ln.strip() and not ln.startswith("M500")}
    assert {"MF", "CNN", "AND", "PROD", "OR", "LEARNED"} <= set(rows), objects
    assert "no CNN candidates" not in objects and "cnn_prob >=" in rows["CNN"]
    assert not any("nan" in row for row in rows.values()), objects  # every method has its thresholds from val
    tp, fp, fn = (int(v) for v in rows["CNN"].split()[-7:-4])
    assert tp > 0 and tp + fn == 4  # the 4 qualifying halos of the test region, the CNN's own candidates found
    assert "CNN candidates:" in out and "matched filter:" in out
    made = {p: w.products[p]["generation"] for p in ("cutouts", "mf", "cnn", "cnn_dense")}
    assert main(["--headless", "--workspace", str(ws)]) == 0
    again = capsys.readouterr().out
    assert "building the demo" not in again and "matched filter:" not in again and "CNN candidates:" not in again
    assert {p: Workspace(ws).products[p]["generation"] for p in made} == made
    assert "Table 1" in again
