"""szviewer's matched filter beside nemo (ACT's cluster finder; Hilton et al. 2021) on the same CAR maps.

One synthetic instrument sky is written as survey products in CAR (plate carree, 0.5' pixels, at the equator):
per band a map [uK_CMB], an inverse-variance map [1/uK^2 per pixel] and a beam transform file (``ell B_ell``, delta
ell = 1, as nemo reads it), and one mask. The sky: lensed CMB (beamed), the instrument noise of
:mod:`szviewer.sky.noise_maps` (default ``act-white``: the act-dr6 preset's bands, beams 2.0/1.4/1.0' and white
depths 15/14/50 uK-arcmin, uniform depth; ``NEMO_BENCH_INSTRUMENT=act-dr6`` for its 1/f and inhomogeneous depth),
and 25 Arnaud et al. (2010) clusters (nemo's own template family), 90' apart, of random M500 (1.5-8e14 Msun) and z
(0.2-1.0) for their shapes, scaled to an *ideal* S/N log-uniform in 5-30: the analytic multi-frequency matched
filter with the true noise power and each cluster's true pixel-integrated template
(:func:`szviewer.mf.injection.ideal_sigma_of`), which no finder can beat on average.

Matched settings: the same maps, ivar, beams, effective frequencies and mask; threshold S/N 4; noise from the maps
(nemo ``dataMap``, noiseGridArcmin 40; szviewer ``--noise data``, its default with ``--map``); no point-source
search. nemo runs 4 Arnaud filters (M500 1, 2, 4, 8e14 Msun at z = 0.4; ``NEMO_BENCH_FILTERS=16`` for the 16 of the
ACT DR6 search, z 0.2, 0.4, 0.8, 1.2: ~4x nemo's time; ``NEMO_BENCH_TWO_PASS=1`` for DR6's second pass with the
first pass's objects subtracted from the noise: ~2x), szviewer its 12 beta-model scales (0.25'-3') with its iterated
data noise. nemo runs as a
subprocess from its own virtual environment (``NEMO=/path/to/nemo``, else ``/tmp/nemo-venv/bin/nemo`` or ``nemo``
on PATH); without it the benchmark says so and skips. It is never a dependency of szviewer or its tests.

Printed for both: median S/N / ideal (S/N: nemo's ``SNR``, the best over its filters; szviewer's ``snr``),
completeness (clusters found within 1'), spurious detections at S/N >= 5 (more than 3' from every cluster), seconds
and core-seconds (CPU time of the process and its children) per deg^2. The nemo row is the reference measured in
the same process; szviewer's ratio is nemo's core-seconds over its own. Run ``python benchmarks/run.py nemo``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.fft
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

PIX = 0.5  # arcmin
SIDE = 900  # pixels: 7.5 deg
N_SIDE_CLUSTERS = 5
SPACING_ARCMIN = 90.0
SNR_RANGE = (5.0, 30.0)
THRESHOLD = 4.0
RA0 = 30.0
NEMO_FILTERS_16 = [(m, z) for z in (0.2, 0.4, 0.8, 1.2) for m in (1.0, 2.0, 4.0, 8.0)]


def find_nemo() -> str | None:
    for cand in (os.environ.get("NEMO"), "/tmp/nemo-venv/bin/nemo", shutil.which("nemo")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def instrument():
    from szviewer.sky.instrument_presets import load_instrument

    name = os.environ.get("NEMO_BENCH_INSTRUMENT", "act-white")
    inst = load_instrument("act-dr6")
    if name == "act-dr6":
        return inst
    if name != "act-white":
        return load_instrument(name)
    bands = tuple(dataclasses.replace(b, ell_knee=0.0, alpha_knee=0.0) for b in inst.bands)
    return dataclasses.replace(inst, name="act-white", bands=bands, depth_pattern="uniform", depth_contrast=1.0,
                               edge_apod_arcmin=0.0, hole_flux_mjy=0.0)


def make_sky(inst, seed: int = 12):
    """Maps (nb, n, n) uK, ivar (nb, n, n), truth dict, pixel-integrated clusters of known ideal S/N."""
    from szviewer.mf.injection import beam_transfers, ideal_sigma_of, paint_arnaud_real
    from szviewer.mf.selection_plan import arnaud_parameters
    from szviewer.sky.bands import tsz_uk_per_y
    from szviewer.sky.noise_maps import ivar_map, realise_noise, relative_hits
    from szviewer.sky.spectra import ARCMIN_RAD, cmb_lensed_dl, dl_to_cl, ell_grid

    rng = np.random.default_rng(seed)
    n = SIDE
    edge = (n - 1 - (N_SIDE_CLUSTERS - 1) * SPACING_ARCMIN / PIX) / 2
    g = edge + np.arange(N_SIDE_CLUSTERS) * SPACING_ARCMIN / PIX
    ys, xs = (a.ravel() + rng.uniform(-8, 8, a.size) for a in np.meshgrid(g, g, indexing="ij"))
    k = xs.size
    m500 = np.exp(rng.uniform(np.log(1.5e14), np.log(8e14), k))
    z = rng.uniform(0.2, 1.0, k)
    _, th500 = arnaud_parameters(m500, z)
    target = np.exp(rng.uniform(*np.log(SNR_RANGE), k))
    hits = None
    if inst.depth_pattern != "uniform":
        yy, xx = np.mgrid[0:n, 0:n]
        hits = relative_hits(inst, RA0 + (xx - n / 2) * PIX / 60, (yy - n / 2) * PIX / 60, seed=seed)
    sig = np.empty(k)
    grid = 512
    for i in range(k):
        prof = paint_arnaud_real((grid, grid), PIX, [grid / 2 + xs[i] % 1], [grid / 2 + ys[i] % 1], [1.0],
                                 [th500[i]])
        h = 1.0 if hits is None else float(hits[int(round(ys[i])), int(round(xs[i]))])
        sig[i] = ideal_sigma_of(inst, PIX, prof, hits=h)
    y0 = target * sig
    ymap = paint_arnaud_real((n, n), PIX, xs, ys, y0, th500)
    maps = realise_noise(inst, (n, n), PIX, rng, hits)
    ell = ell_grid(n, n, PIX)
    amp = np.sqrt(dl_to_cl(ell, cmb_lensed_dl(ell))) / (PIX * ARCMIN_RAD)
    cmb_k = scipy.fft.rfft2(rng.standard_normal((n, n))) * amp
    yk = scipy.fft.rfft2(ymap)
    b = beam_transfers([band.beam for band in inst.bands], (n, n), PIX)
    for i, band in enumerate(inst.bands):
        sky = scipy.fft.irfft2((cmb_k + float(tsz_uk_per_y(band.freq_ghz)) * yk) * b[i], s=(n, n))
        maps[i] += sky.astype(np.float32)
    ivar = ivar_map(inst, np.ones((n, n)) if hits is None else hits, PIX)
    truth = {"x": xs, "y": ys, "snr_ideal": target, "m500": m500, "z": z, "theta500": th500, "y0": y0}
    return maps.astype(np.float32), ivar.astype(np.float32), truth


def car_wcs(n: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    w.wcs.cdelt = [-PIX / 60.0, PIX / 60.0]
    w.wcs.crval = [RA0, 0.0]
    w.wcs.crpix = [n / 2 + 1, n / 2 + 1]
    return w


def write_products(folder: Path, inst, maps, ivar) -> dict:
    """CAR FITS per band (map, ivar), beam transform files, one mask (1 = use: 10' from the map edge)."""
    n = maps.shape[1]
    hdr = car_wcs(n).to_header()
    hdr["BUNIT"] = "uK"
    files = {}
    ell = np.arange(0, 30001)
    for i, band in enumerate(inst.bands):
        b = band.band
        fits.PrimaryHDU(maps[i], header=hdr).writeto(folder / f"map_{b}.fits", overwrite=True)
        ihdr = hdr.copy()
        ihdr["BUNIT"] = "1/uK^2"
        fits.PrimaryHDU(ivar[i], header=ihdr).writeto(folder / f"ivar_{b}.fits", overwrite=True)
        np.savetxt(folder / f"beam_{b}.txt", np.c_[ell, band.beam(ell.astype(float))], fmt="%d %.8e")
        files[b] = (folder / f"map_{b}.fits", folder / f"ivar_{b}.fits", folder / f"beam_{b}.txt", band.freq_ghz)
    mask = np.zeros((n, n), dtype=np.uint8)
    e = int(round(10.0 / PIX))
    mask[e:n - e, e:n - e] = 1
    fits.PrimaryHDU(mask, header=hdr).writeto(folder / "mask.fits", overwrite=True)
    return files


def nemo_config(files: dict, folder: Path, filters, two_pass: bool = False) -> Path:
    maps = "\n".join(
        f"    - {{mapFileName: \"{m}\", weightsFileName: \"{w}\", obsFreqGHz: {f}, units: 'uK', "
        f"beamFileName: \"{bm}\"}}" for m, w, bm, f in files.values())
    flt = "\n".join(f"    - {{label: \"Arnaud_M{m:g}e14_z{str(z).replace('.', 'p')}\", "
                    f"params: {{M500MSun: {m:.1f}e+14, z: {z}}}}}" for m, z in filters)
    # two passes as nemo's ACT DR6 search runs them: the second estimates the noise with the first's objects
    # subtracted (filterSets 10 -> 11), like szviewer's iterated data noise
    sets = ", filterSets: [10, 11]" if two_pass else ""
    set_opts = "filterSetOptions: {10: {}, 11: {noiseModelCatalogFromSets: [10]}}\n" if two_pass else ""
    text = f"""{set_opts}unfilteredMaps:
{maps}
surveyMask: "{folder / 'mask.fits'}"
thresholdSigma: {THRESHOLD}
minObjPix: 1
findCenterOfMass: True
useInterpolator: True
rejectBorder: 0
objIdent: 'BENCH'
longNames: False
photFilter: 'Arnaud_M2e14_z0p4'
allFilters: {{class: "ArnaudModelMatchedFilter",
             params: {{noiseParams: {{method: "dataMap", noiseGridArcmin: 40.}},
                      saveFilteredMaps: False, saveRMSMap: False, savePlots: False, saveDS9Regions: False,
                      outputUnits: 'yc', edgeTrimArcmin: 0.0}}{sets}}}
mapFilters:
{flt}
useTiling: False
calcSelFn: False
selFnOptions: {{fixedSNRCut: 5.0, method: 'fast', massLimitMaps: [{{z: 0.5}}], maxFlags: 0}}
"""
    path = folder / "bench.yml"
    path.write_text(text)
    return path


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_nemo(nemo: str, config: Path) -> tuple[Table, float, float, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    c0, t0 = _children_cpu(), time.perf_counter()
    out = subprocess.run([nemo, str(config)], cwd=config.parent, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    cat_path = config.parent / config.stem / f"{config.stem}_optimalCatalog.fits"
    if not cat_path.exists():
        raise RuntimeError(f"nemo failed ({out.returncode}): {(out.stderr or out.stdout)[-2000:]}")
    # nemo 0.9.0 without tiling writes its catalogue, then fails in the selection-function RMS tables (it looks for
    # an RMS map it only writes when stitching tiles): the detection work is done, so the catalogue is used
    note = "" if out.returncode == 0 else f"nemo exited {out.returncode} after writing its catalogue (RMS tables)"
    return Table.read(cat_path), wall, cpu, note


def run_szviewer(files: dict, folder: Path, noise: str = "data") -> tuple[Table, float, float]:
    from szviewer.cli import main

    args = ["mf", "--snr-threshold", str(THRESHOLD), "--noise", noise, "--no-find-sources",
            "--mask", str(folder / "mask.fits"), "--out", str(folder / f"szv_{noise}.fits"), "--overwrite"]
    for b, (m, w, bm, f) in files.items():
        args += ["--map", f"{b}={m}", "--ivar", f"{b}={w}", "--beam", f"{b}={bm}", "--freq", f"{b}={f}"]
    if noise == "model":
        args += ["--noise-uk-arcmin", ",".join(f"{b}={d}" for b, d in zip(files, _depths(), strict=True))]
    c0, t0 = time.process_time(), time.perf_counter()
    rc = main(args)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if rc != 0:
        raise RuntimeError(f"szviewer mf exited {rc}")
    return Table.read(folder / f"szv_{noise}.fits"), wall, cpu


def _depths():
    return [b.white_uk_arcmin for b in instrument().bands]


def score(cat: Table, truth: dict, ra_col: str, dec_col: str, snr_col: str) -> dict:
    """Median S/N / ideal, completeness within 1', spurious at S/N >= 5 (> 3' from every cluster)."""
    w = car_wcs(SIDE)
    x, y = w.all_world2pix(np.asarray(cat[ra_col], float), np.asarray(cat[dec_col], float), 0) if len(cat) \
        else (np.zeros(0), np.zeros(0))
    snr = np.asarray(cat[snr_col], float) if len(cat) else np.zeros(0)
    d = np.hypot(x[:, None] - truth["x"][None], y[:, None] - truth["y"][None]) * PIX  # (ncat, ntrue) arcmin
    ratios, offs = [], []
    for j in range(truth["x"].size):
        near = np.flatnonzero(d[:, j] <= 1.0) if len(cat) else np.zeros(0, int)
        if near.size:
            i = near[np.argmax(snr[near])]
            ratios.append(snr[i] / truth["snr_ideal"][j])
            offs.append(d[i, j])
    spurious = int(np.sum((snr >= 5.0) & (d.min(axis=1) > 3.0))) if len(cat) else 0
    return {"median_snr_over_ideal": float(np.median(ratios)) if ratios else float("nan"),
            "completeness": len(ratios) / truth["x"].size, "spurious_snr5": spurious,
            "median_offset_arcmin": float(np.median(offs)) if offs else float("nan"), "n_detections": len(cat)}


def _row(name, s, wall, cpu, area, ref_cpu=None, note_extra=""):
    row = {"name": name, "seconds": wall, "throughput": area / wall, "unit": "deg^2/s",
           "core_s_per_deg2": cpu / area, "s_per_deg2": wall / area, **s}
    if ref_cpu is not None:
        row["ratio_to_ref"] = ref_cpu / cpu
    row["note"] = (f"S/N/ideal {s['median_snr_over_ideal']:.3f}, complete {s['completeness']:.2f}, spurious(>=5) "
                   f"{s['spurious_snr5']}, {cpu / area:.3g} core-s/deg^2{note_extra}")
    return row


def run() -> list[dict]:
    nemo = find_nemo()
    inst = instrument()
    area = (SIDE * PIX / 60.0) ** 2
    with tempfile.TemporaryDirectory(prefix="bench_nemo_") as tmp:
        folder = Path(tmp)
        maps, ivar, truth = make_sky(inst)
        files = write_products(folder, inst, maps, ivar)
        rows = []
        ref_cpu = None
        if nemo is None:
            rows.append({"name": "nemo (reference)", "seconds": float("nan"),
                         "note": "skipped: nemo not found (install nemo-sz in its own venv; NEMO=/path/to/nemo)"})
        else:
            nf = int(os.environ.get("NEMO_BENCH_FILTERS", "4"))
            filters = NEMO_FILTERS_16 if nf >= 16 else [(m, 0.4) for m in (1.0, 2.0, 4.0, 8.0)]
            two = os.environ.get("NEMO_BENCH_TWO_PASS", "0") == "1"
            cat, wall, cpu, note = run_nemo(nemo, nemo_config(files, folder, filters, two))
            s = score(cat, truth, "RADeg", "decDeg", "SNR")
            ref_cpu = cpu
            rows.append(_row(f"nemo 0.9.0, {len(filters)} Arnaud filters, dataMap{', 2 passes' if two else ''} (ref)",
                             s, wall, cpu, area,
                             note_extra=f"; {note}" if note else ""))
        for noise in ("data", "model"):
            cat, wall, cpu = run_szviewer(files, folder, noise)
            s = score(cat, truth, "ra", "dec", "snr")
            extra = "; the paper's model holds sources, kSZ, SZ background these maps lack: off, and warned" \
                if noise == "model" else ""
            rows.append(_row(f"szviewer mf --map, 12 beta scales, {noise} noise", s, wall, cpu, area, ref_cpu,
                             note_extra=extra))
    for r in rows:
        r["sky"] = f"{inst.name}, {area:.0f} deg^2 CAR 0.5', {truth['x'].size} Arnaud clusters, ideal S/N 5-30"
    return rows


def main() -> None:
    rows = run()
    print(f"nemo vs szviewer: {rows[0].get('sky', '')}; {os.cpu_count()} CPUs")
    cols = ("finder", "S/N/ideal", "complete", "spur>=5", "offset'", "s/deg2", "core-s/deg2", "x nemo")
    print(f"{cols[0]:<58}" + "".join(f"{c:>12}" for c in cols[1:]))
    for r in rows:
        if "completeness" not in r:
            print(f"{r['name']:<58}  {r['note']}")
            continue
        vals = (f"{r['median_snr_over_ideal']:.3f}", f"{r['completeness']:.2f}", str(r["spurious_snr5"]),
                f"{r['median_offset_arcmin']:.2f}", f"{r['s_per_deg2']:.3g}", f"{r['core_s_per_deg2']:.3g}",
                "-" if r.get("ratio_to_ref") is None else f"{r['ratio_to_ref']:.0f}")
        print(f"{r['name'][:57]:<58}" + "".join(f"{v:>12}" for v in vals))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
