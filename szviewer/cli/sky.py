"""The sky steps: ``szviewer simulate``, ``import``, ``cutouts`` and ``export-maps``."""

from __future__ import annotations

import math
import sys

from szviewer.cli.common import add_executor_flags, band_freqs, band_items, band_values, executor, progress_bar
from szviewer.errors import SzviewerError


def cmd_simulate(args) -> int:
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.skycard import format_card
    from szviewer.sky.synthetic import SimulationSettings

    if args.area is not None and not (math.isfinite(args.area) and 0 < args.area <= 41253.0):
        raise SzviewerError(f"--area {args.area}: must be a positive, finite number of deg^2, at most the full sky "
                            "(41,253)")
    if args.list_instruments:
        from szviewer.sky.instrument_presets import instrument_names, load_instrument

        for name in instrument_names():
            print(f"{name:<14} {load_instrument(name).description}")
        return 0
    if not args.out:
        raise SzviewerError("simulate needs --out WS")
    settings = SimulationSettings(seed=args.seed, area_deg2=args.area or 100.0, octant=args.octant,
                                  instrument=args.instrument,
                                  beam_fwhm_arcmin=band_values(args.beam_fwhm, "--beam-fwhm"))
    with executor(args) as ex, progress_bar("simulate") as bar:
        card = simulate_workspace(args.out, settings, overwrite=args.overwrite, progress=bar, executor=ex)
    print(format_card(card))
    print(f"\nworkspace {args.out}: {card['seconds']:.1f} s ({card['seconds_per_100deg2']:.1f} s per 100 deg^2)")
    return 0


def _check_import_flags(args) -> None:
    """One source, and only the flags that go with it."""
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


def _import_fits(args) -> int:
    from szviewer.jobs.importing import import_fits
    from szviewer.jobs.info import fits_sky_lines

    freqs = band_freqs(args.freq)
    summary = import_fits(band_items(args.fits, "--fits", "90=f090.fits"), args.out, halo_file=args.halos,
                          overwrite=args.overwrite, ivar=band_items(args.ivar, "--ivar", "90=ivar_f090.fits"),
                          beams=band_items(args.beam, "--beam", "90=2.0 or 90=beam_f090.txt"), freqs=freqs,
                          mask=args.mask)
    f, bands = summary["footprint"], sorted(int(b) for b in summary["bands"])
    print(f"workspace {args.out}: {len(bands)} band(s) ({', '.join(str(b) for b in bands)} GHz), "
          f"{summary['pixel_arcmin']:g}' pixels, "
          f"{summary['shape'][0]} x {summary['shape'][1]}, RA {f[0]:.3f}-{f[1]:.3f}, Dec {f[2]:.3f}-{f[3]:.3f} "
          f"deg, halos {summary['halos']}")
    print("\n".join(fits_sky_lines(summary, hints=True)))
    return 0


def cmd_import(args) -> int:
    from szviewer.jobs.importing import import_agora, import_sehgal, import_websky

    _check_import_flags(args)
    if args.fits:
        return _import_fits(args)
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
            with progress_bar("import") as bar:
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
        if (args.workers or args.scheduler) and ws.kind != "sehgal":
            raise SzviewerError(f"--workers/--scheduler spread the sampling of HEALPix maps; a {ws.kind} "
                                "workspace's cutouts are windows of its maps, cut here in one pass")
        with executor(args) as ex, progress_bar("cutouts") as bar:
            s = make_cutouts(ws, settings, overwrite=args.overwrite, progress=bar, executor=ex)
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


def cmd_export_maps(args) -> int:
    from szviewer.jobs.export_maps import export_maps
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    with progress_bar("export-maps") as bar:
        s = export_maps(ws, args.out, tiles=None if args.tile is None else [args.tile], overwrite=args.overwrite,
                        progress=bar)
    where = "" if len(s["tiles"]) == 1 else " (one folder per tile)"
    print(f"{args.out}: {len(s['tiles'])} tile(s) of {s['instrument']}{where}, bands "
          f"{', '.join(map(str, s['bands']))} GHz: map, ivar, beam per band, mask; {s['halos']} halos, "
          f"{s['sources']} sources; README.txt; {s['seconds']:.1f} s")
    print("read it back with:")
    print("\n".join(s["commands"]))
    return 0


def add_simulate(sub) -> None:
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
    add_executor_flags(s)
    s.set_defaults(func=cmd_simulate)


def add_import(sub) -> None:
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


def add_cutouts(sub) -> None:
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
    add_executor_flags(s)
    s.set_defaults(func=cmd_cutouts)


def add_export_maps(sub) -> None:
    s = sub.add_parser("export-maps", help="write a synthetic workspace as survey products (per band map, ivar, "
                                           "beam file; mask; truth catalogues) for `szviewer import --fits`")
    s.add_argument("workspace", help="a synthetic workspace (from `szviewer simulate`)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder to create (one tile: the files; several: "
                                                               "DIR/tile_NNNN/ each)")
    s.add_argument("--tile", type=int, metavar="K", help="only tile K (default: every tile)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier export-maps folder")
    s.set_defaults(func=cmd_export_maps)
