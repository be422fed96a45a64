"""The main job without a subcommand (``szviewer --headless``: the demo workspace, every finder, Table 1) and
``szviewer gui``, which only the launcher (:mod:`szviewer.launcher`) can open."""

from __future__ import annotations

import sys
from pathlib import Path

from szviewer.cli.common import progress_bar


def demo_workspace_path() -> Path:
    from szviewer.jobs.demo import demo_workspace_path as path

    return path()


def cmd_main(args) -> int:
    """The main job: the demo workspace, every finder there is, the paper's Table 1."""
    from szviewer.jobs.demo import DemoSettings, build_demo
    from szviewer.sky.skycard import format_card

    path = Path(args.workspace) if args.workspace else demo_workspace_path()
    done = build_demo(path, DemoSettings(area_deg2=args.area, seed=args.seed), progress_for=progress_bar,
                      report=True)
    if done["card"] is not None:
        print(format_card(done["card"]))
    print()
    print(done["description"])
    print()
    if done["table1"] is not None:
        print("\nTable 1 (thresholds chosen on validation, counts on test):")
        print(done["table1"])
    else:
        print("no finder has scored the cutouts yet, so there is no Table 1 to print")
    return 0


def cmd_gui(args) -> int:
    print("szviewer gui: start the app with the `szviewer` command (szviewer.launcher), which may load Qt",
          file=sys.stderr)
    return 2


def add_main_arguments(p) -> None:
    """The main job's options, on the top-level parser."""
    from szviewer.jobs.demo import DEMO_AREA_DEG2, DEMO_SEED

    p.add_argument("--headless", action="store_true", help="run the main job without the app")
    p.add_argument("--workspace", help="workspace for the main job (default: $SZVIEWER_HOME/demo)")
    p.add_argument("--area", type=float, default=DEMO_AREA_DEG2,
                   help=f"demo sky area [deg^2] (default {DEMO_AREA_DEG2:g})")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"demo sky seed (default {DEMO_SEED})")


def add_gui(sub) -> None:
    s = sub.add_parser("gui", help="open the desktop app (on WS, else the last workspace or the welcome view)")
    s.add_argument("gui_workspace", nargs="?", metavar="WS", help="workspace to open")
    s.set_defaults(func=cmd_gui)
