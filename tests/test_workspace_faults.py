"""A workspace that never lies, tried as a careless user would: stale inputs, concurrent writers, kills at any
instant, signals, a full disk, a read-only folder, malformed manifests (issue 11's campaign, kept in the suite)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from szviewer.cli import main
from szviewer.errors import InputError
from szviewer.workspace import Workspace
from szviewer.workspace.locks import WorkspaceBusy

ROOT = Path(__file__).resolve().parents[1]


def _ids(ws: Workspace) -> np.ndarray:
    with ws.cutout_store() as st:
        return np.asarray(st.table["id"])


def _scores(ws: Workspace, product: str, column: str, value: float = 1.0):
    ids = _ids(ws)
    ws.write_scores(product, ids, {column: np.full(ids.size, value)})


def _run(code: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------- stale results

def test_rebuilt_cutouts_make_every_finder_stale(scratch_ws, capsys):
    """`cutouts --overwrite` after the finders ran: info says stale and names the command; evaluate and export
    refuse the old scores unless told --allow-stale."""
    ws = Workspace(scratch_ws)
    rng = np.random.default_rng(0)
    ids = _ids(ws)
    ws.write_scores("mf", ids, {"mf_snr": rng.normal(5, 2, ids.size)})
    ws.write_scores("cnn", ids, {"cnn_prob": rng.random(ids.size)})
    assert main(["evaluate", str(scratch_ws)]) == 0
    capsys.readouterr()
    assert not ws.stale("mf") and not Workspace(scratch_ws).stale("evaluation")
    assert main(["cutouts", str(scratch_ws), "--overwrite"]) == 0
    capsys.readouterr()
    ws = Workspace(scratch_ws)
    for p in ("mf", "cnn", "evaluation"):
        assert ws.stale(p), p
    assert main(["info", str(scratch_ws)]) == 0
    out = capsys.readouterr().out
    assert "STALE" in out and f"szviewer mf {scratch_ws} --overwrite" in out
    assert f"szviewer predict {scratch_ws} --overwrite" in out and "complete" not in out
    assert main(["evaluate", str(scratch_ws)]) == 2
    err = capsys.readouterr().err
    assert "stale" in err and "--allow-stale" in err and "Traceback" not in err
    assert main(["export", str(scratch_ws), "--method", "and", "--out", str(scratch_ws / "c.ecsv")]) == 2
    assert "stale" in capsys.readouterr().err and not (scratch_ws / "c.ecsv").exists()
    assert main(["evaluate", str(scratch_ws), "--allow-stale"]) == 0
    assert "WARNING: mf is stale" in capsys.readouterr().out
    # refreshing the finders makes the workspace fresh again
    ws.write_scores("mf", ids, {"mf_snr": rng.normal(5, 2, ids.size)})
    ws.write_scores("cnn", ids, {"cnn_prob": rng.random(ids.size)})
    assert main(["evaluate", str(scratch_ws)]) == 0
    ws = Workspace(scratch_ws)
    assert not any(ws.stale(p) for p in ws.products)


def test_products_are_replaced_only_with_overwrite(scratch_ws, tmp_path, capsys):
    ws = Workspace(scratch_ws)
    _scores(ws, "mf", "mf_snr")
    with pytest.raises(Exception, match="--overwrite"):
        with ws.writing("mf"):
            pass
    gen = Workspace(scratch_ws).products["mf"]["generation"]
    assert main(["mf", str(scratch_ws)]) == 2  # refused before any filtering
    assert "--overwrite" in capsys.readouterr().err
    assert Workspace(scratch_ws).products["mf"]["generation"] == gen
    # user files: every output is checked before anything is written
    _scores(ws, "cnn", "cnn_prob", 0.5)
    (tmp_path / "e.json").write_text("mine")
    assert main(["evaluate", str(scratch_ws), "--json", str(tmp_path / "e.json"), "--report", str(tmp_path / "r")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "e.json").read_text() == "mine" and not (tmp_path / "r").exists()
    assert main(["export", str(scratch_ws), "--method", "cnn", "--out", str(tmp_path / "nofolder" / "c.ecsv")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- concurrent jobs

WRITER = """
import sys, time
import numpy as np
from szviewer.workspace import Workspace
ws = Workspace(sys.argv[1])
with ws.cutout_store() as st:
    ids = np.asarray(st.table["id"])
