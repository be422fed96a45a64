"""Products of a workspace: one commit per product, what each was made from, and when that makes it stale.

A job writes a product through :meth:`Workspace.writing`::

    with ws.writing("mf", inputs=("cutouts", "sky", "halos", "sources"), overwrite=overwrite) as w:
        catalog.write(w.path("mf_catalog.fits"))
        w.write_scores(ids, {"mf_snr": snr})
        w.summary = {...}

Its files go into a new generation folder ``WS/<product>/g<NNNNNN>/``, built under a temporary name
(``.partial-<pid>-...``); on success, under the manifest lock, the folder is renamed into place and the manifest,
re-read and merged, is rewritten atomically to point at it, with the generation numbers of the inputs the job
read. Only then is the previous generation deleted. A kill at any instant leaves the previous state or the new one
(an unfinished folder is a leftover the next writer removes); a reader never sees a mix.

A product is *stale* when an input it was made from has been rebuilt since (another generation), or is itself
stale, or is gone; or when an external input (a model file) has changed. :func:`stale_reasons` says why, and
:data:`REFRESH` names the command that makes the product again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from szviewer.errors import InputError, OutputExistsError

#: The command that (re)makes each product, in CLI flags (``WS`` stands for the workspace).
REFRESH = {
    "sky": "szviewer simulate / szviewer import (a new workspace)",
    "halos": "szviewer simulate / szviewer import (a new workspace)",
    "sources": "szviewer simulate (a new workspace)",
    "skycard": "szviewer simulate (a new workspace)",
    "cutouts": "szviewer cutouts WS --overwrite",
    "mf": "szviewer mf WS --overwrite",
    "mf_injection": "szviewer mf WS --inject 1000 --overwrite",
    "cnn": "szviewer predict WS --overwrite",
    "cnn_dense": "szviewer predict WS --dense --overwrite",
    "cnn_model": "szviewer train WS --overwrite",
    "cnn_mass": "szviewer mass WS --overwrite",
    "evaluation": "szviewer evaluate WS",
}


def refresh_command(product: str, root) -> str:
    if product.startswith("cnn_") and product not in REFRESH:
        level = product[len("cnn_"):]
        how = f"szviewer predict WS --level {level} --overwrite"
    else:
        how = REFRESH.get(product, f"rerun the step that makes {product}")
    return how.replace("WS", str(root))


def file_signature(path: str | os.PathLike, with_hash: bool = True) -> dict:
    """Size, mtime and (optionally) sha256 of an external input file, to notice when it changes."""
    p = Path(path)
    st = p.stat()
    out = {"path": str(p.resolve()), "size": int(st.st_size), "mtime": float(st.st_mtime)}
    if with_hash:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out["sha256"] = h.hexdigest()
    return out


def external_changed(sig: dict) -> str | None:
    """Why an external input no longer matches its signature (None if it does)."""
    p = Path(sig.get("path", ""))
    if not p.is_file():
        return f"{p} is gone"
    st = p.stat()
    if int(st.st_size) == sig.get("size") and float(st.st_mtime) == sig.get("mtime"):
        return None
    if "sha256" in sig and file_signature(p)["sha256"] == sig["sha256"]:
        return None
    return f"{p} has changed"


def stale_reasons(products: dict, name: str, _seen: frozenset = frozenset()) -> list[str]:
    """Why product ``name`` no longer reflects its inputs ([] when fresh)."""
    entry = products.get(name) or {}
    out = []
    for dep, gen in (entry.get("inputs") or {}).items():
        cur = products.get(dep)
        if cur is None:
            out.append(f"its input {dep} is gone")
        elif int(cur.get("generation", 0)) != int(gen):
            out.append(f"{dep} was rebuilt since (generation {cur.get('generation', 0)}; {name} used {gen})")
        elif dep not in _seen and stale_reasons(products, dep, _seen | {name}):
            out.append(f"{dep} is stale")
    for what, sig in (entry.get("external") or {}).items():
        why = external_changed(sig)
        if why:
            out.append(f"its {what} {why}")
    return out


class ProductWriter:
    """Collects one product's files in a private generation folder; :meth:`Workspace.writing` commits it."""

    def __init__(self, ws, name: str, inputs: tuple[str, ...], external: dict | None = None):
        self.ws = ws
        self.name = name
        products = ws.products
        self.inputs = {dep: int(products[dep].get("generation", 0)) for dep in inputs if dep in products}
        self.external = {k: file_signature(p) for k, p in (external or {}).items() if p is not None}
        self.settings: dict = {}
        self.provenance: dict = {}
        self.summary: dict = {}
        self.extra_files: list[str] = []
        parent = ws.root / name
        parent.mkdir(exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f".g.partial-{os.getpid()}-", dir=parent))
        os.chmod(self.folder, 0o777 & ~_umask())
        self._files: list[str] = []

    def path(self, filename: str) -> Path:
        """Where to write ``filename`` of this product (inside its generation folder)."""
        rel = Path(filename)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{filename}: a product file must stay inside its folder")
        p = self.folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if str(rel) not in self._files:
            self._files.append(str(rel))
        return p

    def write_scores(self, ids, columns: dict, meta: dict | None = None) -> Path:
        """The product's score columns (aligned with the cutout store's rows) as its ``scores.h5``."""
        from szviewer.cutouts.scores import write_score_columns

        path = self.path("scores.h5")
        write_score_columns(path, ids, columns, meta)
        return path

    def files(self) -> list[str]:
        return [f for f in self._files if (self.folder / f).exists()]

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_replace(ws, name: str, overwrite: bool) -> None:
    """The one overwrite policy: replacing an existing product needs ``--overwrite``."""
    if name in ws.products and not overwrite:
        raise OutputExistsError(ws.root / name, f"pass --overwrite to replace this workspace's {name}")


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


@contextlib.contextmanager
def no_space_is_input_error(path):
    """Turn a full disk or a read-only folder met mid-write into one line naming the path."""
    import errno

    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(path, "no space left on the device; free some and run again (the previous state is "
                                   "intact)") from None
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise InputError(path, f"cannot write here ({exc.strerror}): the workspace is read-only") from None
        raise

