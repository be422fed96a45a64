"""Locks of a workspace and the clean-up of what killed runs left behind.

- One lock per product being written (``WS/.locks/<product>.lock``, held for the whole job): a second job that
  would write the same product is refused at once with the job that holds it (command, pid, start time).
- One short manifest lock (``WS/.locks/manifest.lock``) under which a job re-reads the manifest, merges its own
  product entry and rewrites it, so two jobs writing different products never lose each other's updates.
- Readers take no lock: a manifest is replaced atomically and a product's files never change once committed.

The locks are ``filelock`` locks (``fcntl.flock`` on POSIX), released by the kernel when a process dies, so a
killed job never leaves a workspace locked. Temporary names carry the writer's pid (``*.partial-<pid>-*``,
``.<name>.<pid>.*.part*``); :func:`leftovers` finds those whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from szviewer.errors import SzviewerError

LOCK_DIR = ".locks"
MANIFEST_LOCK_TIMEOUT_S = 60.0
_PID_RE = re.compile(r"(?:partial-|\.)(\d+)[-.]")


class WorkspaceBusy(SzviewerError):
    """Another job is writing the same product of this workspace."""


def _lock_dir(root: Path) -> Path:
    d = root / LOCK_DIR
    d.mkdir(exist_ok=True)
    return d


def _holder(info: Path) -> str:
    try:
        h = json.loads(info.read_text(encoding="utf-8"))
        return f"`{h.get('command', '?')}` (pid {h.get('pid', '?')}, since {h.get('since', '?')})"
    except (OSError, ValueError):
        return "another job"


@contextlib.contextmanager
def product_lock(root: Path, product: str) -> Iterator[None]:
    """Hold the lock of one product for the duration of a job; refuse at once if another job holds it."""
    d = _lock_dir(root)
    lock = FileLock(str(d / f"{product}.lock"))
    info = d / f"{product}.json"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise WorkspaceBusy(f"{root}: {product} is being written by {_holder(info)}; wait for it to finish or "
                            "stop it") from None
    try:
        info.write_text(json.dumps({"pid": os.getpid(), "command": " ".join(["szviewer", *sys.argv[1:]])[:200],
                                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}), encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            info.unlink()
        lock.release()


@contextlib.contextmanager
def manifest_lock(root: Path, timeout_s: float = MANIFEST_LOCK_TIMEOUT_S) -> Iterator[None]:
    """The short lock under which the manifest is re-read, merged and rewritten."""
    lock = FileLock(str(_lock_dir(root) / "manifest.lock"))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise WorkspaceBusy(f"{root}: the manifest stayed locked for {timeout_s:g} s (a job hung while "
                            "committing?); try again") from None
    try:
        yield
    finally:
        lock.release()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead(name: str) -> bool:
    m = _PID_RE.search(name)
    return bool(m) and not pid_alive(int(m.group(1)))


def leftovers(folder: Path, recursive: bool = True) -> list[Path]:
    """Temporary files and folders of killed runs in ``folder``: partial workspaces, product generations and
    atomically written files whose writer (the pid in their name) is no longer running."""
    out = []
    if not folder.is_dir():
        return out
    pattern = "**/.*" if recursive else ".*"
    for p in folder.glob(pattern):
        name = p.name
        if name == LOCK_DIR or LOCK_DIR in p.parts:
            continue
        if (".partial-" in name or ".part" in name) and _dead(name):
            out.append(p)
    return sorted(set(out))


def remove(paths: list[Path]) -> int:
    """Delete leftovers; returns how many went."""
    n = 0
    for p in paths:
        try:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
        except FileNotFoundError:
            pass
        except OSError:
            continue
    return n