with ws.writing(sys.argv[2], overwrite=True) as w:
    print("writing", flush=True)
    time.sleep(float(sys.argv[3]))
    w.write_scores(ids, {sys.argv[2] + "_score": np.full(ids.size, 1.0)})
print("done", flush=True)
"""


def test_two_jobs_writing_different_products_keep_both(scratch_ws):
    """predict and mf at once (issue: 'info then says mf is missing'): each merges its entry under the lock."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(scratch_ws), name, "1.0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("mf", "cnn")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ws = Workspace(scratch_ws)
    assert ws.has("mf") and ws.has("cnn")
    assert {"mf_score", "cnn_score"} <= set(ws.scores(_ids(ws)))


def test_a_second_writer_of_the_same_product_is_told_who_holds_it(scratch_ws):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", WRITER, str(scratch_ws), "mf", "5"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "writing"
        ws = Workspace(scratch_ws)
        with pytest.raises(WorkspaceBusy, match=rf"mf is being written by .*pid {holder.pid}"):
            with ws.writing("mf", overwrite=True):
                pass
        # readers never block: the workspace opens and its other products read meanwhile
        assert Workspace(scratch_ws).has("cutouts")
    finally:
        holder.wait(timeout=60)
    assert Workspace(scratch_ws).has("mf")


# ---------------------------------------------------------------------------------------- kill at any instant

KILLER = """
import os, signal, sys
import numpy as np
import szviewer.atomic, szviewer.workspace as W
from szviewer.workspace import Workspace
at, calls = int(sys.argv[2]), [0]
def boom(real):
    def f(*a, **k):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    return f
os.replace = boom(os.replace)
W.write_json = boom(W.write_json)
ws = Workspace(sys.argv[1])
with ws.cutout_store() as st:
    ids = np.asarray(st.table["id"])
with ws.writing("mf", overwrite=True) as w:
    w.path("mf_catalog.fits").write_text("new catalogue")
    w.write_scores(ids, {"mf_snr": np.full(ids.size, 2.0)})
print("finished")
"""


def test_a_kill_at_any_point_leaves_the_old_product_or_the_new(scratch_ws):
    ws = Workspace(scratch_ws)
    ids = _ids(ws)
    with ws.writing("mf") as w:
        w.path("mf_catalog.fits").write_text("old catalogue")
        w.write_scores(ids, {"mf_snr": np.full(ids.size, 1.0)})
    seen = set()
    for at in range(1, 8):
        r = _run(KILLER, scratch_ws, at)
        ws = Workspace(scratch_ws)  # the manifest is always valid
        cat = ws.file("mf", "mf_catalog.fits").read_text()
        snr = ws.scores(ids)["mf_snr"]
        state = {("old catalogue", 1.0): "old", ("new catalogue", 2.0): "new"}.get((cat, float(snr[0])))
        assert state is not None, (at, cat, snr[0], r.stderr[-500:])  # never a mix
        assert all(ws.path(f).exists() for f in ws.products["mf"]["files"])
        seen.add(state)
        if "finished" in r.stdout:
            break
    assert seen == {"old", "new"}
    # the next writer removes what the killed runs left, and says so
    with ws.writing("cnn") as w:
        w.write_scores(ids, {"cnn_prob": np.zeros(ids.size)})
    assert not list(scratch_ws.rglob("*.partial-*")) and not list(scratch_ws.rglob(".*.part*"))
    gens = [p.name for p in (scratch_ws / "mf").iterdir()]
    assert gens == [Path(ws.products["mf"]["files"][0]).parts[1]]


# ---------------------------------------------------------------------------------------- signals

@pytest.mark.parametrize("sig, status, when", [(signal.SIGINT, 130, "tile_*.h5"),
                                               (signal.SIGTERM, 143, ".tile_*.part*")])
def test_signals_cancel_within_a_second_and_keep_only_whole_tiles(tmp_path, sig, status, when):
    """A signal after a tile is finished keeps that tile whole for a resume (and says so); one while the first tile
    is being written leaves nothing at all."""
    out = tmp_path / "ws"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "szviewer", "simulate", "--out", str(out), "--area", "400"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not list(tmp_path.glob(f".ws.tiles-*/tiles/{when}")):
        time.sleep(0.05)
    if when == "tile_*.h5":
        time.sleep(0.5)  # into the next tile
    t0 = time.time()
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == status, err
    assert time.time() - t0 < 1.5  # "within a second", with room for a busy machine
    assert "cancelled" in err and "Traceback" not in err
    left = list(tmp_path.iterdir())  # never a workspace or a partial folder
    if when == "tile_*.h5":  # only the finished tiles, whole, and said
        assert len(left) == 1 and left[0].name.startswith(".ws.tiles-"), left
        files = [f for f in left[0].rglob("*") if f.is_file()]
        assert files and all(f.name.startswith("tile_") and ".part" not in f.name for f in files), files
        assert "finished tiles kept in" in err and "resumes" in err
    else:
        assert left == [] and "kept" not in err


