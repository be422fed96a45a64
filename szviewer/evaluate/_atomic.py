"""Atomic file writing shared by the exporters and the report.

A file is written to a hidden temporary file in the destination directory, flushed to disk, and then moved
into place in one step, so a reader never sees a half-written file and a crash leaves the old file intact.
Without ``overwrite`` the move is a hard link, which fails if the destination appeared meanwhile, so an
existing file is never clobbered.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# The process umask, read once (os.umask can only be read by setting it), so that a finished file gets the
# usual permissions rather than mkstemp's private 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then move it atomically to ``path``.

    Raises FileExistsError if ``path`` exists and ``overwrite`` is False (checked before writing, and again
    when the file is put in place). The temporary file is removed on any failure.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails with FileExistsError if path appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it") from None
            except OSError:  # file systems without hard links: best effort
                if path.exists():
                    raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
