"""Tile tasks on one executor (issue 16): in process and on a real Dask LocalCluster of 2 workers, the same files
byte for byte; a worker killed mid-task costs only its task; a cancel keeps the finished tiles and a re-run skips
them; Ctrl-C on a cluster run exits 130, leaves nothing half-written and no worker behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from szviewer.cutouts.build import CutoutSettings
from szviewer.errors import Cancelled, InputError
from szviewer.jobs.cutouts import make_cutouts
from szviewer.jobs.mf import run_mf_on_workspace
from szviewer.jobs.simulate import simulate_workspace
from szviewer.parallel import DaskExecutor, Executor, ExecutorSettings, InProcessExecutor
from szviewer.parallel.resume import PREFIX
from szviewer.sky.synthetic import SimulationSettings
from szviewer.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
#: 1 deg^2 in 0.5 deg tiles: 4 sky tiles, each a fraction of a second to simulate and to filter
SKY = SimulationSettings(area_deg2=1.0, seed=3, tile_deg=0.5)
DATA = ("halos.fits", "sources.fits", "tiles/*.h5", "maps/*.npy", "cutouts/g*/cutouts.h5", "mf/g*/mf_catalog.fits",
        "mf/g*/scores.h5")


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for pattern in DATA:
        for p in sorted(root.glob(pattern)):
            rel = p.relative_to(root).parts
            key = "/".join(rel[:1] + rel[2:]) if rel[0] in ("cutouts", "mf") else "/".join(rel)  # no generation
            out[key] = p.read_bytes()
    return out


def _same_hdf5(pa: Path, pb: Path) -> None:
    """Two HDF5 files hold the same groups, datasets (bytes, dtype, chunks, filters) and attributes."""
    import h5py

    with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert names_a == names_b
        for obj_a, obj_b in [(fa, fb)] + [(fa[n], fb[n]) for n in names_a]:
            assert sorted(obj_a.attrs) == sorted(obj_b.attrs)
            for key in obj_a.attrs:
                va, vb = np.asarray(obj_a.attrs[key]), np.asarray(obj_b.attrs[key])
                assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), (pa, key)
            if isinstance(obj_a, h5py.Dataset):
                assert (obj_a.dtype, obj_a.chunks, obj_a.compression, obj_a.shuffle) == \
                    (obj_b.dtype, obj_b.chunks, obj_b.compression, obj_b.shuffle)
                assert obj_a[...].tobytes() == obj_b[...].tobytes(), (pa, obj_a.name)


def _catalog(root: Path) -> bytes:
    return Workspace(root).file("mf", "mf_catalog.fits").read_bytes()


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The sky, its cutouts and the MF, all in process: the reference every other run is compared with."""
    root = tmp_path_factory.mktemp("par") / "ref"
    simulate_workspace(root, SKY)
    make_cutouts(Workspace(root), CutoutSettings())
    run_mf_on_workspace(Workspace(root))
    return root


@pytest.fixture(scope="module")
def cluster():
    ex = DaskExecutor(ExecutorSettings(workers=2))
    yield ex
    ex.close()


def _square(x, add):
    return x * x + add


def _fail_on(x, bad):
    if x == bad:
        raise InputError(f"item{x}", "bad tile")
    return x


def test_in_process_executor_order_progress_and_cancel():
    seen = []
    ex = InProcessExecutor()
    assert ex.map_tiles(_square, [3, 1, 2], common=(1,), progress=lambda d, t, m: seen.append((d, t)),
                        done=2, total=5) == [10, 2, 5]
    assert seen == [(3, 5), (4, 5), (5, 5)]
    calls = []
    with pytest.raises(Cancelled):
        ex.map_tiles(lambda x: calls.append(x), range(10), cancelled=lambda: len(calls) >= 3)
    assert calls == [0, 1, 2]
    with pytest.raises(Exception, match="not both"):
        ExecutorSettings(workers=2, scheduler="tcp://127.0.0.1:1")


