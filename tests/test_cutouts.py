import numpy as np
import pytest
from astropy.table import Table

from szviewer.cutouts.grid import CutoutGrid
from szviewer.cutouts.labels import label_grid
from szviewer.cutouts.store import CutoutStore
from szviewer.sky.tiles import Footprint
from szviewer.workspace import Workspace


def test_true_angle_grid_of_the_octant():
    g = CutoutGrid(Footprint.octant())
    # 900 rows of 6' in Dec; a row holds about 90 deg cos(Dec) / 6' cutouts (released code: 899 x 899)
    assert g.row_dec.size == 899
    assert g.size == 514768
    ra, dec, row, col = g.centres()
    assert np.array_equal(g.cell_of(ra, dec), np.arange(g.size))
    # neighbouring centres in a row are 6' apart in true angle at every Dec
    from szviewer.sky.geometry import separation_arcmin

    for r in (0, 450, 850):
        i = g.row_start[r]
        assert separation_arcmin(ra[i], dec[i], ra[i + 1], dec[i + 1]) == pytest.approx(6.0, rel=1e-3)


def test_every_position_in_exactly_one_cell():
    g = CutoutGrid(Footprint.square(4.0))
    rng = np.random.default_rng(1)
    ra0, dec0 = g.centres()[:2]
    # points within the central 6' x 6' of a cutout map to it
    dra = rng.uniform(-2.99, 2.99, ra0.size) / 60 / np.cos(np.deg2rad(dec0))
    ddec = rng.uniform(-2.99, 2.99, ra0.size) / 60
    assert np.array_equal(g.cell_of(ra0 + dra, dec0 + ddec), np.arange(g.size))
    # and just beyond the cell edge they belong to the neighbour
    assert np.all(g.cell_of(ra0, dec0 + 3.01 / 60)[:-g.row_n[-1]] != np.arange(g.size)[:-g.row_n[-1]])


def test_labels_splits_and_neighbour_removal():
    fp = Footprint(0.0, 2.0, 0.0, 1.0)
    g = CutoutGrid(fp)
    ra, dec, row, col = g.centres()
    # three halos: a qualifying one in the training part, a low-mass one, a low-z one; two in one cell
    target = int(np.nonzero((row == 5) & (col == 15))[0][0])  # RA fraction ~ 0.7: train
    halos = Table({"halo_id": [10, 11, 12, 13],
                   "ra": [ra[target] + 0.01, ra[target] - 0.01, ra[3], ra[3]],
                   "dec": [dec[target], dec[target] + 0.01, dec[3], dec[3]],
                   "z": [0.5, 0.8, 0.3, 0.1],
                   "m_vir": [5e14, 3e14, 1e14, 9e14]})
    t = label_grid(g, halos)
    assert int(t["label"].sum()) == 1
    row_t = t[target]
    assert row_t["label"] and row_t["halo_id"] == 10 and row_t["n_halos"] == 2
    assert row_t["m_vir"] == 5e14 and row_t["z"] == 0.5
    assert row_t["halo_dx_arcmin"] == pytest.approx(0.6 * np.cos(np.deg2rad(dec[target])), rel=1e-3)
    assert row_t["offset_arcmin"] == pytest.approx(np.hypot(row_t["halo_dx_arcmin"], 0), rel=1e-6)
    assert t["split"][target] == "train"
    # all 8 neighbours are flagged, nothing else
    neigh = g.neighbours(np.array([target]))[0]
    assert set(np.nonzero(t["train_neighbour"])[0]) == set(neigh)
    assert len(set(neigh)) == 8
    frac = (ra - fp.ra_min) / (fp.ra_max - fp.ra_min)
    assert np.all(t["split"][frac < 0.13] == "test")
    assert np.all(t["split"][(frac >= 0.13) & (frac < 0.2)] == "val")
    assert np.all(t["split"][frac >= 0.2] == "train")


def test_neighbours_not_removed_outside_training():
    fp = Footprint(0.0, 2.0, 0.0, 1.0)
    g = CutoutGrid(fp)
    ra, dec, row, col = g.centres()
    target = int(np.nonzero((row == 5) & (col == 1))[0][0])  # RA fraction ~ 0.08: test
    halos = Table({"ra": [ra[target]], "dec": [dec[target]], "z": [0.5], "m_vir": [5e14]})
    t = label_grid(g, halos)
    assert t["split"][target] == "test" and t["label"][target]
    assert not np.any(t["train_neighbour"])


def test_store_contents(small_ws):
    path = Workspace(small_ws["path"]).file("cutouts", "cutouts.h5")
    with CutoutStore(path) as st:
        t = st.table
        assert len(st) == len(t) == small_ws["cutouts"]["cutouts"]
        assert set(st.levels) == {"cmb_tsz", "ksz", "ir", "radio", "all"}
        assert t["id"].dtype.kind == "i" and set(t["split"]) <= {"train", "val", "test"}
        assert st.attrs()["removed_train_neighbours"] == small_ws["cutouts"]["removed_train_neighbours"]
        # noise is seeded per cutout: same image twice, in any order, and with the right level
        rows = np.array([5, 2, 9])
        a = st.images(rows)
        b = st.images(rows[::-1])[::-1]
        assert np.array_equal(a, b)
        noise = a - st.images(rows, noise=False)
        assert np.std(noise[:, 0]) == pytest.approx(11.2, rel=0.05)
        assert np.std(noise[:, 2]) == pytest.approx(26.4, rel=0.05)
        # levels are cumulative sums of components
        comps = st.component_images(rows)
        lvl = st.images(rows, "ksz", noise=False)
        assert np.allclose(lvl, comps[:, :3].sum(axis=1), atol=1e-4)
        # the positive cutouts carry a tSZ decrement at 90 GHz where the halo is
        pos = np.nonzero(np.asarray(t["label"]))[0]
        assert pos.size > 0
        tsz = st.component_images(pos)[:, st.components.index("tsz"), 0]
        for k, r in enumerate(pos):
            dx, dy = t["halo_dx_arcmin"][r], t["halo_dy_arcmin"][r]
            col = int(np.clip(np.rint(15.5 - dx / 0.25), 0, 31))  # east is to the left
            row = int(np.clip(np.rint(15.5 + dy / 0.25), 0, 31))
            assert tsz[k, row, col] < 0
            assert tsz[k, row, col] <= np.percentile(tsz[k], 10)


def test_store_refuses_garbage(tmp_path):
    from szviewer.errors import InputError

    bad = tmp_path / "cutouts.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InputError, match="cutouts.h5"):
        CutoutStore(bad)
    with pytest.raises(InputError, match="missing"):
        CutoutStore(tmp_path / "nothing.h5")


def test_truncated_store_is_reported(small_ws, tmp_path):
    from szviewer.errors import InputError

    data = Workspace(small_ws["path"]).file("cutouts", "cutouts.h5").read_bytes()
    cut = tmp_path / "cutouts.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cutouts.h5"):
        st = CutoutStore(cut)
        st.images(np.arange(len(st)))
