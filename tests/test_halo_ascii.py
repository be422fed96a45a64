"""Halo catalogs: Sehgal's halo_sz.ascii (48 columns) and halo_nbody.ascii (20 columns), and generic
astropy tables (SCIENCE.md section 1)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from szviewer.errors import InputError
from szviewer.sky import halo_ascii
from szviewer.sky.halo_ascii import read_halo_table, read_sehgal_binary, read_sehgal_halos, restrict_to_octant

# (z, ra, dec, m_vir, r_vir, y_int or r500, m500): 4 inside the octant, 3 outside
HALOS = [
    (0.30, 10.0, 20.0, 3.0e14, 1.5, 2.0e-4, 2.0e14),
    (1.20, 89.9, 0.1, 2.5e14, 0.9, 1.0e-5, 1.6e14),
    (0.05, 45.0, 89.0, 1.0e13, 0.4, 3.0e-7, 6.0e12),
    (2.90, 0.0, 0.0, 5.0e13, 0.3, 1.0e-6, 3.0e13),
    (0.50, 100.0, 30.0, 4.0e14, 1.7, 9.0e-4, 2.9e14),
    (0.60, 30.0, -5.0, 1.0e14, 1.1, 5.0e-5, 7.0e13),
    (0.70, 359.0, 45.0, 2.0e14, 1.2, 7.0e-5, 1.4e14),
]


def sz_rows():
    rows = np.arange(len(HALOS) * 48, dtype=float).reshape(len(HALOS), 48) + 0.5  # filler values
    for i, (z, ra, dec, mvir, rvir, yint, m500) in enumerate(HALOS):
        rows[i, [0, 1, 2, 10, 12, 13, 32]] = z, ra, dec, mvir, rvir, yint, m500
    return rows


def nbody_rows():
    rows = np.arange(len(HALOS) * 20, dtype=float).reshape(len(HALOS), 20) + 0.25
    for i, (z, ra, dec, mvir, rvir, r500, m500) in enumerate(HALOS):
        rows[i, [0, 1, 2, 10, 11, 14, 15]] = z, ra, dec, mvir, rvir, m500, r500
    return rows


def write(path, rows, fmt="%.9g"):
    np.savetxt(path, rows, fmt=fmt)
    return path


def test_halo_sz_48_columns(tmp_path):
    p = write(tmp_path / "halo_sz.ascii", sz_rows())
    t = read_halo_table(p)
    assert t.meta["source"] == str(p) and t.meta["format"] == "halo_sz"
    assert t.colnames == ["halo_id", "z", "ra", "dec", "m_vir", "r_vir", "m500", "r500", "y_int_arcmin2", "m200c",
                          "m200m"]
    assert t["halo_id"].dtype == np.int64 and list(t["halo_id"]) == list(range(7))
    ref = np.array(HALOS)
    np.testing.assert_allclose(t["z"], ref[:, 0])
    np.testing.assert_allclose(t["ra"], ref[:, 1])
    np.testing.assert_allclose(t["dec"], ref[:, 2])
    np.testing.assert_allclose(t["m_vir"], ref[:, 3])
    np.testing.assert_allclose(t["r_vir"], ref[:, 4])
    np.testing.assert_allclose(t["y_int_arcmin2"], ref[:, 5])
    np.testing.assert_allclose(t["m500"], ref[:, 6])
    assert np.all(np.isnan(t["r500"]))
    assert t["ra"].unit == u.deg and t["m_vir"].unit == u.Msun and t["r_vir"].unit == u.Mpc
    assert t["y_int_arcmin2"].unit == u.arcmin**2 and t["z"].unit is None


def test_halo_nbody_20_columns_and_octant(tmp_path):
    p = write(tmp_path / "halo_nbody.ascii", nbody_rows())
    t = read_sehgal_halos(p)
    assert t.meta["format"] == "halo_nbody"
    ref = np.array(HALOS)
    np.testing.assert_allclose(t["r_vir"], ref[:, 4])
    np.testing.assert_allclose(t["r500"], ref[:, 5])
    np.testing.assert_allclose(t["m500"], ref[:, 6])
    assert np.all(np.isnan(t["y_int_arcmin2"]))
    o = restrict_to_octant(t)
    assert list(o["halo_id"]) == [0, 1, 2, 3]
    assert o.meta["source"] == str(p)


def test_halo_nbody_binary_both_byte_orders(tmp_path):
    """halo_nbody.binary: 20 float32 per halo in the ASCII column order, written here with numpy alone."""
    rows = nbody_rows()
    rows[:, 12] = np.array(HALOS)[:, 3] * 0.8  # M200 (critical)
    ascii_t = read_sehgal_halos(write(tmp_path / "halo_nbody.ascii", rows))
    for order in ("<", ">"):
        p = tmp_path / f"halo_nbody_{order == '<'}.binary"
        rows.astype(f"{order}f4").tofile(p)
        t = read_halo_table(p)  # dispatched on the extension
        assert t.meta["format"] == "halo_nbody_binary" and t.meta["endian"] == ("little" if order == "<" else "big")
        assert t.colnames == ascii_t.colnames and list(t["halo_id"]) == list(range(len(HALOS)))
        for c in ("z", "ra", "dec", "m_vir", "r_vir", "m500", "r500", "m200c"):
            np.testing.assert_allclose(t[c], ascii_t[c], rtol=1e-7)  # float32 of the same numbers
        assert np.all(np.isnan(t["y_int_arcmin2"])) and t["m_vir"].unit == u.Msun
    # an optional leading int32 count
    p = tmp_path / "counted.binary"
    p.write_bytes(np.int32(len(HALOS)).tobytes() + rows.astype("<f4").tobytes())
    np.testing.assert_allclose(read_sehgal_binary(p)["m_vir"], ascii_t["m_vir"], rtol=1e-7)


def test_halo_nbody_binary_bad_files(tmp_path):
    rows = nbody_rows().astype("<f4").tobytes()
    p = tmp_path / "halo_nbody.binary"
    p.write_bytes(rows[:-10])
    with pytest.raises(InputError, match=r"halo_nbody\.binary: \d+ bytes is not a whole number of halos.*truncated"):
        read_sehgal_binary(p)
    p.write_bytes(np.random.default_rng(0).integers(0, 255, 80 * 7, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"halo_nbody\.binary: only \d+% of the first 7 rows look like halos"):
        read_sehgal_binary(p)
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_sehgal_binary(p)


def test_blank_lines_and_block_boundaries(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rows = rng.uniform(0, 90, (300, 20))
    text = "\n".join(" ".join(f"{v:.8e}" for v in r) for r in rows) + "\n\n  \n"
    p = tmp_path / "h.ascii"
    p.write_text(text)
    monkeypatch.setattr(halo_ascii, "_BLOCK", 1000)  # many blocks, lines split across them
    t = read_sehgal_halos(p)
    assert len(t) == 300
    np.testing.assert_allclose(t["ra"], rows[:, 1], rtol=1e-8)
    np.testing.assert_allclose(t["r500"], rows[:, 15], rtol=1e-8)


def test_wrong_column_count_names_line(tmp_path, monkeypatch):
    rows = nbody_rows()
    lines = [" ".join(f"{v:.6g}" for v in r) for r in rows]
    lines[4] = " ".join(lines[4].split()[:19])
    p = tmp_path / "bad.ascii"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad\.ascii: line 5: 19 columns, expected 20"):
        read_sehgal_halos(p)
    lines = [" ".join(f"{v:.6g}" for v in r) for r in rows]
    lines[2] += " 7.0"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(halo_ascii, "_BLOCK", 200)
    with pytest.raises(InputError, match=r"line 3: 21 columns, expected 20"):
        read_sehgal_halos(p)


def test_unknown_layout(tmp_path):
    p = write(tmp_path / "odd.ascii", np.zeros((3, 19)))
    with pytest.raises(InputError, match=r"odd\.ascii.*19 columns.*48.*20"):
        read_sehgal_halos(p)
    (tmp_path / "empty.ascii").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_sehgal_halos(tmp_path / "empty.ascii")


def test_non_numeric_text(tmp_path):
    rows = sz_rows()
    lines = [" ".join(f"{v:.6g}" for v in r) for r in rows]
    toks = lines[2].split()
    toks[4] = "abc"  # an unused column: still reported
    lines[2] = " ".join(toks)
    p = tmp_path / "text.ascii"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"text\.ascii: line 3, column 5 of 48: not a number: 'abc'"):
        read_sehgal_halos(p)
    toks = lines[2].split()
    toks[4] = "1.0"
    toks[1] = "1.2.3"  # RA, a used column, made of allowed characters
    lines[2] = " ".join(toks)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"line 3, column 2 of 48: not a number: '1.2.3'"):
        read_sehgal_halos(p)


def test_short_last_line(tmp_path):
    p = write(tmp_path / "cut.ascii", sz_rows())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 60])  # truncated in the middle of the last line
    with pytest.raises(InputError, match=r"cut\.ascii: line 7: \d+ columns, expected 48 .*truncated"):
        read_sehgal_halos(p)


def test_generic_tables(tmp_path):
    t = Table({"RA": [10.0, 100.0], "Dec": [5.0, 6.0], "redshift": [0.3, 0.5], "M_vir": [3e14, 1e14]})
    t["RA"].unit = u.deg
    t.write(tmp_path / "cat.ecsv")
    t.write(tmp_path / "cat.fits")
    for name in ("cat.ecsv", "cat.fits"):
        r = read_halo_table(tmp_path / name)
        np.testing.assert_allclose(r["ra"], [10.0, 100.0])
        np.testing.assert_allclose(r["m_vir"], [3e14, 1e14])
        assert list(r["halo_id"]) == [0, 1] and np.all(np.isnan(r["r500"]))
        assert r["ra"].unit == u.deg and r.meta["source"].endswith(name)
    t2 = Table({"ra": [1.0], "dec": [2.0], "z": [0.1], "m_vir": [1e14], "halo_id": [42]})
    t2["ra"].unit = u.arcmin
    t2.write(tmp_path / "cat2.csv")
    r = read_halo_table(tmp_path / "cat2.csv")
    assert r["halo_id"][0] == 42 and r["ra"][0] == pytest.approx(1.0)  # csv drops units
    t2.write(tmp_path / "cat2.ecsv")
    assert read_halo_table(tmp_path / "cat2.ecsv")["ra"][0] == pytest.approx(1 / 60)  # ecsv keeps them


def test_generic_table_missing_columns(tmp_path):
    Table({"ra": [1.0], "z": [0.2]}).write(tmp_path / "thin.csv")
    with pytest.raises(InputError, match=r"thin\.csv: missing column\(s\) dec, m_vir"):
        read_halo_table(tmp_path / "thin.csv")
    with pytest.raises(InputError, match="no such file"):
        read_halo_table(tmp_path / "absent.ecsv")