# ---------------------------------------------------------------------------------------- full disk, read-only

@contextlib.contextmanager
def _mounted(kind: str, path: Path):
    """A real small tmpfs or a read-only bind mount where the machine allows it (root), else None."""
    path.mkdir(parents=True, exist_ok=True)
    cmd = (["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)] if kind == "tmpfs" else None)
    ok = False
    if kind == "tmpfs" and shutil.which("mount"):
        ok = subprocess.run(cmd, capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", str(path)], capture_output=True)


def test_a_full_disk_is_one_line_and_the_old_state_stays(scratch_ws, tmp_path, monkeypatch, capsys):
    """Too little space for a sky: refused before any work. Running out mid-write: one line, exit 2, the previous
    product intact (with a real 3 MB tmpfs where the machine allows a mount, else a writer that fails ENOSPC)."""
    with _mounted("tmpfs", tmp_path / "small") as ok:
        if ok:
            assert main(["simulate", "--out", str(tmp_path / "small" / "ws"), "--area", "4"]) == 2
            err = capsys.readouterr().err
            assert "GB are free" in err and "Traceback" not in err
            assert list((tmp_path / "small").iterdir()) == []
    ws = Workspace(scratch_ws)
    ids = _ids(ws)
    ws.write_scores("mf", ids, {"mf_snr": np.ones(ids.size)})
    import szviewer.cutouts.scores as scores_mod

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(scratch_ws / "mf" / "x"))

    monkeypatch.setattr(scores_mod, "write_score_columns", full)
    with pytest.raises(InputError, match="no space left"):
        ws.write_scores("mf", ids, {"mf_snr": np.zeros(ids.size)})
    monkeypatch.undo()
    ws = Workspace(scratch_ws)
    assert ws.scores(ids)["mf_snr"][0] == 1.0 and not list((scratch_ws / "mf").glob(".*"))


def test_a_read_only_workspace_is_refused_before_any_work(scratch_ws, monkeypatch, capsys):
    import tempfile

    real = tempfile.mkstemp

    def read_only(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve().is_relative_to(scratch_ws.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, dir=None, **k: read_only(*a, dir=dir, **k))
    t0 = time.time()
    assert main(["mf", str(scratch_ws), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "Traceback" not in err and time.time() - t0 < 5
    assert main(["info", str(scratch_ws)]) == 0  # reading still works


# ---------------------------------------------------------------------------------------- malformed manifests

@pytest.mark.parametrize("change, field", [
    (lambda m: [m], "object"),
    (lambda m: {k: v for k, v in m.items() if k != "products"}, "products"),
    (lambda m: {k: v for k, v in m.items() if k != "kind"}, "kind"),
    (lambda m: {k: v for k, v in m.items() if k != "bands"}, "bands"),
    (lambda m: {k: v for k, v in m.items() if k != "geometry"}, "geometry"),
    (lambda m: {**m, "bands": [90, "148", 219]}, "bands"),
    (lambda m: {**m, "pixel_arcmin": "nan"}, "pixel_arcmin"),
    (lambda m: {**m, "products": {**m["products"], "cutouts": {"files": ["/etc/passwd"]}}}, "products.cutouts.files"),
    (lambda m: {**m, "geometry": {**m["geometry"], "footprint": [0, 1]}}, "geometry.footprint"),
    (lambda m: {**m, "schema_version": 99}, "newer"),
])
def test_a_malformed_manifest_is_one_line_in_every_command(scratch_ws, capsys, change, field):
    path = scratch_ws / "workspace.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    for cmd in (["info"], ["cutouts"], ["mf"], ["evaluate"], ["export", "--method", "mf", "--out", "x.ecsv"]):
        assert main([cmd[0], str(scratch_ws), *cmd[1:]]) == 2, cmd
        err = capsys.readouterr().err
        assert "workspace.json" in err and field in err and "Traceback" not in err, (cmd, err)
        assert len(err.strip().splitlines()) == 1


def test_info_into_a_closed_pipe_is_quiet(small_ws):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(f"{sys.executable} -m szviewer info {small_ws['path']} | head -1", shell=True,
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("workspace") and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------- inputs checked up front

def _car_maps(tmp_path, nan_band=None):
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    w.wcs.crval = [10.0, 0.0]
    w.wcs.crpix = [100.5, 100.5]
    w.wcs.cdelt = [-0.5 / 60, 0.5 / 60]
    paths = {}
    for band in (90, 148, 219):
        data = np.random.default_rng(band).normal(0, 10, (200, 200)).astype(np.float32)
        if band == nan_band:
            data[:] = np.nan
        hdr = w.to_header()
        hdr["BUNIT"] = "uK_CMB"
        paths[band] = tmp_path / f"m{band}.fits"
        fits.PrimaryHDU(data, hdr).writeto(paths[band])
    return paths


def test_bad_values_are_refused_before_any_work(tmp_path, capsys):
    paths = _car_maps(tmp_path, nan_band=148)
    maps = [a for b, p in paths.items() for a in ("--map", f"{b}={p}")]
    cases = [
        (["mf", *maps, "--map", f"90={paths[90]}", "--out", str(tmp_path / "c.ecsv")], "given twice"),
        (["mf", *maps, "--out", str(tmp_path / "c.ecsv")], "every pixel of band 148 is NaN"),
        (["mf", *maps, "--beam-fwhm", "90=nan,148=1.2,219=1.1", "--out", str(tmp_path / "c.ecsv")], "finite"),
        (["mf", *maps, "--beam-fwhm", "90=-1,148=1.2,219=1.1", "--out", str(tmp_path / "c.ecsv")], ">= 0"),
        (["simulate", "--out", str(tmp_path / "ws"), "--area", "nan"], "finite"),
        (["simulate", "--out", str(tmp_path / "ws"), "--beam-fwhm", "90=1.6,90=1.2"], "given twice"),
    ]
    for cmd, what in cases:
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        assert what in err and "Traceback" not in err, (cmd, err)
    assert not (tmp_path / "c.ecsv").exists() and not (tmp_path / "ws").exists()


def test_a_short_score_column_is_one_line(scratch_ws, capsys):
    import h5py

    ws = Workspace(scratch_ws)
    _scores(ws, "mf", "mf_snr")
    path = Workspace(scratch_ws).file("mf", "scores.h5")
    with h5py.File(path, "r+") as f:
        data = f["mf_snr"][:-5]
        del f["mf_snr"]
        f["mf_snr"] = data
    assert main(["evaluate", str(scratch_ws)]) == 2
    err = capsys.readouterr().err
    assert "mf_snr" in err and "values for" in err and "Traceback" not in err


def test_leftovers_of_killed_runs_are_removed_and_said(scratch_ws, tmp_path, capsys):
    """Leftovers of runs that are gone (their pid in the name) go at the next write or with info --clean; a live
    writer's temporary files are left alone."""
    dead = 2 ** 22 + 12345  # above the kernel's pid_max default: no such process
    (scratch_ws / f".mf_catalog.fits.{dead}.abc.part.fits").write_text("x")
    (scratch_ws / "mf").mkdir(exist_ok=True)
    (scratch_ws / "mf" / f".g.partial-{dead}-xyz").mkdir()
    (tmp_path / f".scratch.partial-{dead}-old").mkdir()
    live = scratch_ws / f".other.{os.getpid()}.abc.part"
    live.write_text("in use")
    assert main(["info", str(scratch_ws), "--clean"]) == 0
    assert "removed 3 leftover(s)" in capsys.readouterr().out
    assert live.exists() and not list(tmp_path.glob(".scratch.partial-*"))
    (scratch_ws / f".cutouts.h5.{dead}.q.part.h5").write_text("x")
    ws = Workspace(scratch_ws)
    _scores(ws, "mf", "mf_snr")
    assert ws.notices == [f"removed 1 leftover(s) of killed runs in {scratch_ws}"]
    assert not (scratch_ws / f".cutouts.h5.{dead}.q.part.h5").exists() and live.exists()
    # and the CLI says it when the command ends
    (scratch_ws / f".x.{dead}.q.part").write_text("x")
    assert main(["mf", str(scratch_ws), "--overwrite", "--snr-threshold", "50"]) == 0
    assert "note: removed 1 leftover(s)" in capsys.readouterr().err
