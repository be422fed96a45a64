"""``szviewer``: the desktop app, and every step of the pipeline headless.

Exit status: 0 done; 2 bad input or refused output (one line naming the file and the problem); 130 cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path

from szviewer import __version__
from szviewer.errors import Cancelled, SzviewerError


def _band_values(text: str | None, what: str) -> dict[int, float]:
    """Parse '90=1.6,148=1.2,219=1.1' into {90: 1.6, ...}: finite values >= 0, each band once."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        try:
            band, value = part.split("=")
            b, v = int(band), float(value)
        except ValueError:
            raise SzviewerError(f"{what}: cannot read {part!r}; expected BAND=VALUE, e.g. 90=1.6") from None
        if not (math.isfinite(v) and v >= 0):
            raise SzviewerError(f"{what} {part}: the value must be a finite number >= 0")
        if b in out:
            raise SzviewerError(f"{what}: band {b} is given twice ({b}={out[b]:g} and {part})")
        out[b] = v
    return out


def _band_paths(items: list[str] | None, flag: str = "--map") -> dict[int, str]:
    """Repeated ``--map BAND=PATH`` options; a band given twice is an error."""
    return _band_items(items, flag, "90=map_090.fits")


@contextlib.contextmanager
def _progress(desc: str):
    """A tqdm progress callback for one job, closed when the job ends (or fails)."""
    from szviewer.progress import TqdmProgress

    bar = TqdmProgress(desc, disable=False)
    try:
        yield bar
    finally:
        bar.close()


def _add_executor_flags(s) -> None:
    """--workers / --scheduler: where the tile tasks run (:mod:`szviewer.parallel`)."""
    s.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run the tiles on a local Dask cluster of N worker processes, one thread each (default 0: "
                        "in this process)")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tiles on an existing Dask cluster: its scheduler address (tcp://host:8786) or "
                        "scheduler file (dask-jobqueue, `dask scheduler --scheduler-file`)")


@contextlib.contextmanager
def _executor(args):
    """The executor that --workers/--scheduler ask for; a Dask cluster says its scheduler and dashboard."""
    from szviewer.parallel import ExecutorSettings, make_executor

    settings = ExecutorSettings(workers=getattr(args, "workers", 0) or 0, scheduler=getattr(args, "scheduler", None))
    ex = make_executor(settings)
    try:
        if settings.distributed:
            print(f"szviewer: {ex.describe()}", file=sys.stderr, flush=True)
        yield ex
    finally:
        ex.close()


def _summary_line(summary: dict) -> str:
    """A job summary's scalar entries as 'key value, ...'."""
    return ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (dict, list)))


# ----------------------------------------------------------------------------------------------- commands

def cmd_simulate(args) -> int:
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.skycard import format_card
    from szviewer.sky.synthetic import SimulationSettings

    if args.area is not None and not (math.isfinite(args.area) and 0 < args.area <= 41253.0):
        raise SzviewerError(f"--area {args.area}: must be a positive, finite number of deg^2, at most the full sky "
                            "(41,253)")
    if args.list_instruments:
        from szviewer.sky.instruments import instrument_names, load_instrument

        for name in instrument_names():
            print(f"{name:<14} {load_instrument(name).description}")
        return 0
    if not args.out:
        raise SzviewerError("simulate needs --out WS")
    settings = SimulationSettings(seed=args.seed, area_deg2=args.area or 100.0, octant=args.octant,
                                  instrument=args.instrument,
                                  beam_fwhm_arcmin=_band_values(args.beam_fwhm, "--beam-fwhm"))
    with _executor(args) as ex, _progress("simulate") as bar:
        card = simulate_workspace(args.out, settings, overwrite=args.overwrite, progress=bar, executor=ex)
    print(format_card(card))
    print(f"\nworkspace {args.out}: {card['seconds']:.1f} s ({card['seconds_per_100deg2']:.1f} s per 100 deg^2)")
    return 0


def _band_items(items: list[str] | None, flag: str, example: str) -> dict[int, str]:
    """Repeated ``flag BAND=VALUE`` options as {band: value}; a band given twice is an error."""
    out: dict[int, str] = {}
    for item in items or []:
        band_text, sep, value = item.partition("=")
        try:
            band = int(band_text)
        except ValueError:
            band = 0
        if not sep or band <= 0 or not value.strip():
            raise SzviewerError(f"{flag} {item!r}: expected BAND=VALUE with BAND a positive integer in GHz, "
                                f"e.g. {flag} {example}")
        if band in out:
            raise SzviewerError(f"{flag} {band}={value}: band {band} is given twice (also {flag} {band}={out[band]})")
        out[band] = value
    return out


