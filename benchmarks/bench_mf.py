"""Benchmark of the multi-frequency matched filter (szviewer.mf): 12 filters x 3 bands at 0.25' pixels.

Rows (``run() -> list[dict]``):

* ``naive per-scale reference`` -- a straightforward implementation on one 4 x 4 deg tile: numpy.fft complex
  FFTs in float64, and for every scale its own N^-1 tau and one inverse FFT per band (12 x 3).
* ``filter bank, one tile`` -- the same S/N maps with ``MatchedFilterBank`` (rfft2, float32, scipy.fft with 2
  workers, N^-1 reused across scales: 3 forward + 12 inverse real FFTs). Its ratio to the naive reference.
* ``run_mf one tile`` -- the whole pipeline on a 4 x 4 deg map (masking, apodisation, filtering, peaks,
  catalog).
* ``run_mf tiled`` -- a 16 x 16 deg map in 16 overlapping tiles, analytic noise model; the same with the
  data-based noise (``noise_mode='data'``), and with point sources found and subtracted in each tile.
* ``filter bank build`` -- building the analytic-model filters for one tile shape (done once per run).

Each row gives seconds, square degrees per second, peak memory (tracemalloc in a separate run: what the step
allocates beyond its input; the last row: max RSS of a fresh process running the tiled case on a memory-mapped
map) and the extrapolated time for the 5,157 deg^2 octant; the project's target is <= 10 min
(>= 8.6 deg^2/s) and <= 6 GB.
Run ``python benchmarks/bench_mf.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tracemalloc

import numpy as np
from timing import best_time

from szviewer.mf import MFSettings, paint_clusters, run_mf
from szviewer.mf.filter import model_filter_bank
from szviewer.mf.noise import model_noise_power
from szviewer.mf.profiles import profile_fourier, spectral_beams
from szviewer.sky.bands import BANDS_GHZ, noise_sigma_uk
from szviewer.sky.spectra import cmb_lensed_dl, dl_to_cl, gaussian_field

PIX = 0.25
DEPTH = (2.8, 2.6, 6.6)
OCTANT_DEG2 = 5157.0


def make_maps(n: int, seed: int = 0, n_clusters: int = 40) -> np.ndarray:
    """CMB + white noise + beta-model clusters, (3, n, n) float32 uK."""
    rng = np.random.default_rng(seed)
    sig = np.array([noise_sigma_uk(b, PIX, d) for b, d in zip(BANDS_GHZ, DEPTH, strict=True)], np.float32)
    maps = rng.standard_normal((3, n, n), dtype=np.float32) * sig[:, None, None]
    maps += gaussian_field(rng, (n, n), PIX, lambda ell: dl_to_cl(ell, cmb_lensed_dl(ell)))[None]
    xs, ys = rng.uniform(0, n, n_clusters), rng.uniform(0, n, n_clusters)
    maps += paint_clusters((n, n), PIX, xs, ys, rng.uniform(2e-5, 1e-4, n_clusters),
                           rng.choice(MFSettings().theta_c_arcmin, n_clusters), BANDS_GHZ,
                           (0, 0, 0)).astype(np.float32)
    return maps


def naive_snr_maps(maps: np.ndarray, settings: MFSettings) -> np.ndarray:
    """Reference: per scale, N^-1 tau per band and one complex inverse FFT per band (numpy.fft, float64)."""
    nb, ny, nx = maps.shape
    npix = ny * nx
    # full-plane noise covariance and its inverse (the rfft half is mirrored for the reference)
    half = model_noise_power((ny, nx), PIX, settings, DEPTH)
    ky = (-np.arange(ny)) % ny
    full = np.concatenate([half, half[:, :, ky, 1:nx - nx // 2][..., ::-1]], axis=-1)
    ninv = np.moveaxis(np.linalg.inv(np.moveaxis(full, (0, 1), (-2, -1))), (-2, -1), (0, 1))
    ghalf = spectral_beams((ny, nx), PIX, settings.bands_ghz, settings.beam_fwhm_arcmin,
                           settings.pixel_window)
    mk = np.fft.fft2(maps.astype(np.float64), axes=(-2, -1))
    out = np.empty((len(settings.theta_c_arcmin), ny, nx))
    for s, tc in enumerate(settings.theta_c_arcmin):
        phalf = profile_fourier((ny, nx), PIX, tc)
        th = ghalf * phalf[None]
        tau = np.concatenate([th, th[:, ky, 1:nx - nx // 2][..., ::-1]], axis=-1)
        psi = np.einsum("ijyx,jyx->iyx", ninv, tau)
        psi[:, 0, 0] = 0.0
        sigma = 1.0 / np.sqrt(np.sum(tau * psi).real / npix)
        y = np.zeros((ny, nx))
        for i in range(nb):
            y += np.fft.ifft2(sigma**2 * psi[i] * mk[i]).real
        out[s] = y / sigma
    return out




def _peak_mb(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _row(name: str, seconds: float, area_deg2: float, peak_mb: float | None, **extra) -> dict:
    rate = area_deg2 / seconds
    row = dict(name=name, seconds=seconds, area_deg2=area_deg2, deg2_per_s=rate, peak_mb=peak_mb,
               octant_min=OCTANT_DEG2 / rate / 60.0)
    row.update(extra)
    return row


def run(big_deg: float = 16.0) -> list[dict]:
    settings = MFSettings()
    rows = []
    tile_n = int(round(4 * 60 / PIX))  # 4 deg = 960 pixels
    tile_maps = make_maps(tile_n, seed=1, n_clusters=10)
    area_tile = (tile_n * PIX / 60) ** 2

    # filter bank build (cold, one tile shape)
    def build():
        model_filter_bank.cache_clear()
        model_filter_bank((tile_n, tile_n), PIX, settings, DEPTH)
    rows.append(_row("filter bank build (960^2, 12 scales)", best_time(build, 1), area_tile, _peak_mb(build)))

    bank = model_filter_bank((tile_n, tile_n), PIX, settings, DEPTH)
    t_naive = best_time(lambda: naive_snr_maps(tile_maps, settings), 1)
    rows.append(_row("naive per-scale reference, 4x4 deg", t_naive, area_tile,
                     _peak_mb(lambda: naive_snr_maps(tile_maps, settings))))

    def fast():
        for _s, _m in bank.iter_snr(tile_maps):
            pass
    t_fast = best_time(fast, repeat=3)
    # same answer as the reference
    ref = naive_snr_maps(tile_maps, settings)
    _, _, snr = bank.apply(tile_maps)
    max_diff = float(np.abs(ref - snr).max())
    rows.append(_row("filter bank S/N maps, 4x4 deg", t_fast, area_tile, _peak_mb(fast),
                     speedup_vs_naive=t_naive / t_fast, max_abs_snr_diff=max_diff))

    run_one = lambda: run_mf(tile_maps, None, PIX, settings)  # noqa: E731
    run_one()  # warm the filter-bank cache for the padded tile shape
    rows.append(_row("run_mf one tile, 4x4 deg (1 tile)", best_time(run_one, repeat=2), area_tile,
                     _peak_mb(run_one), n_candidates=len(run_one())))

    big_n = int(round(big_deg * 60 / PIX))
    big = make_maps(big_n, seed=2, n_clusters=200)
    area_big = (big_n * PIX / 60) ** 2
    model_filter_bank.cache_clear()
    run_big = lambda: run_mf(big, None, PIX, settings)  # noqa: E731
    t_big = best_time(run_big, 1)  # cold: includes building the filters once
    cat = run_big()
    rows.append(_row(f"run_mf tiled, {big_deg:g}x{big_deg:g} deg, model noise", t_big, area_big,
                     _peak_mb(run_big), n_tiles=cat.meta["n_tiles"], tile_shape=cat.meta["tile_shape"],
                     map_mb=big.nbytes / 2**20, n_candidates=len(cat)))
    data = settings.replace(noise_mode="data")
    run_data = lambda: run_mf(big, None, PIX, data)  # noqa: E731
    rows.append(_row(f"run_mf tiled, {big_deg:g}x{big_deg:g} deg, data noise", best_time(run_data, 1), area_big,
                     None, n_candidates=len(run_data())))
    finder = settings.replace(find_point_sources=True)
    run_find = lambda: run_mf(big, None, PIX, finder)  # noqa: E731
    rows.append(_row(f"run_mf tiled, {big_deg:g}x{big_deg:g} deg, + finding sources", best_time(run_find, 1),
                     area_big, None))
    rows.append(_subprocess_rss(big, area_big))
    return rows


def _subprocess_rss(maps: np.ndarray, area_deg2: float) -> dict:
    """The tiled run in a fresh process reading the maps from a memory-mapped .npy: its maximum resident set
    (imports, filters, one tile at a time, the pages of the map it touched) is what an octant run would need
    beyond its tile reader. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maps.npy")
        np.save(path, maps)
        code = (
            "import json, time, numpy as np\n"
            "from szviewer.mf import MFSettings, run_mf\n"
            f"m = np.load({path!r}, mmap_mode='r')\n"
            "t0 = time.perf_counter()\n"
            "cat = run_mf(m, None, 0.25, MFSettings())\n"
            "dt = time.perf_counter() - t0\n"
            "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
            "rss = int(hwm[0].split()[1]) / 1024 if hwm else float('nan')\n"
            "print(json.dumps(dict(seconds=dt, rss=rss)))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return _row("run_mf tiled, memory-mapped input, fresh process", res["seconds"], area_deg2, res["rss"],
                peak_is="max RSS of the whole process")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if not np.isfinite(v) else f"{v:.3g}"
    return "-" if v is None else str(v)


def main() -> None:
    rows = run()
    print(f"matched filter benchmark: 12 scales x 3 bands, {PIX}' pixels, {os.cpu_count()} CPUs")
    cols = ["name", "seconds", "deg2_per_s", "peak_mb", "octant_min"]
    print(" | ".join(f"{c:>12}" if c != "name" else f"{c:<48}" for c in cols))
    for r in rows:
        print(" | ".join(f"{_fmt(r.get(c)):>12}" if c != "name" else f"{r[c]:<48}" for c in cols))
        extra = {k: v for k, v in r.items() if k not in cols and k != "area_deg2"}
        if extra:
            print("    " + ", ".join(f"{k}={_fmt(v)}" for k, v in extra.items()))


if __name__ == "__main__":
    main()
