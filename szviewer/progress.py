"""Progress reporting and cancellation for long jobs, shared by the CLI (tqdm) and the GUI.

Signals: :func:`install_signal_handlers` makes SIGINT (Ctrl-C) and SIGTERM cancel the running job. A signal records
itself and raises :class:`Interrupted` in the main thread at once. Python swallows an exception raised where it
cannot propagate (a weakref callback, of which h5py runs many while it writes, or a ``__del__``: "Exception ignored
in ..."), so a signal that lands there is sent again a few milliseconds later, and until the CLI has caught the
interrupt it is also sent again every quarter second (and at once when a swallowed one is seen), but never while an
exception is being handled (a cancel's clean-up is never cut short); the job's next progress report or cancel check
raises :class:`Cancelled` too. So a signal is never lost. The CLI exits 130 for SIGINT and 143 for SIGTERM; every
file is written under a temporary name and removed on the way out, so nothing is left half-written.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

from szviewer.errors import Cancelled

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

#: the signal that asked the running job to stop (None: none did)
_REQUESTED: list[int] = []


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM (``signum`` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_HANDLED: list[bool] = []
REDELIVER_S = 0.25


def _swallowed_here(frame) -> bool:
    """True in frames whose exceptions Python prints and drops: weakref callbacks (h5py makes many) and __del__."""
    return frame is not None and (frame.f_code.co_filename.endswith("weakref.py") or frame.f_code.co_name == "__del__")


def _handler(signum, frame):
    if _HANDLED:
        return  # the CLI is reporting the cancel: let it finish
    if sys.exc_info()[1] is not None:
        return  # an exception is being handled (a cancel's clean-up, say): do not cut it short; re-sent later
    if not _REQUESTED:
        _REQUESTED.append(signum)
        threading.Thread(target=_redeliver, args=(signum,), name="szviewer-signal", daemon=True).start()
    if _swallowed_here(frame):  # raising here would be lost: try again in a few milliseconds
        import os

        threading.Timer(0.002, os.kill, (os.getpid(), signum)).start()
        return
    raise Interrupted(_REQUESTED[0])


def _redeliver(signum: int) -> None:
    """Send the signal again until the main thread has caught it (it may have been swallowed)."""
    import os
    import time

    while not _HANDLED:
        time.sleep(REDELIVER_S)
        if not _HANDLED:
            os.kill(os.getpid(), signum)


def _unraisable(info) -> None:
    """An interrupt swallowed where it could not propagate (a weakref callback): deliver it again at once, so it
    lands at the interpreter's next check, and do not print it as an error."""
    if not isinstance(info.exc_value, Interrupted):
        sys.__unraisablehook__(info)
        return
    if not _HANDLED:  # not from inside this hook: the handler would raise here, and be swallowed again
        import os

        threading.Timer(0.005, os.kill, (os.getpid(), info.exc_value.signum)).start()


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM cancel the job (see the module docstring); main thread only."""
    _REQUESTED.clear()
    _HANDLED.clear()
    signal.signal(signal.SIGINT, _handler)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _unraisable


def interrupt_handled() -> None:
    """The CLI caught the interrupt: stop re-delivering it and ignore further signals while it reports."""
    _HANDLED.append(True)


def cancel_signal() -> int | None:
    """The signal that asked the job to stop, if any."""
    return _REQUESTED[0] if _REQUESTED else None


def exit_status(signum: int | None) -> int:
    """130 for SIGINT (or an unknown cancel), 143 for SIGTERM: 128 + the signal number."""
    return 128 + int(signum) if signum else 130


class TqdmProgress:
    """A ``progress(done, total, message)`` callable that drives one tqdm bar per stage."""

    def __init__(self, desc: str, disable: bool | None = None):
        self.desc = desc
        self.disable = (not sys.stderr.isatty()) if disable is None else disable
        self._bar = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        check_cancel(None, self.desc)
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
    """Raise :class:`Cancelled` when the caller asked to stop, or a signal did."""
    if _REQUESTED or (cancelled is not None and cancelled()):
        raise Cancelled(f"{what} cancelled")