def _fits_sky_lines(summary: dict, hints: bool = False) -> list[str]:
    """Per band of a fits sky summary: map, frequency, beam, ivar and depth; then the mask's usable fraction."""
    lines = []
    for b, e in sorted(summary.get("bands", {}).items(), key=lambda item: int(item[0])):
        freq = f"freq {e['freq_ghz']:g} GHz" + ("" if e.get("freq_given") else
                                                 " (the band id" + (f": pass --freq {b}=GHz)" if hints else ")"))
        beam = f"beam {e['beam']}" if e.get("beam") else (
            "no beam recorded" + (f" (pass --beam {b}=FWHM_or_file)" if hints else ""))
        ivar = "no ivar map"
        if e.get("ivar"):
            d = e.get("depth_uk_arcmin")
            ivar = f"ivar {e['ivar']}" + (f", depth {d['median']:.3g} uK-arcmin (5-95%: {d['p5']:.3g}-{d['p95']:.3g})"
                                          if d else "")
        lines.append(f"  {b + ' GHz':<8} map {e.get('map', '?')}; {freq}; {beam}; {ivar}")
    mask = summary.get("mask")
    if mask:
        lines.append(f"  mask     {mask['file']}: {100 * mask['usable_fraction']:.1f}% of pixels usable "
                     f"(mean {mask['mean']:.3f})")
    if "usable_fraction" in summary:
        lines.append(f"  usable   {100 * summary['usable_fraction']:.1f}% of pixels (finite in every map, "
                     "ivar > 0, mask > 0)")
    return lines


