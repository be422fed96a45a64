"""What every command shares: BAND=VALUE options, the progress bar, the executor flags, and the error lines and
exit statuses of a run (0 done; 2 bad input or refused output; 130/143 cancelled)."""

from __future__ import annotations

import contextlib
import math
import os
import sys

from szviewer.errors import Cancelled, SzviewerError

# ---------------------------------------------------------------------------------------------- BAND=VALUE


def band_values(text: str | None, what: str) -> dict[int, float]:
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


def band_items(items: list[str] | None, flag: str, example: str) -> dict[int, str]:
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


def band_freqs(items: list[str] | None) -> dict[int, float]:
    """Repeated ``--freq BAND=GHZ`` options as {band: GHz}."""
    freqs = {}
    for b, text in band_items(items, "--freq", "90=97.8").items():
        try:
            freqs[b] = float(text)
        except ValueError:
            raise SzviewerError(f"--freq {b}={text}: not a number of GHz") from None
    return freqs


# ---------------------------------------------------------------------------------------------- progress, executor

@contextlib.contextmanager
def progress_bar(desc: str):
    """A tqdm progress callback for one job, closed when the job ends (or fails)."""
    from szviewer.progress import TqdmProgress

    bar = TqdmProgress(desc, disable=False)
    try:
        yield bar
    finally:
        bar.close()


def add_executor_flags(s) -> None:
    """--workers / --scheduler: where the tile tasks run (:mod:`szviewer.parallel`)."""
    s.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run the tiles on a local Dask cluster of N worker processes, one thread each (default 0: "
                        "in this process)")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tiles on an existing Dask cluster: its scheduler address (tcp://host:8786) or "
                        "scheduler file (dask-jobqueue, `dask scheduler --scheduler-file`)")


@contextlib.contextmanager
def executor(args):
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


def say(line: str) -> None:
    """Print a job's line at once (the progress bar runs on stderr meanwhile)."""
    print(line, flush=True)


# ---------------------------------------------------------------------------------------------- errors

def os_error_line(exc: OSError) -> str | None:
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


def run_command(command, args) -> int:
    """``command(args)``, its errors as one line on stderr and an exit status: 2 for bad input, refused output, a
    full disk or a read-only folder; the signal's status (130, 143) for a cancel; 0 when the reader of a pipe
    went away."""
    from szviewer.progress import Interrupted, cancel_signal, exit_status, interrupt_handled

    try:
        return command(args)
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
        line = os_error_line(exc)
        if line is None:
            raise
        print(f"szviewer: error: {line}", file=sys.stderr)
        return 2
