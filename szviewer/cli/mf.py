"""``szviewer mf``: the matched filter on a workspace, its selection function by injection, or on FITS maps."""

from __future__ import annotations

import argparse

from szviewer.cli.common import add_executor_flags, band_freqs, band_items, band_values, executor, progress_bar
from szviewer.errors import SzviewerError


def _options(args):
    """The flags' :class:`~szviewer.jobs.mf_maps.MFOptions`."""
    from szviewer.jobs.mf_maps import MFOptions

    return MFOptions(snr_threshold=args.snr_threshold, noise_mode=args.noise, find_point_sources=args.find_sources,
                     beam_fwhm_arcmin=band_values(args.beam_fwhm, "--beam-fwhm"),
                     noise_uk_arcmin=band_values(args.noise_uk_arcmin, "--noise-uk-arcmin"))


def _print_check(check: dict) -> None:
    """The S/N maps' rms check (robust rms away from candidates), and its warning if any."""
    if check.get("snr_rms_median") is not None:
        print(f"S/N maps: robust rms {check['snr_rms_median']:.3f} away from candidates (should be 1)")
    if check.get("warning"):
        print(f"WARNING: {check['warning']}")


def _inject(args, ws, settings) -> int:
    """``szviewer mf WS --inject N [--seed S]``: the selection function by injection (product mf_injection)."""
    from szviewer.jobs.mf_injection import INJECTIONS, run_injection_on_workspace
    from szviewer.mf.selection_plan import InjectionSettings

    try:
        inj = InjectionSettings(n=args.inject, seed=args.seed, arnaud_frac=args.inject_arnaud_frac)
    except ValueError as exc:
        raise SzviewerError(f"--inject: {exc}") from None
    with executor(args) as ex, progress_bar("mf inject") as bar:
        s = run_injection_on_workspace(ws, settings, inj, progress=bar, overwrite=args.overwrite, executor=ex)
    c5 = s.get("completeness_snr_true_ge_5")
    print(f"{s['n_injected']} clusters injected ({s['n_beta']} beta model, {s['n_arnaud']} Arnaud) in {s['rounds']} "
          f"round(s), {s['noise_mode']} noise; {s['n_recovered']} recovered within {s['match_arcmin']:g}' at "
          f"S/N >= {s['snr_cut']:g}; {s['seconds']:.1f} s")
    if c5 is not None:
        print(f"completeness at noise-free S/N >= 5: {c5:.3f}; recovered/true S/N median {s['snr_ratio_median']} "
              f"(16-84%: {s['snr_ratio_p16']}-{s['snr_ratio_p84']}); offset median {s['offset_median_arcmin']}', "
              f"90% {s['offset_p90_arcmin']}'")
    print(f"table: {ws.file('mf_injection', INJECTIONS)}")
    return 0


def _on_maps(args) -> int:
    """``szviewer mf --map 90=A --map 148=B ... --out CATALOG``."""
    from szviewer.jobs.mf_maps import run_mf_on_maps

    if not args.out:
        raise SzviewerError("--map needs --out CATALOG (.ecsv or .fits)")
    maps = band_items(args.map, "--map", "90=map_090.fits")
    ivar = band_items(args.ivar, "--ivar", "90=ivar_090.fits")
    beams = band_items(args.beam, "--beam", "90=1.6")
    options = _options(args)
    with progress_bar("mf") as bar:
        s = run_mf_on_maps(maps, args.out, options, ivar=ivar, beams=beams, freqs=band_freqs(args.freq),
                           mask=args.mask, overwrite=args.overwrite, progress=bar)
    print(f"{s['candidates']} candidates at S/N >= {s['snr_threshold']:g} ({s['noise_mode']} noise) -> {s['out']}")
    _print_check(s)
    return 0


