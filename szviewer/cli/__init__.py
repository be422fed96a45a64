"""``szviewer``: the desktop app, and every step of the pipeline headless.

Each command parses its arguments, builds typed settings, calls one function of the application layer
(:mod:`szviewer.jobs`, the functions the app's job runner calls too) and prints what it returns. The commands by
step: :mod:`.sky` (simulate, import, cutouts, export-maps), :mod:`.info`, :mod:`.mf`, :mod:`.cnn` (train,
predict), :mod:`.evaluate` (evaluate, export), :mod:`.app` (the main job, gui); :mod:`.common` holds what they
share.

Exit status: 0 done; 2 bad input or refused output (one line naming the file and the problem); 130 cancelled.
"""

from __future__ import annotations

import argparse
import sys

from szviewer import __version__
from szviewer.cli import app, cnn, evaluate, info, mf, sky
from szviewer.cli.app import cmd_main, demo_workspace_path
from szviewer.cli.common import run_command

__all__ = ["build_parser", "demo_workspace_path", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="szviewer",
        description="Find SZ galaxy clusters in mm-wave maps: matched filter, DeepSZ CNN and their ensemble. "
                    "Without a subcommand: the desktop app where there is a display, otherwise the main job "
                    "headless (demo workspace, every finder, Table 1).")
    p.add_argument("--version", action="version", version=f"szviewer {__version__}")
    app.add_main_arguments(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (sky.add_simulate, sky.add_import, info.add_info, sky.add_cutouts, mf.add_mf, cnn.add_train,
                cnn.add_predict, cnn.add_mass, evaluate.add_evaluate, evaluate.add_export, sky.add_export_maps,
                app.add_gui):
        add(sub)
    return p


def main(argv: list[str] | None = None, signals: bool | None = None) -> int:
    """Run one command; ``signals`` (default: when ``argv`` is the real command line) makes SIGINT and SIGTERM
    cancel it (:func:`szviewer.progress.install_signal_handlers`); tests calling ``main([...])`` keep theirs."""
    from szviewer.progress import install_signal_handlers

    parser = build_parser()
    args = parser.parse_args(argv)
    if signals if signals is not None else argv is None:
        install_signal_handlers()
    try:
        return run_command(cmd_main if args.command is None else args.func, args)
    finally:
        _print_notices()


def _print_notices() -> None:
    from szviewer.workspace import NOTICES

    for note in NOTICES:
        print(f"szviewer: note: {note}", file=sys.stderr)
    NOTICES.clear()


if __name__ == "__main__":
    raise SystemExit(main())
