"""The results: ``szviewer evaluate`` (Table 1, figures, report) and ``szviewer export`` (the candidates)."""

from __future__ import annotations

from pathlib import Path

from szviewer.errors import SzviewerError


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
    from szviewer.evaluate.policy import format_thresholds
    from szviewer.jobs.evaluate import export_candidates
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    try:
        res = export_candidates(ws, args.method, args.out, fmt=args.format, thresholds=args.threshold,
                                regions=args.regions, split=args.split, overwrite=args.overwrite,
                                allow_stale=args.allow_stale, rows=args.rows, redshifts=args.redshifts)
    except (ValueError, FileExistsError) as exc:
        raise SzviewerError(str(exc)) from None
    what = "objects" if res["kind"] == "objects" else "positive cutouts"
    print(f"wrote {res['rows']} {what} ({args.method.upper()}: {format_thresholds(res['thresholds'])}, "
          f"thresholds {res['threshold_source']}) to {res['out']}"
          + (f"; DS9 regions to {res['regions']}" if res["regions"] else ""))
    return 0


def add_evaluate(sub) -> None:
    s = sub.add_parser("evaluate", help="the paper's Table 1 for a workspace, figures and an HTML report")
    s.add_argument("workspace")
    s.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    s.add_argument("--report", metavar="DIR", help="write report.html and the figures as PNG here")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --json file or --report folder")
    s.add_argument("--allow-stale", action="store_true",
                   help="evaluate scores made from inputs that have since changed (with a warning)")
    s.set_defaults(func=cmd_evaluate)


def add_export(sub) -> None:
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
    s.add_argument("--redshifts", metavar="TABLE",
                   help="a table of ra, dec [deg] and z (or redshift, z_spec, z_phot) from follow-up or photo-z, "
                        "matched to the objects within 1': their Arnaud M500 uses it (z_source 'user')")
    s.add_argument("--out", required=True)
    s.add_argument("--overwrite", action="store_true", help="replace an existing catalogue / region file")
    s.add_argument("--allow-stale", action="store_true",
                   help="export scores made from inputs that have since changed")
    s.set_defaults(func=cmd_export)
