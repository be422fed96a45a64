"""The matched filter's S/N against the ideal filter on injection maps of every noise type (the MF issue's targets).

For each instrument preset (``spt3g-paper`` with SPT-3G beams: white; ``spt3g``: anisotropic atmospheric 1/f in
scan stripes; ``act-dr6``: correlated 1/f and inhomogeneous depth; ``so-lat`` and ``cmbs4-wide``: 1/f), seeds the
project's tests never use (101, 102) make 10 x 10 deg maps at 0.5' pixels (the CMB, one noise realisation of the
preset through :func:`szviewer.sky.noise_maps.realise_noise`, 36 beta-model clusters 90' apart, theta_c 0.5'-3',
ideal S/N log-uniform 6-35 at the cluster's own depth). The ideal S/N is the analytic multi-frequency matched
filter with the TRUE noise power and the cluster's own template (:func:`szviewer.mf.injection.ideal_sigma`), which
no finder beats on average; it is not our filter.

Printed per preset and noise mode (``data``: the maps' own iterated noise, the default with ``--map``; ``model``:
the analytic model with the preset's depths and 1/f, right here because the maps hold nothing else): median S/N
over the ideal (target 0.97-1.03), the fraction of clusters found within 1' (target: all), the median and the
largest position offset [arcmin] (targets <= 0.25', < 1'), and the robust rms of the S/N maps away from candidates
(1 when the noise is right). The reference row is one ``run_mf`` on the first sky (seconds), for the ratios.
Run ``python benchmarks/run.py mf_calibration`` (about 3 min on 2 cores).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

PIX = 0.5
SIDE = 1200  # pixels: 10 deg
SEEDS = (101, 102)
PRESETS = ("spt3g-paper+beams", "spt3g", "act-dr6", "so-lat", "cmbs4-wide")


def instrument(name: str):
    from szviewer.sky.beams import Beam
    from szviewer.sky.instrument_presets import load_instrument

    if name == "spt3g-paper+beams":  # the paper's white depths with the SPT-3G beams (the reproduction)
        inst = load_instrument("spt3g-paper")
        bands = tuple(dataclasses.replace(b, beam=Beam.gaussian(f))
                      for b, f in zip(inst.bands, (1.6, 1.2, 1.1), strict=True))
        inst = dataclasses.replace(inst, name=name, bands=bands)
    else:
        inst = load_instrument(name)
    return dataclasses.replace(inst, pixel_arcmin=PIX)


def settings_for(inst, mode: str):
    """Settings matched to the preset: its bands, beams and 1/f; no foreground terms (the maps hold none)."""
    from szviewer.mf import MFSettings

    return MFSettings(bands_ghz=inst.freqs_ghz,
                      beam_fwhm_arcmin=tuple(b.beam.fwhm_equivalent_arcmin() for b in inst.bands),
                      snr_threshold=4.0, ksz_dl_uk2=0.0, ps_dl3000_uk2=(0.0,) * len(inst.bands),
                      szbg_dl3000_uk2_90=0.0, noise_ell_knee=tuple(b.ell_knee for b in inst.bands),
                      noise_alpha_knee=tuple(b.alpha_knee for b in inst.bands),
                      noise_atm_correlation=inst.atmosphere_correlation, noise_anisotropy=inst.anisotropy,
                      noise_mode=mode)


def sky_for(inst, seed: int, cache: dict):
    from szviewer.mf.injection import make_test_sky
    from szviewer.sky.noise_maps import relative_hits

    hits = None
    if inst.depth_pattern != "uniform":
        yy, xx = np.mgrid[0:SIDE, 0:SIDE]
        hits = relative_hits(inst, 30.0 + (xx - SIDE / 2) * PIX / 60, (yy - SIDE / 2) * PIX / 60, seed=seed)
    return make_test_sky(inst, (SIDE, SIDE), seed, n_clusters=36, spacing_arcmin=90, hits=hits, sigma_cache=cache)


def measure(sky, settings, inst) -> dict:
    from szviewer.mf import run_mf
    from szviewer.mf.injection import match_truth

    t0 = time.perf_counter()
    cat = run_mf(sky.maps, None, sky.pixel_arcmin, settings, noise_uk_arcmin=[b.white_uk_arcmin for b in inst.bands],
                 ivar=sky.ivar)
    seconds = time.perf_counter() - t0
    row, dist = match_truth(np.asarray(cat["x"]), np.asarray(cat["y"]), np.asarray(cat["snr"]), sky.truth,
                            sky.pixel_arcmin)
    ok = row >= 0
    return {"ratio": np.asarray(cat["snr"])[row[ok]] / sky.truth["snr_ideal"][ok], "found": ok,
            "offset": dist[ok], "rms": list(cat.meta.get("snr_rms") or []), "seconds": seconds}


def run() -> list[dict]:
    rows: list[dict] = []
    ref = None
    for name in PRESETS:
        inst = instrument(name)
        cache: dict = {}
        skies = [sky_for(inst, seed, cache) for seed in SEEDS]
        modes = ("data", "model")
        for mode in modes:
            got = [measure(sky, settings_for(inst, mode), inst) for sky in skies]
            if ref is None:
                ref = got[0]["seconds"]
                rows.append({"name": f"reference: run_mf, {name}, {mode} noise, one {SIDE * PIX / 60:.0f} deg map",
                             "seconds": ref, "throughput": (SIDE * PIX / 60) ** 2 / ref, "unit": "deg^2/s"})
            ratio = np.concatenate([g["ratio"] for g in got])
            found = np.concatenate([g["found"] for g in got])
            off = np.concatenate([g["offset"] for g in got])
            rms = [v for g in got for v in g["rms"]]
            sec = float(np.mean([g["seconds"] for g in got]))
            rows.append({
                "name": f"{name}, {mode} noise: median S/N / ideal", "seconds": sec,
                "throughput": float(np.median(ratio)), "unit": "S/N / ideal",
                "target": "0.97-1.03", "ratio_to_ref": sec / ref,
                "note": (f"found within 1': {int(found.sum())}/{found.size}; offsets median {np.median(off):.3f}', "
                         f"max {off.max():.2f}'; 16-84%: {np.percentile(ratio, 16):.3f}-{np.percentile(ratio, 84):.3f}"
                         + (f"; S/N-map rms {min(rms):.3f}-{max(rms):.3f}" if rms else "")),
            })
    return rows


if __name__ == "__main__":
    from run import print_table

    print_table(run(), "mf_calibration")