def test_cluster_order_errors_and_address(cluster):
    line = cluster.describe()
    assert "LocalCluster: 2 worker" in line and "scheduler tcp://" in line and "dashboard" in line
    assert cluster.nworkers == 2
    items = list(range(20))[::-1]
    assert cluster.map_tiles(_square, items, common=(7,)) == [x * x + 7 for x in items]
    with pytest.raises(InputError, match="item3: bad tile"):  # a task's error comes back as itself
        cluster.map_tiles(_fail_on, range(6), common=(3,))
    assert cluster.map_tiles(_square, [2], common=(0,)) == [4]  # the cluster survives a task's error
    # the workers run one thread each for numpy and for our FFTs
    env = cluster.client.run(lambda: (os.environ.get("OMP_NUM_THREADS"), os.environ.get("SZVIEWER_TASK_THREADS")))
    assert set(env.values()) == {("1", "1")}


def test_cluster_run_is_byte_for_byte_the_in_process_run(ref, cluster, tmp_path):
    """simulate and mf on 2 workers give the very files of the in-process run."""
    root = tmp_path / "dask"
    simulate_workspace(root, SKY, executor=cluster)
    make_cutouts(Workspace(root), CutoutSettings())
    s = run_mf_on_workspace(Workspace(root), executor=cluster)
    a, b = _files(ref), _files(root)
    assert len(a) == 2 + 4 + 4 + 3 and sorted(a) == sorted(b)
    differ = [k for k in a if a[k] != b[k]]
    # every file byte for byte, but a tile's HDF5 container: its datasets, dtypes, chunks, filters and attributes
    # are the same bytes, yet now and then HDF5 places its metadata differently in a worker (a few hundred bytes)
    assert [k for k in differ if not k.startswith("tiles/")] == []
    for k in differ:
        _same_hdf5(ref / k, root / k)
    assert s["detections"] > 0 and not list((root / "mf").glob(PREFIX + "*"))  # checkpoints gone after the commit
    assert not list(tmp_path.glob(".dask*"))


class _KillOnce:
    """Wraps a tile task: the first time it runs ``victim`` its worker process dies 0.1 s into the task."""

    def __init__(self, fn, victim, log: str):
        self.fn, self.victim, self.log = fn, victim, log

    def __call__(self, item, *common):
        marker = Path(self.log + ".killed")
        with open(self.log, "a") as fh:
            fh.write(f"{item} {os.getpid()}\n")
        if item == self.victim and not marker.exists():
            marker.write_text("x")
            threading.Timer(0.1, os._exit, (1,)).start()
            self.fn(item, *common)
            time.sleep(60)  # a tile faster than 0.1 s (a fast CPU) must not return its result before the kill
        return self.fn(item, *common)


class _Killing(Executor):
    def __init__(self, inner, victim, log):
        self.inner, self.victim, self.log = inner, victim, log

    def map_tiles(self, fn, items, **kw):
        return self.inner.map_tiles(_KillOnce(fn, self.victim, self.log), items, **kw)


