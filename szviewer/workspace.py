"""The on-disk workspace: a folder with a versioned ``workspace.json`` manifest and its products.

Layout::

    WS/workspace.json      schema version, kind, bands, pixel size, geometry, and for every product its
                           file, creation time, settings and provenance
    WS/halos.fits          truth halos (optional)         WS/sources.fits   point sources (synthetic)
    WS/tiles/tile_NNNN.h5  synthetic flat-sky tiles       WS/skycard.json   the sky card (synthetic)
    WS/cutouts.h5          the DeepSZ cutout set and its table (the spine of every later step)

Every file is written to a temporary name and renamed into place; a new workspace is built in a
hidden sibling folder and renamed when complete, so a crash or cancel never leaves a half workspace.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from szviewer import __version__
from szviewer.atomic import write_json
from szviewer.errors import InputError, OutputExistsError

SCHEMA_VERSION = 2
#: What a synthetic workspace of schema 1 (szviewer 0.1: no observed maps, noise drawn per cutout) is told.
OLD_SYNTHETIC_SKY = ("made by szviewer 0.1, whose sky had no noise maps (noise was drawn per cutout, so the finders "
                     "saw different noise); rebuild it: {how}")
MANIFEST = "workspace.json"
CUTOUTS = "cutouts.h5"
SCORES = "scores.h5"

#: Products a complete workspace has, in pipeline order, with what makes each.
PIPELINE = (
    ("sky", "szviewer simulate / szviewer import"),
    ("cutouts", "szviewer cutouts WS"),
    ("mf", "szviewer mf WS"),
    ("cnn", "szviewer predict WS"),
    ("evaluation", "szviewer evaluate WS"),
)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Workspace:
    """An open workspace folder. Cheap to open: only the manifest is read."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not self.root.is_dir():
            raise InputError(self.root, "no such workspace folder")
        if not path.is_file():
            raise InputError(path, "missing: this folder is not an szviewer workspace")
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, f"corrupt manifest ({exc})") from None
        version = self.manifest.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise InputError(path, f"schema version {version!r} is not one this szviewer ({__version__}) reads "
                                   f"(<= {SCHEMA_VERSION})")

    # ------------------------------------------------------------------ creation
    @staticmethod
    @contextlib.contextmanager
    def create(root: str | os.PathLike, kind: str, bands, pixel_arcmin: float, geometry: dict,
               overwrite: bool = False) -> Iterator[Workspace]:
        """Build a new workspace in a hidden sibling folder; on success rename it to ``root``.

        Refuses an existing ``root`` unless ``overwrite``; then the old folder is replaced only after
        the new one is complete. On any exception (including cancel) the partial folder is removed.
        """
        root = Path(root)
        if root.exists() and not overwrite:
            raise OutputExistsError(root)
        if root.exists() and not (root / MANIFEST).is_file():
            raise OutputExistsError(root, "it is not an szviewer workspace, so it will not be replaced")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a workspace gets the usual permissions
        try:
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "szviewer_version": __version__,
                "created": now_iso(),
                "kind": kind,
                "bands": [int(b) for b in bands],
                "pixel_arcmin": float(pixel_arcmin),
                "geometry": geometry,
                "products": {},
            }
            write_json(tmp / MANIFEST, manifest)
            yield Workspace(tmp)
            if root.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.replace(root, trash / root.name)
                os.replace(tmp, root)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ manifest
    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def bands(self) -> tuple[int, ...]:
        return tuple(self.manifest["bands"])

    @property
    def pixel_arcmin(self) -> float:
        return float(self.manifest["pixel_arcmin"])

    @property
    def geometry(self) -> dict:
        return self.manifest["geometry"]

    @property
    def products(self) -> dict:
        return self.manifest["products"]

    def path(self, relative: str) -> Path:
        return self.root / relative

    def has(self, product: str) -> bool:
        """True when the product is recorded and all its files exist."""
        entry = self.products.get(product)
        if not entry:
            return False
        return all(self.path(f).exists() for f in entry.get("files", []))

    def record(self, product: str, files: list[str], settings: dict | None = None,
               provenance: dict | None = None, summary: dict | None = None) -> None:
        """Record a product (after its files are in place) and rewrite the manifest atomically."""
        self.manifest["products"][product] = {
            "files": list(files),
            "created": now_iso(),
            "szviewer_version": __version__,
            "settings": settings or {},
            "provenance": provenance or {},
            "summary": summary or {},
        }
        write_json(self.root / MANIFEST, self.manifest)

    def forget(self, product: str) -> None:
        if self.manifest["products"].pop(product, None) is not None:
            write_json(self.root / MANIFEST, self.manifest)

    def rebuild_command(self) -> str:
        """The commands that rebuild this workspace from scratch with its own settings (for old workspaces)."""
        if self.kind != "synthetic":
            return f"`szviewer cutouts {self.root} --overwrite`"
        st = self.products.get("sky", {}).get("settings", {})
        area = "--octant" if st.get("octant") else f"--area {st.get('area_deg2', 100.0):g}"
        return (f"`szviewer simulate --out {self.root} {area} --seed {st.get('seed', 0)} --overwrite`, then "
                f"`szviewer cutouts {self.root}`")

    def missing(self) -> list[tuple[str, str]]:
        """Pipeline products not yet computed, with the command that makes each."""
        return [(name, how) for name, how in PIPELINE if not self.has(name)]

    # ------------------------------------------------------------------ data access
    def halos(self):
        """The truth halo table (astropy Table) or None."""
        if not self.has("halos"):
            return None
        from astropy.table import Table

        path = self.path(self.products["halos"]["files"][0])
        try:
            return Table.read(path)
        except Exception as exc:  # astropy raises many types for damaged files
            raise InputError(path, f"cannot read the halo table: {exc}") from None

    def cutout_store(self):
        """The open :class:`~szviewer.cutouts.store.CutoutStore` (caller closes it)."""
        from szviewer.cutouts.store import CutoutStore

        if not self.has("cutouts"):
            raise InputError(self.root, "workspace has no cutouts yet (run `szviewer cutouts WS`)")
        sky = self.sky() if self.kind in ("synthetic", "fits") else None
        return CutoutStore(self.path(CUTOUTS), sky=sky)

    def scores(self, ids=None) -> dict:
        """Score columns (``mf_snr``, ``cnn_prob``, ...) aligned with the cutout store's rows."""
        from szviewer.cutouts.scores import read_scores

        return read_scores(self.path(SCORES), ids)

    def write_scores(self, product: str, ids, columns: dict, meta: dict | None = None,
                     settings: dict | None = None, summary: dict | None = None, files: list[str] = ()) -> None:
        """Write score columns for a finder and record the product (e.g. 'mf' with column 'mf_snr'), whose
        files are the score table plus ``files`` (e.g. the finder's catalogue)."""
        from szviewer.cutouts.scores import write_score_columns

        write_score_columns(self.path(SCORES), ids, columns, meta)
        self.record(product, [SCORES, *files], settings=settings, summary=summary)

    def sky(self):
        """The maps of this workspace as an object with ``cut(ra, dec, npix, pixel_arcmin, components)``."""
        kind = self.kind
        if kind == "synthetic":
            from szviewer.sky.tiledsky import TiledSky

            files = self.products["sky"]["files"]
            tiles = [self.path(f) for f in files if f.endswith(".h5")]
            maps = [self.path(f) for f in files if f.endswith(".npy")]
            if not maps:
                raise InputError(self.root, OLD_SYNTHETIC_SKY.format(how=self.rebuild_command()))
            return TiledSky(tiles, maps)
        if kind == "sehgal":
            from szviewer.sky.sehgal import open_sehgal_dir

            return open_sehgal_dir(self.products["sky"]["provenance"]["directory"])
        if kind == "fits":
            from szviewer.sky.fits_maps import open_described

            # maps, ivar, mask, beams and frequencies as recorded at import (older records: maps only)
            return open_described(self.products["sky"]["provenance"])
        raise InputError(self.root / MANIFEST, f"unknown workspace kind {kind!r}")
