"""``szviewer info``: what a workspace holds, what is stale and what is still missing."""

from __future__ import annotations


def cmd_info(args) -> int:
    from szviewer.jobs.info import workspace_info

    info = workspace_info(args.workspace, clean=args.clean)
    if args.clean:
        n = info["removed"]
        print(f"removed {n} leftover(s) of killed runs" if n else "no leftovers of killed runs")
    print(info["text"])
    return 0


def add_info(sub) -> None:
    s = sub.add_parser("info", help="what a workspace holds, what is stale and what is still missing")
    s.add_argument("workspace")
    s.add_argument("--clean", action="store_true", help="remove the leftovers of killed runs first")
    s.set_defaults(func=cmd_info)
