"""Atomic writes: write to a temporary file beside the target, then rename it into place.

A crash or a cancel never leaves a half-written file under the final name, and an existing file
is only replaced once the new one is complete. One context manager, :func:`atomic_path`, hands a temporary
name to a writer (h5py, astropy, a callable) and moves the result into place; :func:`atomic_write` and the
``*_bytes``/``*_text``/``*_json`` helpers are thin layers on it that also refuse to clobber a file that exists
unless ``overwrite`` (a hard link makes that check race-free), flush to disk and set the usual permissions.
:func:`atomic_dir` is its counterpart for a folder of files: everything is written into a temporary sibling
folder, which replaces the target only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from szviewer.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, *, overwrite: bool = True,
                durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success move it onto ``path``.

    For libraries that write to a file name (h5py, astropy): the temporary name does not exist yet, so the
    writer creates it. On an exception the temporary file (or folder) is removed and ``path`` is untouched.
    ``overwrite=False`` refuses a ``path`` that exists (FileExistsError), before the write and again, race-free
    through a hard link, when the file is put in place. ``durable`` flushes the file to disk and gives it the
    usual permissions before the move. The one atomic-write primitive: :func:`atomic_write` and the helpers
    below are built on it.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(_exists(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part" + sfx, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # let the writer create it
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable and tmp_path.is_file():
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _link_new(tmp_path, path)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside ``path``; on success rename it to ``path``.

    The folder version of :func:`atomic_path`: the caller writes every file into the yielded folder, and ``path``
    appears (or is replaced) only once all of them are complete. It has the usual permissions (not mkdtemp's
    private 0700) and a name ``.NAME.partial-<pid>-*``, so a killed writer's leftover is recognisable
    (:func:`szviewer.workspace.locks.leftovers`). An existing ``path`` is refused (FileExistsError) unless
    ``overwrite``; then it is moved aside into a second temporary sibling, the new folder renamed into place and
    the old one deleted, and if that rename fails the old folder is put back. On any exception (a failed write,
    a cancel, KeyboardInterrupt) the temporary folder is removed and ``path`` is left exactly as it was.
    Checking what an existing ``path`` holds before replacing it is the caller's business.
    """
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(_exists(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        if not (path.exists() or path.is_symlink()):
            _rename_new_dir(tmp, path)
        elif not overwrite:
            raise FileExistsError(_exists(path))
        else:
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-old-", dir=path.parent))
            try:
                os.replace(path, trash / path.name)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(trash / path.name, path)  # put the old folder back
                    raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_new_dir(tmp: Path, path: Path) -> None:
    """Rename the folder ``tmp`` to ``path``, which did not exist a moment ago; FileExistsError if a folder with
    files appeared there meanwhile (rename(2) refuses a non-empty target; an empty one is replaced)."""
    try:
        os.rename(tmp, path)
    except OSError:
        if path.exists() or path.is_symlink():
            raise FileExistsError(_exists(path)) from None
        raise


def _exists(path: Path) -> str:
    return f"{path}: file exists; pass overwrite=True to replace it"


def _link_new(tmp: Path, path: Path) -> None:
    """Put ``tmp`` in place as ``path`` only if ``path`` does not exist (a hard link makes that race-free)."""
    try:
        os.link(tmp, path)  # fails with FileExistsError if path appeared meanwhile
    except FileExistsError:
        raise FileExistsError(_exists(path)) from None
    except OSError:  # file systems without hard links: best effort
        if path.exists():
            raise FileExistsError(_exists(path)) from None
        os.replace(tmp, path)
    else:
        tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write (or replace) a text file atomically, making its folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, overwrite=True)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically, indented and with sorted keys so diffs stay readable."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# The process umask, read once (os.umask can only be read by setting it), so that a finished file gets the
# usual permissions rather than mkstemp's private 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then move it atomically to ``path``.

    Raises FileExistsError if ``path`` exists and ``overwrite`` is False (checked before writing, and again
    when the file is put in place), FileNotFoundError if its folder does not exist. The temporary file is
    removed on any failure; the finished file is flushed to disk (:func:`atomic_path` with ``durable``).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    with atomic_path(path, ".tmp", overwrite=overwrite, durable=True) as tmp:
        write(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def require_space(folder, need_bytes: float, what: str) -> None:
    """Refuse, before any work, a write of about ``need_bytes`` where the disk has less free (with a 10% margin)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < 1.1 * need_bytes:
        raise InputError(folder, f"{what} needs about {need_bytes / 1e9:.2f} GB but only {free / 1e9:.2f} GB are "
                                "free here; free some space or choose another folder")


def require_writable(folder) -> None:
    """Refuse, before any work, a folder where nothing can be written (read-only, no permission)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".write-test.{os.getpid()}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise InputError(folder, f"cannot write here ({exc.strerror}): read-only or no permission") from None
    os.close(fd)
    os.unlink(name)