def test_a_worker_killed_mid_task_costs_only_its_task(ref, cluster, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the wrapper is test code: send it by value
    root = tmp_path / "ws"
    shutil.copytree(ref, root)
    log = tmp_path / "starts.txt"
    pids = set(cluster.client.run(os.getpid).values())
    run_mf_on_workspace(Workspace(root), overwrite=True, executor=_Killing(cluster, 2, str(log)))
    assert _catalog(root) == _catalog(ref)
    starts = [line.split() for line in log.read_text().splitlines()]
    counts = {k: sum(1 for s in starts if int(s[0]) == k) for k in range(4)}
    # the killed task ran again; so did at most the one whose result was still in the dead worker's memory (it
    # found its checkpoint and returned it), nothing else
    assert counts[2] == 2 and all(1 <= c <= 2 for c in counts.values()) and sum(counts.values()) <= 6
    assert Path(str(log) + ".killed").exists()
    deadline = time.time() + 30
    while len(cluster.client.scheduler_info()["workers"]) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert set(cluster.client.run(os.getpid).values()) != pids  # the nanny started a new worker
    assert not list((root / "mf").glob(PREFIX + "*")) and not list(root.rglob("*.part*"))


def test_a_cancelled_mf_keeps_its_finished_tiles_and_a_rerun_skips_them(ref, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(ref, root)
    before = Workspace(root).products["mf"]["generation"]
    calls = []

    def progress(done, total, message=""):
        calls.append(done)

    with pytest.raises(Cancelled):
        run_mf_on_workspace(Workspace(root), overwrite=True, progress=progress,
                            cancelled=lambda: len(calls) >= 4)  # the first report, then 3 tiles
    ws = Workspace(root)
    assert ws.products["mf"]["generation"] == before  # the product is untouched
    (folder,) = (root / "mf").glob(PREFIX + "*")
    assert sorted(p.name for p in folder.iterdir()) == ["tile_0000.h5", "tile_0001.h5", "tile_0002.h5"]
    assert not list((root / "mf").glob(".g.partial*"))
    calls.clear()
    s = run_mf_on_workspace(Workspace(root), overwrite=True, progress=progress)
    assert calls[0] == 3 and calls[-1] == 4 and s["tiles_resumed"] == 3
    assert _catalog(root) == _catalog(ref)
    assert not list((root / "mf").glob(PREFIX + "*"))


def test_a_cancelled_simulate_is_resumed(ref, tmp_path):
    out = tmp_path / "sky"
    calls = []
    with pytest.raises(Cancelled):
        simulate_workspace(out, SKY, progress=lambda d, t, m="": calls.append(d), cancelled=lambda: len(calls) >= 3)
    assert not out.exists()
    (folder,) = tmp_path.glob(f".sky{PREFIX}*")
    assert len(list((folder / "tiles").glob("tile_*.h5"))) == 2
    card = simulate_workspace(out, SKY)
    ws = Workspace(out)
    assert ws.products["sky"]["summary"]["tiles_resumed"] == 2
    a, b = _files(ref), _files(out)
    assert all(a[k] == b[k] for k in b) and len(b) == 2 + 4 + 4
    assert card["instrument"] == "spt3g-paper" and not folder.exists()
    ref_card = Workspace(ref).path("skycard.json").read_text()
    assert _no_time(out.joinpath("skycard.json").read_text()) == _no_time(ref_card)


def _no_time(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if '"seconds' not in line)


@pytest.fixture(scope="module")
def ref16(tmp_path_factory):
    """Like ``ref`` with 16 tiles, so that a Ctrl-C after the first finished tile leaves some unmade on any CPU
    (4 tiles of 0.25 deg^2 could all finish in the moment it takes the signal to land)."""
    root = tmp_path_factory.mktemp("par16") / "ref"
    simulate_workspace(root, SimulationSettings(area_deg2=4.0, seed=3, tile_deg=0.5))
    make_cutouts(Workspace(root), CutoutSettings())
    run_mf_on_workspace(Workspace(root))
    return root


def test_ctrl_c_stops_a_cluster_run_and_a_rerun_resumes(ref16, tmp_path):
    psutil = pytest.importorskip("psutil")  # installed with distributed
    ref = ref16
    root = tmp_path / "ws"
    shutil.copytree(ref, root)
    before = _catalog(root)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "szviewer", "mf", str(root), "--overwrite", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and proc.poll() is None:
        if list((root / "mf").glob(PREFIX + "*/tile_*.h5")):
            workers = psutil.Process(proc.pid).children(recursive=True)
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err and "scheduler tcp://" in err
    assert workers
    gone, alive = psutil.wait_procs(workers, timeout=20)  # the cluster's processes end with the driver
    assert not alive, [" ".join(p.cmdline()[-3:]) for p in alive]
    assert _catalog(root) == before and not list(root.rglob("*.part*")) and not list(root.rglob(".g.partial*"))
    (folder,) = (root / "mf").glob(PREFIX + "*")
    kept = len(list(folder.glob("tile_*.h5")))
    assert 1 <= kept < 16
    s = run_mf_on_workspace(Workspace(root), overwrite=True)
    assert s["tiles_resumed"] == kept and _catalog(root) == _catalog(ref)


def test_cli_flags(ref, tmp_path, capsys):
    from szviewer.cli import main

    assert main(["mf", str(ref), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["mf", str(ref), "--workers", "-1"]) == 2
    assert "--workers -1" in capsys.readouterr().err
    np.testing.assert_equal(Workspace(ref).products["mf"]["generation"] > 0, True)


# --------------------------------------------------------------------------- dense CNN scoring on the executor

def _dense_model(path: Path, seed: int = 5) -> Path:
    """A tiny network biased towards 'cluster', so every tile has CNN candidates to compare."""
    torch = pytest.importorskip("torch")
    from conftest import TINY_NET

    from szviewer.cnn.model import DeepSZNet, NetConfig
    from szviewer.cnn.modelfile import Platt, save_model

    torch.manual_seed(seed)
    net = DeepSZNet(NetConfig(**TINY_NET)).eval()
    with torch.no_grad():
        net.head[6].bias[1] += 3.0
    save_model(path, net, Platt(1.0, 0.0), {"preset": "test"})
    return path


def _dense_files(root: Path) -> tuple[bytes, bytes]:
    ws = Workspace(root)
    return ws.file("cnn_dense", "dense_candidates.fits").read_bytes(), ws.file("cnn_dense", "scores.h5").read_bytes()


@pytest.mark.parametrize("method", ["fcn", "windowed"])
def test_dense_cnn_on_the_cluster_is_the_in_process_run(ref, cluster, tmp_path, method):
    """Dense scoring on 2 workers (one torch thread each) gives the in-process run's catalogue and scores byte
    for byte; the checkpoints are gone after the commit."""
    from astropy.table import Table

    from szviewer.jobs.dense import dense_job

    model = _dense_model(tmp_path / "tiny.pt")
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(ref, a)
    shutil.copytree(ref, b)
    sa = dense_job(Workspace(a), model_path=model, method=method, device="cpu")
    sb = dense_job(Workspace(b), model_path=model, method=method, device="cpu", executor=cluster)
    assert sb["workers"] == 2 and sa["candidates"] == sb["candidates"] and sa["windows"] == sb["windows"]
    assert _dense_files(a) == _dense_files(b)
    cat = Table.read(Workspace(b).file("cnn_dense", "dense_candidates.fits"))
    assert sorted(set(cat["tile"].tolist())) == [0, 1, 2, 3] and len(cat) == sa["candidates"] > 4
    for root in (a, b):
        assert not list((root / "cnn_dense").glob(PREFIX + "*")) and not list(root.rglob("*.part*"))


def test_a_cancelled_dense_run_keeps_its_tiles_and_a_rerun_resumes(ref, tmp_path):
    from szviewer.jobs.dense import dense_job

    model = _dense_model(tmp_path / "tiny.pt")
    full, root = tmp_path / "full", tmp_path / "ws"
    shutil.copytree(ref, full)
    shutil.copytree(ref, root)
    dense_job(Workspace(full), model_path=model, device="cpu")

    def tiles_done(n):
        return lambda: sum(len(list(f.glob("tile_*.npz"))) for f in (root / "cnn_dense").glob(PREFIX + "*")) >= n

    with pytest.raises(Cancelled):
        dense_job(Workspace(root), model_path=model, device="cpu", cancelled=tiles_done(2))
    assert not Workspace(root).has("cnn_dense") and not list(root.rglob("*.part*"))
    (folder,) = (root / "cnn_dense").glob(PREFIX + "*")
    assert sorted(p.name for p in folder.iterdir()) == ["tile_0000.npz", "tile_0001.npz"]
    other = _dense_model(tmp_path / "other.pt", seed=6)  # another model: its own checkpoints, never these
    with pytest.raises(Cancelled):
        dense_job(Workspace(root), model_path=other, device="cpu", cancelled=tiles_done(3))
    assert len(list((root / "cnn_dense").glob(PREFIX + "*"))) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["tile_0000.npz", "tile_0001.npz"]
    calls = []
    s = dense_job(Workspace(root), model_path=model, device="cpu", progress=lambda d, t, m="": calls.append((d, t)))
    assert s["tiles_resumed"] == 2 and calls[0] == (2, 4) and calls[-1][0] == calls[-1][1]
    assert _dense_files(root) == _dense_files(full)
    assert not list((root / "cnn_dense").glob(PREFIX + "*"))  # every checkpoint folder goes with the commit


# --------------------------------------------------------------------------- HEALPix sampling on the executor

@pytest.fixture(scope="module")
def healpix_ws(tmp_path_factory):
    """A Sehgal-format HEALPix sky at Nside 1024 (random CMB and tSZ maps, so every pixel differs), imported over
    a 2.5 x 2 deg region: the workspace whose cutouts are sampled."""
    import healpy as hp
    from astropy.io import fits

    from szviewer.jobs.importing import import_sehgal
    from szviewer.sky.bands import BANDS_GHZ, band_label

    nside = 1024
    d = tmp_path_factory.mktemp("hpx") / "sehgal"
    d.mkdir()
    rng = np.random.default_rng(11)
    for band in BANDS_GHZ:
        for comp, scale in (("lensedcmb", 100.0), ("tsz", 1.0)):
            m = (rng.standard_normal(hp.nside2npix(nside)) * scale).astype(np.float32)
            cols = [fits.Column(name="signal", format="1024E", array=m.reshape(-1, 1024))]
            h = fits.BinTableHDU.from_columns(cols)
            h.header.update({"PIXTYPE": "HEALPIX", "ORDERING": "RING", "NSIDE": nside, "TUNIT1": "uK",
                             "FIRSTPIX": 0, "LASTPIX": m.size - 1, "INDXSCHM": "IMPLICIT"})
            h.writeto(d / f"{band_label(band)}_{comp}_healpix.fits")
    root = d.parent / "ws"
    from szviewer.sky.tiles import Footprint

    import_sehgal(d, root, region=Footprint(0.0, 2.5, 0.0, 2.0))
    return root


def _images(root: Path) -> bytes:
    with Workspace(root).cutout_store() as st:
        return st._f["images"][...].tobytes()


def test_healpix_sampling_on_the_cluster_is_the_in_process_run_and_resumes(healpix_ws, cluster, tmp_path):
    """Blocks of 64 cutouts: sampled on 2 workers, the store's images are the in-process bytes; a cancelled run
    keeps its finished blocks and a re-run samples only the rest."""
    st = CutoutSettings(batch=64)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root in (a, b, c):
        shutil.copytree(healpix_ws, root)
    sa = make_cutouts(Workspace(a), st)
    make_cutouts(Workspace(b), st, executor=cluster)
    blocks = -(-sa["cutouts"] // 64)
    assert blocks >= 6 and _images(a) == _images(b)
    assert not list((b / "cutouts").glob(PREFIX + "*")) and not list(b.rglob("*.part*"))
    calls = []
    with pytest.raises(Cancelled):
        make_cutouts(Workspace(c), st, progress=lambda d, t, m="": calls.append(d), cancelled=lambda: len(calls) >= 4)
    assert not Workspace(c).has("cutouts")
    (folder,) = (c / "cutouts").glob(PREFIX + "*")
    assert sorted(p.name for p in folder.iterdir()) == ["tile_0000.npy", "tile_0001.npy", "tile_0002.npy"]
    calls.clear()
    make_cutouts(Workspace(c), st, progress=lambda d, t, m="": calls.append((d, t)))
    assert calls[0] == (3, blocks) and _images(c) == _images(a)
    assert not list((c / "cutouts").glob(PREFIX + "*"))


def test_cli_dense_and_cutouts_take_the_executor_flags(ref, tmp_path, capsys):
    from szviewer.cli import main
    from szviewer.jobs.dense import dense_job

    model = _dense_model(tmp_path / "tiny.pt")
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(ref, a)
    shutil.copytree(ref, b)
    assert main(["predict", str(a), "--model", str(model), "--workers", "2"]) == 2
    assert "--dense" in capsys.readouterr().err
    assert main(["cutouts", str(a), "--overwrite", "--workers", "2"]) == 2
    assert "HEALPix" in capsys.readouterr().err
    assert main(["predict", str(a), "--model", str(model), "--dense", "--workers", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "LocalCluster: 2 worker" in err and "scheduler tcp://" in err
    dense_job(Workspace(b), model_path=model, device="cpu")
    assert _dense_files(a) == _dense_files(b)
