"""The ``szviewer`` command: the desktop app where there is a display, otherwise the headless CLI.

This module sits above both ``szviewer.cli`` and ``szviewer.gui`` (the layers keep the CLI free of Qt), and
imports the app only when it is about to show it.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _can_show_windows() -> bool:
    """A real display that Qt can open (checked in a subprocess: a Qt that lacks its xcb libraries aborts)."""
    from szviewer.gui import display_available

    if os.environ.get("QT_QPA_PLATFORM", "") in ("offscreen", "minimal") or not display_available():
        return False
    probe = "from PyQt6.QtWidgets import QApplication; QApplication([])"
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if r.returncode != 0:
        print("szviewer: a display is set but Qt cannot open a window there; running headless. On Linux install "
              "libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 (see the README).", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    from szviewer import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    args = cli.build_parser().parse_args(argv)
    if args.command == "gui" or (args.command is None and not args.headless and _can_show_windows()):
        from szviewer.gui.app import run

        workspace = getattr(args, "gui_workspace", None) if args.command == "gui" else args.workspace
        if workspace is None and args.command is None and (cli.demo_workspace_path() / "workspace.json").exists():
            workspace = str(cli.demo_workspace_path())
        return run(workspace)
    status = cli.main(argv, signals=True)
    if status in (130, 143):  # cancelled: everything is cleaned up; skip the interpreter's slow teardown (seconds
        sys.stdout.flush()    # of freeing a large heap) so that a signal stops the command within a second
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
