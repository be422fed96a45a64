"""Benchmark: the simulation readers of issue 15 (Websky halos.pksc, Websky cutting against Sehgal cutting).

Run ``python benchmarks/bench_sims.py`` (``--quick`` for a small run; ``--halos N`` to choose the pksc size). It

1. writes a synthetic ``halos.pksc`` of N halos (default 10^8, 4 GB: little-endian, int32 -N, float32 RTHmax,
   float32 redshift, then N x 10 float32) with positions inside z ~ 4.6 and Lagrangian radii from a steep mass
   function (M200m from 1e12 to 1e16 Msun, dN/dM ~ M^-2: about 1% above the 1e14 floor), block by block;
2. times :func:`szviewer.sky.websky_halos.read_pksc` with the 1e14 Msun floor from the page cache (best of three after a
   warming pass; target >= 5e7 halos/s), and its peak memory (tracemalloc), against a raw ``numpy.fromfile`` of
   the same bytes in the same blocks (the reference row: the cost of reading the file at all);
3. makes a Websky-format Nside 4096 set (tsz, ksz, four CIB maps, the lensed CMB) and a Sehgal-format set of the
   same components (cmb, tsz, ksz, ir in three bands) as sparse files, and times ``cut`` of a block of the 6'
   grid (the order ``szviewer cutouts`` uses) on both, in component-bands per second (Websky with the CIB
   interpolated as a power law, the default, and with the nearest map); the CIB pixels the block touches are made
   positive so the power-law interpolation runs its usual path.

The temporary files are deleted at the end.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import best_time  # noqa: E402 (the benchmarks folder is put on the path first)


def write_synthetic_pksc(path: Path, n: int, seed: int = 0, block: int = 1 << 21) -> int:
    """Write ``n`` halos; returns how many have M200m >= 1e14 Msun."""
    from szviewer.sky.websky_cosmology import m200m_of_rth, rth_of_m200m

    rng = np.random.default_rng(seed)
    r1 = rth_of_m200m(1.0)
    kept = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<iff", -n, np.float32(r1 * 1e16 ** (1 / 3)), 0.0))
        for s in range(0, n, block):
            k = min(block, n - s)
            rows = np.zeros((k, 10), np.float32)
            v = rng.standard_normal((k, 3)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1)[:, None]
            rows[:, :3] = v * (7500.0 * rng.random(k, dtype=np.float32) ** (1 / 3))[:, None]
            rows[:, 3:6] = rng.normal(0, 300, (k, 3))
            u = rng.random(k)
            m = 1.0 / (1e-12 - u * (1e-12 - 1e-16))
            rows[:, 6] = r1 * m ** (1 / 3)
            kept += int(np.sum(m200m_of_rth(rows[:, 6]) >= 1e14))
            rows.tofile(f)
    return kept


def bench_pksc(tmp: Path, n: int) -> list[dict]:
    from szviewer.sky.websky_halos import read_pksc

    path = tmp / "halos.pksc"
    t0 = time.perf_counter()
    expect = write_synthetic_pksc(path, n)
    t_make = time.perf_counter() - t0
    gb = path.stat().st_size / 1e9
    read_pksc(path, 1e14)  # warm the page cache and the mass-conversion tables
    tracemalloc.start()
    t = read_pksc(path, 1e14)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(t) == expect, (len(t), expect)
    dt = best_time(lambda: read_pksc(path, 1e14))

    def raw():
        with open(path, "rb") as f:
            f.seek(12)
            while np.fromfile(f, dtype="<f4", count=(1 << 16) * 10).size:
                pass

    dt_ref = best_time(raw)
    return [
        {"name": f"write a synthetic halos.pksc ({n:.0e} halos)", "seconds": t_make, "unit": "s",
         "note": f"{gb:.1f} GB"},
        {"name": "read_pksc, M200m >= 1e14 floor, page cache", "seconds": dt, "throughput": n / dt,
         "unit": "halos/s", "target": ">= 5e7", "ratio_to_ref": dt / dt_ref,
         "note": f"{len(t)} kept ({100 * len(t) / n:.2f}%), peak {peak / 1e6:.0f} MB traced; x ref: time over "
                 "the raw fromfile"},
        {"name": "np.fromfile of the same bytes, same blocks (reference)", "seconds": dt_ref,
         "throughput": n / dt_ref, "unit": "halos/s", "note": f"{gb / dt_ref:.2f} GB/s"},
    ]


def bench_cut(tmp: Path, nside: int, side: int) -> list[dict]:
    from bench_cutting import make_sparse_healpix

    from szviewer.sky.sehgal import open_sehgal_dir
    from szviewer.sky.websky import open_websky_dir

    wd = tmp / "websky"
    wd.mkdir()
    make_sparse_healpix(wd / "tsz.fits", nside, unit="Compton-y")
    make_sparse_healpix(wd / "ksz.fits", nside, unit="uK_CMB")
    for nu in (93, 145, 217, 353):
        make_sparse_healpix(wd / f"cib_nu{nu:04d}.fits", nside, unit="MJy/sr")
    make_sparse_healpix(tmp / "cmb.fits", nside, unit="uK_CMB")
    (wd / "lensed_alm.fits").write_bytes(b"")  # present (the CMB map is given synthesised)
    sd = tmp / "sehgal"
    sd.mkdir()
    for comp in ("lensedcmb", "tsz", "ksz", "ir_pts"):
        for b in ("090", "148", "219"):
            make_sparse_healpix(sd / f"{b}_{comp}_healpix.fits", nside, unit="uK_CMB")
    web = open_websky_dir(wd, tmp / "cmb.fits")
    near = open_websky_dir(wd, tmp / "cmb.fits", cib="nearest")
    seh = open_sehgal_dir(sd)
    g = 4 / 60 + 6 / 60 * np.arange(side)
    gra, gdec = np.meshgrid(20 + g, 30 + g)  # a block of the DeepSZ 6' grid, scanned row by row
    ra, dec = gra.ravel(), gdec.ravel()
    pix = web.pixel_indices(ra, dec).ravel()
    for s in web.sources:
        if s.path.name.startswith("cib"):
            w = np.memmap(s.path, dtype=">f4", mode="r+", offset=s.file.data.offset, shape=s.file.data.shape)
            w[pix] = 1.0
            w.flush()
            del w
    rows = []
    rates = {}
    for label, sky in (("Sehgal-format, 12 maps", seh), ("Websky-format, CIB nearest", near),
                       ("Websky-format, 7 maps", web)):
        sky.cut(ra[:64], dec[:64])
        dt = best_time(lambda sky=sky: sky.cut(ra, dec))
        rate = ra.size * 3 * 4 / dt
        rates[label] = rate
        rows.append({"name": f"cut, Nside {nside}, {label}, a block of the 6' grid", "seconds": dt,
                     "throughput": rate, "unit": "comp-bands/s",
                     "note": f"{ra.size} cutouts x 4 components x 3 bands, {dt / ra.size * 1e3:.2f} ms a cutout"})
    for r, label in zip(rows[1:], ("Websky-format, CIB nearest", "Websky-format, 7 maps"), strict=True):
        r["ratio_to_ref"] = rates["Sehgal-format, 12 maps"] / rates[label]
        r["target"] = "= Sehgal"
        r["note"] += "; x ref: its time over the Sehgal set's"
    return rows


def run(n_halos: int = 100_000_000, nside: int = 4096, side: int = 64) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="szviewer-bench-sims-") as tmp:
        tmp = Path(tmp)
        rows = bench_pksc(tmp, n_halos)
        (tmp / "halos.pksc").unlink()
        rows += bench_cut(tmp, nside, side)
    return rows


if __name__ == "__main__":
    from run import print_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10^7 halos, Nside 2048, a 32 x 32 block")
    ap.add_argument("--halos", type=float, default=None, help="halos in the synthetic pksc (default 1e8)")
    args = ap.parse_args()
    n = int(args.halos) if args.halos else (10_000_000 if args.quick else 100_000_000)
    print_table(run(n, 2048, 32) if args.quick else run(n), "sims")
