"""Progress reporting and cancellation for long jobs, shared by the CLI (tqdm) and the GUI."""

from __future__ import annotations

import sys
from collections.abc import Callable

from szviewer.errors import Cancelled

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]


class TqdmProgress:
    """A ``progress(done, total, message)`` callable that drives one tqdm bar per stage."""

    def __init__(self, desc: str, disable: bool | None = None):
        self.desc = desc
        self.disable = (not sys.stderr.isatty()) if disable is None else disable
        self._bar = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, desc=self.desc, disable=self.disable, leave=False, file=sys.stderr)
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def check_cancel(cancelled: CancelFn | None, what: str) -> None:
    """Raise :class:`Cancelled` when the caller asked to stop."""
    if cancelled is not None and cancelled():
        raise Cancelled(f"{what} cancelled")
