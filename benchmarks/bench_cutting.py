"""Benchmark: cutting Sehgal-sized HEALPix maps into 32 x 32 cutouts, and reading halo catalogs.

Run ``python benchmarks/bench_cutting.py`` (add ``--quick`` for a smaller run). It

1. creates three temporary float32 HEALPix maps of 12 * 8192^2 pixels (3.2 GB each, the size of one
   Sehgal map; SCIENCE.md section 1) as sparse files: the FITS header is written with astropy and the
   file is extended with ``truncate``, so creation takes milliseconds and no disk space; the pixels of
   the reference cutouts are then filled with their own index so the comparison below is meaningful;
2. times :meth:`szviewer.sky.sehgal.SehgalSky.cut` in cutout-bands per second on random centres in the
   octant and on a block of the DeepSZ 6' grid, each twice (first pass faults the pages in, second runs
   from the page cache); SCIENCE.md section 2 measured 0.10 ms per cutout-band (10,000/s); target
   >= 8,000/s;
3. times ``healpy.projector.GnomonicProj().projmap`` on a few cutouts in the same process (reference,
   0.23 ms per cutout-band in SCIENCE.md), reports the speed ratio and the fraction of pixels on which
   both pick the same HEALPix pixel;
4. times :func:`szviewer.sky.halo_ascii.read_sehgal_halos` on synthetic 200k-row files in both Sehgal
   layouts (rows per second), against ``numpy.loadtxt`` of the whole file.

The temporary files are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import healpy as hp
import numpy as np
from astropy.io import fits

from szviewer.sky.halo_ascii import read_sehgal_halos, write_sehgal_ascii
from szviewer.sky.sehgal import open_sehgal_dir


def make_sparse_healpix(path, nside: int = 8192, unit: str = "uK_CMB") -> Path:
    """Write a full-sky RING HEALPix binary table of zeros (rows of 1024 float32) as a sparse file."""
    path = Path(path)
    npix = 12 * nside * nside
    rows = npix // 1024
    tbl = fits.BinTableHDU.from_columns(
        [fits.Column(name="signal", format="1024E", unit=unit, array=np.zeros((1, 1024), np.float32))])
    h = tbl.header
    h["NAXIS2"] = rows
    h["PIXTYPE"] = "HEALPIX"
    h["ORDERING"] = "RING"
    h["NSIDE"] = nside
    h["FIRSTPIX"] = 0
    h["LASTPIX"] = npix - 1
    h["INDXSCHM"] = "IMPLICIT"
    h["OBJECT"] = "FULLSKY"
    head = fits.PrimaryHDU().header.tostring().encode("ascii") + h.tostring().encode("ascii")
    data_bytes = rows * 1024 * 4
    total = len(head) + -(-data_bytes // 2880) * 2880
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(total)
    return path


def _time(fn, *args, **kw):
    t0 = time.perf_counter()
    res = fn(*args, **kw)
    return time.perf_counter() - t0, res


def bench_healpix(tmp: Path, nside: int, n_cut: int, n_ref: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    d = tmp / "sehgal"
    d.mkdir()
    t_make = time.perf_counter()
    for b in ("090", "148", "219"):
        make_sparse_healpix(d / f"{b}_skymap_healpix.fits", nside)
    t_make = time.perf_counter() - t_make
    t_open, sky = _time(open_sehgal_dir, d)
    gb = os.path.getsize(d / "090_skymap_healpix.fits") / 1e9
    results = [{"name": "create 3 sparse HEALPix maps", "value": t_make, "unit": "s",
                "note": f"Nside {nside}, {gb:.2f} GB each"},
               {"name": "open_sehgal_dir (3 maps, header checks)", "value": t_open * 1e3, "unit": "ms",
                "note": ""}]

    # reference centres: fill their pixels with the pixel index (mod 2^23, exact in float32)
    ref_ra = rng.uniform(1, 89, n_ref)
    ref_dec = rng.uniform(1, 85, n_ref)
    pix_ref = sky.pixel_indices(ref_ra, ref_dec)
    for m in sky.maps.values():
        w = np.memmap(m.path, dtype=">f4", mode="r+", offset=m.data.offset, shape=m.data.shape)
        w[pix_ref.ravel()] = (pix_ref.ravel() % (1 << 23)).astype(np.float32)
        w.flush()
        del w

    scenarios = {
        "random centres in the octant": (rng.uniform(0.1, 89.9, n_cut), rng.uniform(0.1, 89.9, n_cut)),
    }
    side = int(np.sqrt(n_cut))
    g = 4 / 60 + 6 / 60 * np.arange(side)
    gra, gdec = np.meshgrid(20 + g, 30 + g)  # a block of the DeepSZ 6' grid, scanned row by row
    scenarios["block of the 6' grid"] = (gra.ravel(), gdec.ravel())
    for label, (ra, dec) in scenarios.items():
        for attempt in ("first pass", "second pass"):
            dt, out = _time(sky.cut, ra, dec)
            rate = 3 * ra.size / dt
            results.append({"name": f"SehgalSky.cut, {label}, {attempt}", "value": rate,
                            "unit": "cutout-bands/s",
                            "note": f"{ra.size} cutouts x 3 bands, {dt / (3 * ra.size) * 1e3:.3f} ms each"})
    ours_rate = results[-1]["value"]

    # reference: healpy's gnomonic projector, same centres
    data = sky.maps[("skymap", 148)].data
    ours = sky.cut(ref_ra, ref_dec)["skymap"][:, 1]

    def v2p(x, y, z):
        return hp.vec2pix(nside, x, y, z)

    t0 = time.perf_counter()
    imgs = []
    for ra, dec in zip(ref_ra, ref_dec, strict=True):
        proj = hp.projector.GnomonicProj(rot=(ra, dec, 0.0), xsize=32, ysize=32, reso=0.25)
        imgs.append(proj.projmap(data, v2p))
    dt_ref = time.perf_counter() - t0
    ref_rate = n_ref / dt_ref
    imgs = np.asarray(imgs, dtype=np.float32)
    same = float(np.mean(imgs == ours))
    results.append({"name": "healpy GnomonicProj.projmap (reference)", "value": ref_rate,
                    "unit": "cutout-bands/s", "note": f"{n_ref} cutouts, {dt_ref / n_ref * 1e3:.3f} ms each"})
    results.append({"name": "speed ratio cut / projmap", "value": ours_rate / ref_rate, "unit": "x",
                    "note": "cut: last pass above"})
    results.append({"name": "pixels identical to projmap", "value": 100 * same, "unit": "%",
                    "note": "same HEALPix pixel chosen for each cutout pixel"})
    return results


def bench_ascii(tmp: Path, n_rows: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    results = []
    for ncol, name in ((20, "halo_nbody"), (48, "halo_sz")):
        rows = rng.uniform(0, 1, (n_rows, ncol)) * 10.0 ** rng.integers(-3, 15, ncol)
        p = tmp / f"{name}.ascii"
        write_sehgal_ascii(p, rows)
        read_sehgal_halos(p)  # warm the page cache
        dt, t = _time(read_sehgal_halos, p)
        assert len(t) == n_rows
        mb = os.path.getsize(p) / 1e6
        results.append({"name": f"read_sehgal_halos {name} ({ncol} columns)", "value": n_rows / dt,
                        "unit": "rows/s", "note": f"{n_rows} rows, {mb:.0f} MB, {dt:.2f} s"})
        dt_np, _ = _time(np.loadtxt, p)
        results.append({"name": f"numpy.loadtxt {name} (reference)", "value": n_rows / dt_np,
                        "unit": "rows/s", "note": f"{dt_np:.2f} s"})
    return results


def run(nside: int = 8192, n_cut: int = 10_000, n_ref: int = 50, n_rows: int = 200_000) -> list[dict]:
    """Run the benchmarks; one dict per measurement with keys name, value, unit, note."""
    with tempfile.TemporaryDirectory(prefix="szviewer-bench-") as tmp:
        tmp = Path(tmp)
        results = bench_healpix(tmp, nside, n_cut, n_ref)
        results += bench_ascii(tmp, n_rows)
    return results


def _print_table(results: list[dict]) -> None:
    w = max(len(r["name"]) for r in results)
    for r in results:
        print(f"{r['name']:<{w}}  {r['value']:>12.4g} {r['unit']:<15} {r['note']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Nside 2048, fewer cutouts and rows")
    args = ap.parse_args()
    if args.quick:
        _print_table(run(nside=2048, n_cut=2500, n_ref=20, n_rows=20_000))
    else:
        _print_table(run())