def cmd_import(args) -> int:
    from szviewer.jobs.importing import import_agora, import_fits, import_sehgal, import_websky

    sources = [f for f, v in (("--sehgal", args.sehgal), ("--websky", args.websky), ("--agora", args.agora),
                              ("--fits", args.fits)) if v]
    if len(sources) != 1:
        raise SzviewerError("give one of --sehgal DIR, --websky DIR, --agora DIR or --fits BAND=MAP (once per band, "
                            "e.g. --fits 90=f090.fits)" + (f"; got {', '.join(sources)}" if sources else ""))
    extras = [f for f, v in (("--ivar", args.ivar), ("--beam", args.beam), ("--freq", args.freq),
                             ("--mask", args.mask)) if v]
    if not args.fits and extras:
        raise SzviewerError(f"{', '.join(extras)}: only with --fits maps, not with {sources[0]}")
    sim_only = [f for f, v in (("--cib", args.cib), ("--mass-floor", args.mass_floor)) if v is not None]
    if not (args.websky or args.agora) and sim_only:
        raise SzviewerError(f"{', '.join(sim_only)}: only with --websky or --agora")
    if args.cmb_alm and not args.websky:
        raise SzviewerError("--cmb-alm: only with --websky")
    if args.prefer and not args.agora:
        raise SzviewerError("--prefer: only with --agora")
    if args.fits and args.region:
        raise SzviewerError("--region: only with a HEALPix sky (--sehgal, --websky, --agora); FITS maps have their "
                            "own footprint")
    if args.fits:
        freqs = {}
        for b, text in _band_items(args.freq, "--freq", "90=97.8").items():
            try:
                freqs[b] = float(text)
            except ValueError:
                raise SzviewerError(f"--freq {b}={text}: not a number of GHz") from None
        summary = import_fits(_band_items(args.fits, "--fits", "90=f090.fits"), args.out, halo_file=args.halos,
                              overwrite=args.overwrite, ivar=_band_items(args.ivar, "--ivar", "90=ivar_f090.fits"),
                              beams=_band_items(args.beam, "--beam", "90=2.0 or 90=beam_f090.txt"), freqs=freqs,
                              mask=args.mask)
        f, bands = summary["footprint"], sorted(int(b) for b in summary["bands"])
        print(f"workspace {args.out}: {len(bands)} band(s) ({', '.join(str(b) for b in bands)} GHz), "
              f"{summary['pixel_arcmin']:g}' pixels, "
              f"{summary['shape'][0]} x {summary['shape'][1]}, RA {f[0]:.3f}-{f[1]:.3f}, Dec {f[2]:.3f}-{f[3]:.3f} "
              f"deg, halos {summary['halos']}")
        print("\n".join(_fits_sky_lines(summary, hints=True)))
        return 0
    region = None
    if args.region:
        from szviewer.sky.tiles import Footprint

        try:
            region = Footprint(*(float(v) for v in args.region.split(",")))
        except (TypeError, ValueError) as exc:
            raise SzviewerError(f"--region {args.region!r}: expected RA0,RA1,DEC0,DEC1 in degrees "
                                f"({exc})") from None
    floor = None
    if args.mass_floor is not None:
        if not (math.isfinite(args.mass_floor) and args.mass_floor >= 0):
            raise SzviewerError(f"--mass-floor {args.mass_floor}: must be a finite number >= 0 of Msun")
        floor = args.mass_floor
    try:
        if args.sehgal:
            summary = import_sehgal(args.sehgal, args.out, halo_file=args.halos, overwrite=args.overwrite,
                                    region=region)
        else:
            with _progress("import") as bar:
                if args.websky:
                    summary = import_websky(args.websky, args.out, halo_file=args.halos, overwrite=args.overwrite,
                                            region=region, cib=args.cib or "interp", mass_floor=floor,
                                            cmb_alm=args.cmb_alm, progress=bar)
                else:
                    summary = import_agora(args.agora, args.out, halo_file=args.halos, overwrite=args.overwrite,
                                           region=region, cib=args.cib or "interp", mass_floor=floor,
                                           prefer=tuple(args.prefer or ()), progress=bar)
    except ValueError as exc:
        raise SzviewerError(str(exc)) from None
    shown = {k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in summary.items()
             if k != "warning" and not isinstance(v, dict)}
    print(f"workspace {args.out}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for comp, bands in summary.get("recipes", {}).items():
        for band, parts in bands.items():
            print(f"  {comp:<6} {band:>4} GHz: {'; '.join(parts)}")
    if summary.get("warning"):
        print(f"szviewer: warning: {summary['warning']}", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    if args.clean:
        from szviewer.workspace import locks

        gone = locks.leftovers(ws.root) + [p for p in locks.leftovers(ws.root.parent, recursive=False)
                                           if p.name.startswith(f".{ws.root.name}.")]
        n = locks.remove(gone)
        print(f"removed {n} leftover(s) of killed runs" if n else "no leftovers of killed runs")
    print(describe_workspace(ws))
    return 0


def describe_workspace(ws) -> str:
    m = ws.manifest
    lines = [f"workspace {ws.root}  (schema {m['schema_version']}, made by szviewer {m['szviewer_version']})",
             f"  kind: {ws.kind}; bands {', '.join(str(b) for b in ws.bands)} GHz; pixels {ws.pixel_arcmin}'"]
    g = ws.geometry
    if "footprint" in g:
        f = g["footprint"]
        lines.append(f"  footprint: RA {f[0]:.3f}-{f[1]:.3f}, Dec {f[2]:.3f}-{f[3]:.3f} deg "
                     f"({g.get('area_deg2', float('nan')):.1f} deg^2, {g['type']})")
    lines.append("  products:")
    stale_lines = []
    for name, p in ws.products.items():
        why = ws.stale(name)
        ok = "FILES MISSING" if not ws.has(name) else "STALE" if why else "ok"
        summ = ", ".join(f"{k} {v}" for k, v in p.get("summary", {}).items()
                         if not isinstance(v, (list, dict)) and k != "warning")
        lines.append(f"    {name:<10} {ok:<5} {p.get('created', '?')}  {summ}")
        if why:
            stale_lines.append(f"    {name:<10} {'; '.join(why)}: refresh with `{ws.refresh_command(name)}`")
        if name == "cutouts":
            for s, c in p["summary"].get("splits", {}).items():
                lines.append(f"               {s:<5} {c['cutouts']:>8} cutouts, {c['positives']:>6} positive")
        if name == "mf_injection":
            from szviewer.jobs.selection import selection_summary_line

            lines.append("               " + selection_summary_line(p.get("summary", {})))
        warning = p.get("summary", {}).get("warning")
        if warning:
            lines.append(f"               WARNING: {warning}")
        if name == "sky" and ws.kind == "fits":
            lines += ["             " + line for line in _fits_sky_lines(p.get("summary", {}))]
    if stale_lines:
        lines.append("  stale (made from inputs that have changed since):")
        lines += stale_lines
    missing = ws.missing()
    if missing:
        lines.append("  still missing:")
        lines += [f"    {name:<10} make it with: {how}" for name, how in missing]
    elif not stale_lines:
        lines.append("  complete: every step has run")
    return "\n".join(lines)


def cmd_cutouts(args) -> int:
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.cutouts.grid import GridSettings
    from szviewer.cutouts.labels import LabelSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.workspace import Workspace

    if not (math.isfinite(args.stride_arcmin) and args.stride_arcmin > 0):
        raise SzviewerError(f"--stride-arcmin {args.stride_arcmin}: must be a positive, finite number of arcmin")
    ws = Workspace(args.workspace)
    levels = tuple(v.strip() for v in args.levels.split(",") if v.strip())
    if args.noise_seed is not None and ws.kind != "sehgal":
        raise SzviewerError(f"--noise-seed: a {ws.kind} workspace carries its own noise "
                            + ("(realised with the sky: `szviewer simulate --seed`)" if ws.kind == "synthetic"
                               else "(in the maps)") + "; only HEALPix (Sehgal) skies take a cutout noise seed")
    try:
        labels = LabelSettings.from_options(args.label_mass, args.label_min, args.label_zmin)
    except ValueError as exc:
        raise SzviewerError(str(exc)) from None
    settings = CutoutSettings(grid=GridSettings(stride_arcmin=args.stride_arcmin), levels=levels,
                              noise_seed=args.noise_seed or 0, labels=labels)
    try:
        with _progress("cutouts") as bar:
            s = make_cutouts(ws, settings, overwrite=args.overwrite, progress=bar)
    except ValueError as exc:
        raise SzviewerError(str(exc)) from None
    print(f"{s['cutouts']} cutouts ({s['grid_size']} in the grid, {s['removed_train_neighbours']} training "
          f"negatives next to a positive removed), {s['positives']} positive, in {s['seconds']:.1f} s")
    for name, c in s["splits"].items():
        frac = c["positives"] / c["cutouts"] if c["cutouts"] else 0.0
        print(f"  {name:<5} {c['cutouts']:>8} cutouts {c['positives']:>7} positive ({100 * frac:.2f}%)")
    where = {"tiles": "windows of the tiles' observed maps (no copies)", "fits": "windows of the FITS maps (no copies)",
             "healpix": "HEALPix samples cached in cutouts.h5"}.get(s.get("pixels"), s.get("pixels"))
    print(f"  components: {', '.join(s['components'])}; pixels: {where}")
    return 0


def cmd_evaluate(args) -> int:
    from szviewer.jobs.evaluate import evaluate_workspace
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    rows, text = evaluate_workspace(ws, json_path=args.json, report_dir=args.report, overwrite=args.overwrite,
                                    allow_stale=args.allow_stale)
    print(text)
    if args.report:
        print(f"\nreport: {Path(args.report) / 'report.html'}")
    return 0


def cmd_export(args) -> int:
    from szviewer.jobs.evaluate import export_candidates
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    try:
        res = export_candidates(ws, args.method, args.out, fmt=args.format, thresholds=args.threshold,
                                regions=args.regions, split=args.split, overwrite=args.overwrite,
                                allow_stale=args.allow_stale, rows=args.rows)
    except (ValueError, FileExistsError) as exc:
        raise SzviewerError(str(exc)) from None
    from szviewer.evaluate.policy import format_thresholds

    what = "objects" if res["kind"] == "objects" else "positive cutouts"
    print(f"wrote {res['rows']} {what} ({args.method.upper()}: {format_thresholds(res['thresholds'])}, "
          f"thresholds {res['threshold_source']}) to {res['out']}"
          + (f"; DS9 regions to {res['regions']}" if res["regions"] else ""))
    return 0


def cmd_export_maps(args) -> int:
    from szviewer.jobs.export_maps import export_maps
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    with _progress("export-maps") as bar:
        s = export_maps(ws, args.out, tiles=None if args.tile is None else [args.tile], overwrite=args.overwrite,
                        progress=bar)
    where = "" if len(s["tiles"]) == 1 else " (one folder per tile)"
    print(f"{args.out}: {len(s['tiles'])} tile(s) of {s['instrument']}{where}, bands "
          f"{', '.join(map(str, s['bands']))} GHz: map, ivar, beam per band, mask; {s['halos']} halos, "
          f"{s['sources']} sources; README.txt; {s['seconds']:.1f} s")
    print("read it back with:")
    print("\n".join(s["commands"]))
    return 0


def _mf_settings(args, bands, freqs=None):
    """MFSettings from the mf flags for maps of band ids ``bands`` (effective frequencies ``freqs``, default the
    ids). --noise defaults to the maps' own noise for --map and to the paper's model on a workspace."""
    from szviewer.mf.settings import MFSettings

    bands = tuple(int(b) for b in bands)
    beams = _band_values(args.beam_fwhm, "--beam-fwhm")
    unknown = sorted(set(beams) - set(bands))
    if unknown:
        raise SzviewerError(f"--beam-fwhm for band(s) {unknown}: the maps have bands {list(bands)}")
    noise = args.noise or ("data" if args.map else "model")
    kw = {"noise_mode": noise, "snr_threshold": args.snr_threshold,
          "find_point_sources": bool(args.map) if args.find_sources is None else args.find_sources,
          "bands_ghz": tuple(float((freqs or {}).get(b, b)) for b in bands),
          "beam_fwhm_arcmin": tuple(beams.get(b, 0.0) for b in bands)}
    try:
        return MFSettings(**kw)
    except ValueError as exc:
        raise SzviewerError(str(exc)) from None


def _print_mf_check(check: dict) -> None:
    """The S/N maps' rms check (robust rms away from candidates), and its warning if any."""
    if check.get("snr_rms_median") is not None:
        print(f"S/N maps: robust rms {check['snr_rms_median']:.3f} away from candidates (should be 1)")
    if check.get("warning"):
        print(f"WARNING: {check['warning']}")


def _mf_inject(args, ws, settings) -> int:
    """``szviewer mf WS --inject N [--seed S]``: the selection function by injection (product mf_injection)."""
    from szviewer.jobs.mf import INJECTIONS, run_injection_on_workspace
    from szviewer.mf.selection import InjectionSettings

    try:
        inj = InjectionSettings(n=args.inject, seed=args.seed, arnaud_frac=args.inject_arnaud_frac)
    except ValueError as exc:
        raise SzviewerError(f"--inject: {exc}") from None
    with _executor(args) as ex, _progress("mf inject") as bar:
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


def cmd_mf(args) -> int:
    if args.map and args.inject is not None:
        raise SzviewerError("--inject runs on a workspace (szviewer mf WS --inject N): import the maps first "
                            "(szviewer import --fits ...)")
    if args.map:
        return _mf_on_maps(args)
    if not args.workspace:
        raise SzviewerError("give a workspace (szviewer mf WS) or maps (--map 90=A --map 148=B --map 219=C --out F)")
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    settings = _mf_settings(args, ws.bands)
    if args.inject is not None:
        return _mf_inject(args, ws, settings)
    with _executor(args) as ex, _progress("mf") as bar:
        s = run_mf_on_workspace(ws, settings, progress=bar, overwrite=args.overwrite, executor=ex)
    print(f"{s['detections']} detections at S/N >= {settings.snr_threshold:g} ({s.get('noise_mode', '')} noise); "
          f"{s['cutouts_with_detection']} cutouts hold one; {s['positives_detected']} of {s['positives']} positive "
          f"cutouts detected; {s['seconds']:.1f} s")
    _print_mf_check(s)
    print(f"catalog: {ws.file('mf', 'mf_catalog.fits')}; score column mf_snr in {ws.file('mf', 'scores.h5')}")
    return 0


def _fits_safe_meta(meta: dict) -> dict:
    """Table metadata a FITS header can hold: short keys, scalars (everything else as JSON strings)."""
    import json

    keys = {"mf_settings": "MFSET", "snr_rms": "SNRRMS", "snr_rms_median": "RMSMED", "snr_rms_ok": "RMSOK",
            "warning": "MFWARN", "noise_iterations": "NITER", "noise_uk_arcmin": "DEPTHS", "pixel_arcmin": "PIXARCM",
            "depth_weighted": "IVARWT", "method": "METHOD", "n_tiles": "NTILES"}
    out = {}
    for k, v in meta.items():
        if k not in keys or v is None:
            continue
        out[keys[k]] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
    return out


def _mf_on_maps(args) -> int:
    import numpy as np

    from szviewer.atomic import atomic_path
    from szviewer.errors import OutputExistsError
    from szviewer.jobs.mf import BandStack, _beam_settings
    from szviewer.mf.runner import run_mf
    from szviewer.sky.fits_maps import open_fits_maps

    if not args.out:
        raise SzviewerError("--map needs --out CATALOG (.ecsv or .fits)")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(out)
    fmt = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits"}.get(out.suffix.lower())
    if fmt is None:
        raise SzviewerError(f"{out}: catalog must end in .ecsv or .fits")
    freqs = {b: float(v) for b, v in _band_items(args.freq, "--freq", "90=97.8").items()}
    sky = open_fits_maps(_band_paths(args.map), ivar=_band_items(args.ivar, "--ivar", "90=ivar_090.fits"),
                         mask=args.mask, beams=_band_items(args.beam, "--beam", "90=1.6"), freqs=freqs)
    settings = _mf_settings(args, sky.bands, sky.freqs_ghz)
    if not any(settings.beam_fwhm_arcmin) and any(sky.beams.get(b) is not None for b in sky.bands):
        settings = settings.replace(**_beam_settings([sky.beams.get(b) for b in sky.bands]))
    depth_given = _band_values(args.noise_uk_arcmin, "--noise-uk-arcmin")
    ivars = [sky.ivar(b) for b in sky.bands]
    ivar = BandStack(ivars) if all(v is not None for v in ivars) else None
    noise = None
    if depth_given or settings.noise_mode == "model":
        paper = {90: 2.8, 148: 2.6, 219: 6.6}
        missing = [b for b in sky.bands if b not in depth_given and b not in paper]
        if missing:
            raise SzviewerError(f"--noise model needs the white depth of band(s) {missing}: give --noise-uk-arcmin "
                                f"BAND=DEPTH, or use --noise data (the default with --map)")
        noise = [depth_given.get(b, paper.get(b)) for b in sky.bands]
    maps = sky.band_maps()
    for b, m in zip(sky.bands, maps, strict=True):
        if not np.isfinite(m).any():
            raise SzviewerError(f"{sky.files[b]}: every pixel of band {b} is NaN; there is nothing to filter")
    mask = None if sky.mask_file is None and ivar is None else ~sky.usable
    try:
        with _progress("mf") as bar:
            cat = run_mf(maps, sky.wcs, float(np.mean(sky.pixel_arcmin)), settings, noise_uk_arcmin=noise,
                         progress=lambda d, t: bar(d, t, "tiles"), mask=mask, ivar=ivar)
    except ValueError as exc:
        raise SzviewerError(str(exc)) from None
    check = {k: cat.meta.get(k) for k in ("snr_rms_median", "warning")}
    if fmt == "fits":
        cat.meta = _fits_safe_meta(dict(cat.meta))
    with atomic_path(out) as tmp:
        cat.write(tmp, format=fmt)
    print(f"{len(cat)} candidates at S/N >= {settings.snr_threshold:g} ({settings.noise_mode} noise) -> {out}")
    _print_mf_check(check)
    return 0


def cmd_gui(args) -> int:
    print("szviewer gui: start the app with the `szviewer` command (szviewer.launcher), which may load Qt",
          file=sys.stderr)
    return 2


def cmd_train(args) -> int:
    from tqdm import tqdm

    from szviewer.jobs.cnn import train_estimate, train_job
    from szviewer.progress import check_cancel
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    est = train_estimate(ws, preset=args.preset, level=args.level, device=args.device, seed=args.seed,
                         max_seconds=args.max_seconds, resume=args.resume)
    print(est["text"], flush=True)
    if args.estimate:
        return 0
    bar = None

    def progress(done: int, total: int, message: str = "") -> None:
        """One tqdm bar per stage (reading, training); the training stage counts the preset's steps and its
        ETA is the one train() measures ("at most ... left"), not tqdm's rate guess."""
        nonlocal bar
        check_cancel(None, "train")
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc="train", leave=False, file=sys.stderr, unit="step",
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        s = train_job(ws, preset=args.preset, level=args.level, device=args.device, resume=args.resume,
                      progress=progress, seed=args.seed, max_seconds=args.max_seconds,
                      checkpoint_seconds=args.checkpoint_seconds, overwrite=args.overwrite)
    finally:
        if bar is not None:
            bar.close()
    print(_summary_line(s))
    return 0


def cmd_predict(args) -> int:
    from szviewer.jobs.cnn import predict_job
    from szviewer.jobs.dense import dense_job
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    levels = [args.level]
    if args.all_levels:
        with ws.cutout_store() as st:
            levels = list(st.levels)
    for product in [f"cnn{'' if lv == 'all' else '_' + lv}" for lv in levels] + (["cnn_dense"] if args.dense else []):
        ws.check_replace(product, args.overwrite)  # every output checked before any scoring
    if args.dense:
        from szviewer.jobs.dense import dense_grid_pix

        dense_grid_pix(ws, "windowed" if args.windowed else "fcn", args.resolution_arcmin, args.stride_arcmin)
    with _progress("predict") as bar:
        for level in levels:
            s = predict_job(ws, model_path=args.model, level=level, device=args.device, precision=args.precision,
                            progress=bar, overwrite=args.overwrite)
            print(_summary_line(s))
        if args.dense:
            d = dense_job(ws, model_path=args.model, level=args.level, stride_arcmin=args.stride_arcmin,
                          device=args.device, precision=args.precision, progress=bar, overwrite=args.overwrite,
                          method="windowed" if args.windowed else "fcn",
                          resolution_arcmin=args.resolution_arcmin)
            print("dense: " + _summary_line(d))
    return 0


def demo_workspace_path() -> Path:
    from szviewer.jobs.demo import demo_workspace_path as path

    return path()


def cmd_main(args) -> int:
    """The main job: the demo workspace, every finder there is, the paper's Table 1."""
    from szviewer.jobs.demo import DemoSettings, build_demo
    from szviewer.sky.skycard import format_card
    from szviewer.workspace import Workspace

    path = Path(args.workspace) if args.workspace else demo_workspace_path()
    done = build_demo(path, DemoSettings(area_deg2=args.area, seed=args.seed), progress_for=_progress)
    if done["card"] is not None:
        print(format_card(done["card"]))
    ws = Workspace(path)
    print()
    print(describe_workspace(ws))
    print()
    if ws.scores():
        from szviewer.jobs.evaluate import evaluate_workspace

        _, text = evaluate_workspace(ws)
        print("\nTable 1 (thresholds chosen on validation, counts on test):")
        print(text)
    else:
        print("no finder has scored the cutouts yet, so there is no Table 1 to print")
    return 0


# ----------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="szviewer",
        description="Find SZ galaxy clusters in mm-wave maps: matched filter, DeepSZ CNN and their ensemble. "
                    "Without a subcommand: the desktop app where there is a display, otherwise the main job "
                    "headless (demo workspace, every finder, Table 1).")
    p.add_argument("--version", action="version", version=f"szviewer {__version__}")
    p.add_argument("--headless", action="store_true", help="run the main job without the app")
    p.add_argument("--workspace", help="workspace for the main job (default: $SZVIEWER_HOME/demo)")
    from szviewer.jobs.demo import DEMO_AREA_DEG2, DEMO_SEED

    p.add_argument("--area", type=float, default=DEMO_AREA_DEG2,
                   help=f"demo sky area [deg^2] (default {DEMO_AREA_DEG2:g})")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"demo sky seed (default {DEMO_SEED})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("simulate", help="make a synthetic Sehgal-like sky in a new workspace")
    s.add_argument("--out", help="workspace folder to create")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--area", type=float, default=None,
                   help="area in deg^2 (default 100; from ~8,100 a band of all RA about the equator, 41253 = the "
                        "full sky)")
    g.add_argument("--octant", action="store_true", help="RA 0-90, Dec 0-90 (5,157 deg^2), tile by tile")
    s.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same sky bit for bit")
    s.add_argument("--instrument", default="spt3g-paper", metavar="NAME|FILE.toml",
                   help="instrument preset (spt3g-paper: the paper's, the default; spt3g, act-dr6, so-lat, "
                        "cmbs4-wide) or your own TOML file of the same form (see resources/instruments/README.md)")
    s.add_argument("--list-instruments", action="store_true", help="list the instrument presets and exit")
    s.add_argument("--beam-fwhm", metavar="90=..,148=..,219=..",
                   help="Gaussian beams in arcmin, replacing the instrument's (default: the instrument's)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing workspace (only when complete)")
    _add_executor_flags(s)
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("import", help="make a workspace from Sehgal, Websky or AGORA HEALPix maps or flat-sky FITS "
                                      "maps")
    s.add_argument("--sehgal", metavar="DIR", help="folder with {090,148,219}_{component}_healpix.fits")
    s.add_argument("--websky", metavar="DIR",
                   help="Websky folder: tsz.fits (Compton-y), ksz.fits (uK), cib_nu*.fits (MJy/sr), lensed_alm*.fits "
                        "(synthesised once into the workspace), halos.pksc")
    s.add_argument("--agora", metavar="DIR",
                   help="AGORA folder: agora_*{cmb,tsz,ksz,cib,rad}*.fits maps (uK or Compton-y as the header or "
                        "name says) and halo shells agora_halolc_*.npz (also in a subfolder such as halocat/)")
    s.add_argument("--fits", action="append", metavar="BAND=FILE",
                   help="a band's flat-sky FITS map in uK_CMB (CAR or TAN, square pixels of any size), once per "
                        "band; BAND an integer id in GHz (e.g. 98, 150, 220), any number of bands")
    s.add_argument("--ivar", action="append", metavar="BAND=FILE",
                   help="the band's inverse-variance map, 1/uK^2 per pixel on the map's grid (0 = no data)")
    s.add_argument("--beam", action="append", metavar="BAND=FWHM|FILE",
                   help="the band's beam: a Gaussian FWHM in arcmin or a two-column 'ell B_ell' text file "
                        "(default: none recorded)")
    s.add_argument("--freq", action="append", metavar="BAND=GHZ",
                   help="the band's effective frequency in GHz for the tSZ spectrum (default: the band id)")
    s.add_argument("--mask", metavar="FILE",
                   help="one mask on the maps' grid: 1 = use, 0 = masked (footprint, source holes), values in "
                        "between for apodised edges")
    s.add_argument("--halos", metavar="CATALOG",
                   help="truth halos: halo_sz.ascii, halo_nbody.ascii, halo_nbody.binary, halos.pksc, an "
                        "agora_halolc_*.npz shell, ECSV, FITS (default: the simulation's own)")
    s.add_argument("--region", metavar="RA0,RA1,DEC0,DEC1",
                   help="HEALPix skies: the footprint of the cutouts in degrees (default the octant RA 0-90, Dec "
                        "0-90; with --sehgal it must stay inside it, where Sehgal's halos are unique)")
    s.add_argument("--cib", choices=("interp", "nearest"), default=None,
                   help="--websky/--agora: each band's CIB (and radio) from a power law in frequency between the "
                        "two maps that bracket it, per pixel (interp, the default; a map within 0.1%% of the band "
                        "is taken as it is) or the intensity of the nearest map (nearest)")
    s.add_argument("--mass-floor", type=float, default=None, metavar="MSUN",
                   help="--websky/--agora: halos below this mass are dropped as they are read (Websky M200m, AGORA "
                        "M_vir; default 1e14 Msun, below every label rule's threshold)")
    s.add_argument("--cmb-alm", metavar="FILE", help="--websky: the lensed-CMB alm file when the folder has several")
    s.add_argument("--prefer", action="append", metavar="TEXT",
                   help="--agora: when several maps fit one component and frequency (experiments, feedback models), "
                        "take the one whose name holds TEXT (repeat, most preferred first)")
    s.add_argument("--out", required=True, help="workspace folder to create")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("info", help="what a workspace holds, what is stale and what is still missing")
    s.add_argument("workspace")
    s.add_argument("--clean", action="store_true", help="remove the leftovers of killed runs first")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("cutouts", help="build the DeepSZ cutout set (8'x8', 6' stride, labels, splits)")
    s.add_argument("workspace")
    s.add_argument("--stride-arcmin", type=float, default=6.0, help="grid step in true angle (default 6)")
    s.add_argument("--levels", default="all",
                   help="HEALPix skies: component levels to cache, comma-separated from cmb_tsz,ksz,ir,radio,all; "
                        "'all' alone keeps every level (default). Synthetic and FITS skies read every level from "
                        "their maps")
    s.add_argument("--noise-seed", type=int, default=None,
                   help="HEALPix (Sehgal) skies: seed of the white noise drawn per HEALPix pixel (default 0); a "
                        "synthetic sky's noise is realised with the sky")
    s.add_argument("--label-mass", default=None, metavar="{vir,200c,500c,200m}",
                   help="mass definition of the label rule (default vir: the paper's M_vir); 500c, 200c and 200m "
                        "take the halo catalogue's M500c/M200c/M200m (converted where the simulation gives another)")
    s.add_argument("--label-min", default=None, metavar="MSUN",
                   help="a cutout is positive when it holds a halo of at least this mass [Msun] (default 2e14)")
    s.add_argument("--label-zmin", default=None, metavar="Z", help="... and redshift at least this (default 0.25)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_cutouts)

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
    _add_executor_flags(s)
    s.set_defaults(func=cmd_mf)

    s = sub.add_parser("train", help="train the DeepSZ CNN on a workspace's cutouts (checkpoints; --resume)")
    s.add_argument("workspace")
    s.add_argument("--preset", choices=["paper", "quick", "long"], default="quick",
                   help="quick: at most 1,200 batches of 64 (for ~100 deg^2); long: at most 8,000 batches of 128 "
                        "(1,000 deg^2 or more); paper: the paper's schedule exactly. Each is a number of steps, so "
                        "the result does not depend on the machine; how long it takes here is measured and printed "
                        "before training starts (see --estimate)")
    s.add_argument("--level", default="all", help="component level to train on (default all)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--estimate", action="store_true",
                   help="only measure a few training steps here and print how long the preset can take")
    s.add_argument("--max-seconds", type=float, metavar="S",
                   help="opt-in wall-clock budget: end the current ratio and stop after S seconds (the result then "
                        "depends on the machine's speed; no preset has one)")
    s.add_argument("--checkpoint-seconds", type=float, default=120.0, metavar="S",
                   help="also write a checkpoint after S seconds of wall time (default 120), besides every few "
                        "hundred batches, so an interruption loses at most that; --resume continues exactly")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the workspace's trained model, or start again over a run's checkpoint")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="score every cutout with the CNN (calibrated cnn_prob)")
    s.add_argument("workspace")
    s.add_argument("--model", metavar="PATH", help="model file (default: the workspace's own, else the shipped one)")
    s.add_argument("--level", default="all")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--all-levels", action="store_true",
                   help="score every component level (columns cnn_prob_<level>; paper Fig. 8 in the report)")
    s.add_argument("--dense", action="store_true",
                   help="also score the whole map fully convolutionally and find CNN candidates (tiled skies)")
    s.add_argument("--resolution-arcmin", type=float, default=1.0,
                   help="with --dense: grid of the fully convolutional probability map (0.25, 0.5, 1, 2 or 4 "
                        "arcmin at 0.25' pixels; default 1')")
    s.add_argument("--windowed", action="store_true",
                   help="with --dense: score each window on its own instead (the reference; --stride-arcmin)")
    s.add_argument("--stride-arcmin", type=float, default=2.0,
                   help="with --dense --windowed: window stride (default 2')")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "checked"], default="auto",
                   help="auto (default): bf16 with an fp32 re-score of every cutout whose probability it could move "
                        "by > 0.01, where bf16 is native (AVX-512 BF16, AMX, CUDA sm_80+); else fp32. bf16: fastest "
                        "where native, unchecked; bf16 and checked are slower than fp32 where bf16 is emulated")
    s.add_argument("--overwrite", action="store_true", help="replace the workspace's earlier CNN scores")
    s.set_defaults(func=cmd_predict)
    s = sub.add_parser("evaluate", help="the paper's Table 1 for a workspace, figures and an HTML report")
    s.add_argument("workspace")
    s.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    s.add_argument("--report", metavar="DIR", help="write report.html and the figures as PNG here")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --json file or --report folder")
    s.add_argument("--allow-stale", action="store_true",
                   help="evaluate scores made from inputs that have since changed (with a warning)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="export the candidate catalog of a method (and DS9 regions)")
    s.add_argument("workspace")
    s.add_argument("--method", required=True, type=str.lower, choices=["mf", "cnn", "prod", "and", "or", "learned"])
    s.add_argument("--rows", choices=["objects", "cutouts"],
                   help="objects: one row per candidate at its own position (MF + CNN candidates merged within 1'); "
                        "cutouts: one row per positive cutout (the Table 1 view). Default: objects where the "
                        "workspace has candidate catalogues")
    s.add_argument("--threshold", type=float, nargs="+",
                   help="threshold(s); AND/OR take CNN then MF S/N (default: the validation F1 optimum)")
    s.add_argument("--format", choices=["ecsv", "fits", "csv", "votable"], help="default: from the file name")
    s.add_argument("--regions", metavar="FILE.reg", help="also write a DS9 region file")
    s.add_argument("--split", choices=["train", "val", "test"], help="only cutouts of this split")
    s.add_argument("--out", required=True)
    s.add_argument("--overwrite", action="store_true", help="replace an existing catalogue / region file")
    s.add_argument("--allow-stale", action="store_true",
                   help="export scores made from inputs that have since changed")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("export-maps", help="write a synthetic workspace as survey products (per band map, ivar, "
                                           "beam file; mask; truth catalogues) for `szviewer import --fits`")
    s.add_argument("workspace", help="a synthetic workspace (from `szviewer simulate`)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder to create (one tile: the files; several: "
                                                               "DIR/tile_NNNN/ each)")
    s.add_argument("--tile", type=int, metavar="K", help="only tile K (default: every tile)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier export-maps folder")
    s.set_defaults(func=cmd_export_maps)

    s = sub.add_parser("gui", help="open the desktop app (on WS, else the last workspace or the welcome view)")
    s.add_argument("gui_workspace", nargs="?", metavar="WS", help="workspace to open")
    s.set_defaults(func=cmd_gui)

    return p


def _os_error_line(exc: OSError) -> str | None:
    """One line for a full disk, a read-only folder or a missing permission met anywhere (None: not one)."""
    import errno

    where = exc.filename or ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: no space left on the device; free some and run again (the previous state is intact)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where}: cannot write here ({exc.strerror}); the workspace or folder is read-only"
    if "No space left" in str(exc):  # h5py reports the errno only in its message
        return f"{where or 'disk'}: no space left on the device; free some and run again"
    return None