def cmd_mf(args) -> int:
    if args.map and args.inject is not None:
        raise SzviewerError("--inject runs on a workspace (szviewer mf WS --inject N): import the maps first "
                            "(szviewer import --fits ...)")
    if args.map:
        return _on_maps(args)
    if not args.workspace:
        raise SzviewerError("give a workspace (szviewer mf WS) or maps (--map 90=A --map 148=B --map 219=C --out F)")
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    settings = _options(args).settings(ws.bands)
    if args.inject is not None:
        return _inject(args, ws, settings)
    with executor(args) as ex, progress_bar("mf") as bar:
        s = run_mf_on_workspace(ws, settings, progress=bar, overwrite=args.overwrite, executor=ex)
    print(f"{s['detections']} detections at S/N >= {settings.snr_threshold:g} ({s.get('noise_mode', '')} noise); "
          f"{s['cutouts_with_detection']} cutouts hold one; {s['positives_detected']} of {s['positives']} positive "
          f"cutouts detected; {s['seconds']:.1f} s")
    _print_check(s)
    print(f"catalog: {ws.file('mf', 'mf_catalog.fits')}; score column mf_snr in {ws.file('mf', 'scores.h5')}")
    return 0


def add_mf(sub) -> None:
    s = sub.add_parser("mf", help="run the multi-frequency matched filter on a workspace or on FITS maps")
    s.add_argument("workspace", nargs="?", help="workspace: writes mf_catalog.fits and the mf_snr scores")
    s.add_argument("--map", action="append", metavar="BAND=FILE",
                   help="flat-sky FITS map in uK_CMB (per band; any number of bands)")
    s.add_argument("--ivar", action="append", metavar="BAND=FILE",
                   help="with --map: the band's inverse-variance map (1/uK^2 per pixel): weights the maps by depth "
                        "and normalises the S/N locally")
    s.add_argument("--beam", action="append", metavar="BAND=FWHM_OR_FILE",
                   help="with --map: the band's beam, a FWHM in arcmin or an `ell B_ell` file")
    s.add_argument("--freq", action="append", metavar="BAND=GHZ",
                   help="with --map: the band's effective frequency for the tSZ spectrum (default: the band id)")
    s.add_argument("--mask", metavar="FILE", help="with --map: one mask on the maps' grid (1 = use, 0 = masked)")
    s.add_argument("--out", metavar="CATALOG", help="with --map: the catalog to write (.ecsv or .fits)")
    s.add_argument("--beam-fwhm", metavar="90=..,148=..,219=..",
                   help="Gaussian beams in arcmin per band (default: the workspace's or --beam; else none)")
    s.add_argument("--noise", choices=["model", "data"], default=None,
                   help="data: the maps' own noise, iterated with the bright clusters subtracted (default with "
                        "--map); model: the paper's analytic noise with the instrument's depths and 1/f (default on a "
                        "workspace); the run checks the S/N maps' rms and says when the model does not fit")
    s.add_argument("--snr-threshold", type=float, default=3.0, help="peak threshold (default 3)")
    s.add_argument("--noise-uk-arcmin", metavar="90=..,148=..,219=..",
                   help="with --map and model noise: white-noise depth per band (default the paper's 2.8, 2.6, 6.6 "
                        "for 90/148/219 GHz)")
    s.add_argument("--find-sources", action=argparse.BooleanOptionalAction, default=None,
                   help="find point sources in the maps (beam-scale filter) and subtract them before the cluster "
                        "filter (default: on with --map; a workspace subtracts its source catalogue)")
    s.add_argument("--inject", type=int, default=None, metavar="N",
                   help="selection function: inject N clusters (beta model and Arnaud profiles) into the workspace's "
                        "maps in memory, rerun the filter, match within 1'; writes the product mf_injection")
    s.add_argument("--seed", type=int, default=0, help="with --inject: seed of the injections (default 0)")
    s.add_argument("--inject-arnaud-frac", type=float, default=0.3, metavar="F",
                   help="with --inject: fraction of Arnaud-profile clusters (M500, z), the rest beta models "
                        "(default 0.3)")
    s.add_argument("--overwrite", action="store_true")
    add_executor_flags(s)
    s.set_defaults(func=cmd_mf)
