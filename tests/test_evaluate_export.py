"""Candidate catalogs and DS9 regions, written atomically (szviewer.evaluate.export)."""

import math

import numpy as np
import pytest
from astropy.table import Table
from regions import CircleSkyRegion, Regions

from szviewer.atomic import atomic_write
from szviewer.evaluate.ensembles import rank_percentile
from szviewer.evaluate.export import (
    build_catalog,
    catalog_format,
    read_catalog,
    write_catalog,
    write_ds9_regions,
)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    n = 40
    cnn = rng.random(n)
    mf = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(3, 20, n))
    return {
        "ra": rng.uniform(0, 90, n),
        "dec": rng.uniform(0, 90, n),
        "scores": {"cnn_prob": cnn, "mf_snr": mf},
        "decision": cnn > 0.6,
        "halo": {"m_vir": rng.uniform(2e14, 1e15, n), "z": rng.uniform(0.25, 2, n)},
    }


@pytest.fixture
def catalog(arrays):
    return build_catalog(
        arrays["ra"],
        arrays["dec"],
        arrays["scores"],
        arrays["decision"],
        halo=arrays["halo"],
        method="CNN",
        thresholds={"cnn_prob": 0.6},
        provenance={"maps": "sky.h5", "seed": 7, "missing": float("nan")},
    )


def test_build_catalog_columns_and_ranks(arrays, catalog):
    keep = arrays["decision"]
    assert len(catalog) == keep.sum()
    assert catalog.colnames == [
        "ra",
        "dec",
        "cnn_prob",
        "mf_snr",
        "q_cnn_prob",
        "q_mf_snr",
        "decision",
        "halo_m_vir",
        "halo_z",
    ]
    # ranks are over the whole evaluated set, not just the candidates
    np.testing.assert_allclose(catalog["q_mf_snr"], rank_percentile(arrays["scores"]["mf_snr"])[keep])
    assert catalog["decision"].all()
    assert catalog.meta["method"] == "CNN" and catalog.meta["thresholds"] == {"cnn_prob": 0.6}
    assert catalog.meta["n_evaluated"] == 40
    with pytest.raises(ValueError, match="differ in length"):
        build_catalog([1.0, 2.0], [1.0, 2.0], {"cnn_prob": [0.1]})


@pytest.mark.parametrize("fmt", ["ecsv", "fits", "csv", "vot"])
def test_catalog_round_trip(tmp_path, arrays, catalog, fmt):
    path = tmp_path / f"candidates.{fmt}"
    write_catalog(catalog, path)
    plain = Table.read(path)  # every format reads back with no options (CSV is plain)
    assert plain.colnames == catalog.colnames
    np.testing.assert_allclose(plain["ra"], catalog["ra"])
    np.testing.assert_array_equal(np.isnan(plain["mf_snr"]), np.isnan(catalog["mf_snr"]))
    np.testing.assert_allclose(plain["halo_m_vir"], catalog["halo_m_vir"])
    back = read_catalog(path)
    assert back["decision"].dtype == bool and back["decision"].all()
    np.testing.assert_allclose(back["q_cnn_prob"], catalog["q_cnn_prob"])
    assert back["ra"].unit == "deg"
    if fmt == "csv":  # plain CSV holds no metadata (ECSV, FITS and VOTable do)
        assert back.meta == {}
        return
    assert back.meta["method"] == "CNN"
    assert back.meta["thresholds"] == {"cnn_prob": 0.6}
    assert back.meta["provenance"]["maps"] == "sky.h5" and back.meta["provenance"]["seed"] == 7
    assert math.isnan(back.meta["provenance"]["missing"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_refuses_to_clobber_and_overwrites_on_request(tmp_path, catalog):
    path = tmp_path / "cat.ecsv"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="cat.ecsv"):
        write_catalog(catalog, path)
    assert path.read_text() == "precious"
    write_catalog(catalog, path, overwrite=True)
    assert len(Table.read(path)) == len(catalog)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.ecsv"]


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.txt"

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert list(tmp_path.iterdir()) == []
    path.write_text("old")
    with pytest.raises(RuntimeError):
        atomic_write(path, boom, overwrite=True)
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


def test_bad_input_messages_name_the_file(tmp_path, catalog):
    with pytest.raises(ValueError, match=r"cat\.txt.*suffix"):
        write_catalog(catalog, tmp_path / "cat.txt")
    with pytest.raises(ValueError, match=r"cat\.ecsv.*unknown catalog format 'hdf5'"):
        write_catalog(catalog, tmp_path / "cat.ecsv", format="hdf5")
    t = catalog.copy()
    t.remove_column("dec")
    with pytest.raises(ValueError, match=r"cat\.fits.*\['dec'\]"):
        write_catalog(t, tmp_path / "cat.fits")
    with pytest.raises(ValueError, match=r"r\.reg.*\['snr'\]"):
        write_ds9_regions(tmp_path / "r.reg", catalog, score="snr")
    assert list(tmp_path.iterdir()) == []
    assert catalog_format("x.FITS") == "fits" and catalog_format("x.dat", "votable") == "votable"


def test_ds9_regions_round_trip(tmp_path, catalog):
    path = tmp_path / "candidates.reg"
    write_ds9_regions(path, catalog, score="cnn_prob", radius_arcmin=2.0)
    regs = Regions.read(str(path), format="ds9")
    assert len(regs) == len(catalog)
    for reg, row in zip(regs, catalog, strict=True):
        assert isinstance(reg, CircleSkyRegion)
        assert reg.center.ra.deg == pytest.approx(row["ra"], abs=1e-7)
        assert reg.center.dec.deg == pytest.approx(row["dec"], abs=1e-7)
        assert reg.radius.to_value("arcmin") == pytest.approx(2.0)
        assert reg.meta["text"] == f"cnn_prob={row['cnn_prob']:.3g}"
    with pytest.raises(FileExistsError):
        write_ds9_regions(path, catalog)
    write_ds9_regions(path, catalog[:0], overwrite=True)
    assert len(Regions.read(str(path), format="ds9")) == 0