def _kept(exc: BaseException) -> str:
    """What a cancelled job kept for a resume (finished tiles), as '; ...' or ''."""
    note = getattr(exc, "szviewer_note", None)
    return f"; {note}" if note else ""


def main(argv: list[str] | None = None, signals: bool | None = None) -> int:
    """Run one command; ``signals`` (default: when ``argv`` is the real command line) makes SIGINT and SIGTERM
    cancel it (:func:`szviewer.progress.install_signal_handlers`); tests calling ``main([...])`` keep theirs."""
    from szviewer.progress import install_signal_handlers

    parser = build_parser()
    args = parser.parse_args(argv)
    if signals if signals is not None else argv is None:
        install_signal_handlers()
    try:
        return _run(args)
    finally:
        _print_notices()


def _print_notices() -> None:
    from szviewer.workspace import NOTICES

    for note in NOTICES:
        print(f"szviewer: note: {note}", file=sys.stderr)
    NOTICES.clear()


def _run(args) -> int:
    from szviewer.progress import Interrupted, cancel_signal, exit_status, interrupt_handled

    try:
        if args.command is None:
            return cmd_main(args)
        return args.func(args)
    except SzviewerError as exc:
        if isinstance(exc, Cancelled):
            interrupt_handled()
            print(f"szviewer: {exc}; nothing half-written was left behind{_kept(exc)}", file=sys.stderr)
            return exit_status(cancel_signal())
        print(f"szviewer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        interrupt_handled()
        signum = exc.signum if isinstance(exc, Interrupted) else cancel_signal()
        print(f"szviewer: cancelled; nothing half-written was left behind{_kept(exc)}", file=sys.stderr)
        return exit_status(signum)
    except BrokenPipeError:  # `szviewer info WS | head -1`: the reader went away
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush at exit
        return 0
    except OSError as exc:
        line = _os_error_line(exc)
        if line is None:
            raise
        print(f"szviewer: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
