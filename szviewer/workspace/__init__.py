"""The on-disk workspace: a folder with a validated, versioned ``workspace.json`` manifest and its products.

Layout::

    WS/workspace.json           the manifest (:mod:`.manifest`): schema, kind, bands, pixel size, geometry, and
                                for every product its files, generation, inputs, settings, provenance, summary
    WS/halos.fits, sources.fits truth halos, point sources          WS/instrument.toml  the instrument (synthetic)
    WS/tiles/, WS/maps/         the synthetic sky: noiseless components and observed maps per tile
    WS/<product>/g<NNNNNN>/     one generation of a job's product: cutouts, mf, cnn, cnn_model, evaluation, ...
    WS/.locks/                  the product and manifest locks (:mod:`.locks`)

A new workspace is built in a hidden sibling folder and renamed when complete; a job's product is built in a
hidden generation folder and committed with its manifest entry in one step (:mod:`.products`), under locks, so a
crash, a kill or a cancel never leaves a half product, two jobs never lose each other's updates, and a product
made from inputs that have since been rebuilt is reported stale, with the command that refreshes it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from szviewer import __version__
from szviewer.atomic import atomic_dir, write_json
from szviewer.errors import InputError, OutputExistsError
from szviewer.workspace import locks
from szviewer.workspace import manifest as _manifest
from szviewer.workspace.manifest import MANIFEST, SCHEMA_VERSION
from szviewer.workspace.products import (
    ProductWriter,
    check_replace,
    no_space_is_input_error,
    refresh_command,
    stale_reasons,
)

#: What a synthetic workspace of schema 1 (szviewer 0.1: no observed maps, noise drawn per cutout) is told.
OLD_SYNTHETIC_SKY = ("made by szviewer 0.1, whose sky had no noise maps (noise was drawn per cutout, so the finders "
                     "saw different noise); rebuild it: {how}")
CUTOUTS = "cutouts.h5"
#: Notes for the user from this process's writes (the CLI prints them when the command ends).
NOTICES: list[str] = []
#: The score table of round one and of early schema-2 workspaces (one shared file); new products keep their own.
LEGACY_SCORES = "scores.h5"

#: Products a complete workspace has, in pipeline order, with what makes each.
PIPELINE = (
    ("sky", "szviewer simulate / szviewer import"),
    ("cutouts", "szviewer cutouts WS"),
    ("mf", "szviewer mf WS"),
    ("cnn", "szviewer predict WS"),
    ("evaluation", "szviewer evaluate WS"),
)
#: What a product is made from (the inputs a job records; a rebuilt input makes the product stale).
INPUTS = {
    "skycard": ("sky",),
    "cutouts": ("sky", "halos"),
    "mf": ("cutouts", "sky", "halos", "sources"),
    "mf_injection": ("sky",),  # the maps and their noise; the cutout grid plays no part
    "cnn_model": ("cutouts",),
    "cnn": ("cutouts", "cnn_model"),
    "cnn_dense": ("cutouts", "sky", "cnn_model"),
    "cnn_mass": ("cutouts", "cnn_model", "cnn"),
    "evaluation": ("cutouts",),
}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Workspace:
    """An open workspace folder. Cheap to open: only the manifest is read."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "no such workspace folder")
        self.manifest = _manifest.read(self.root / MANIFEST, __version__)
        #: one-line notes for the user from the last write (e.g. leftovers of killed runs removed)
        self.notices: list[str] = []

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
        for left in locks.leftovers(root.parent, recursive=False):
            if left.name.startswith(f".{root.name}."):
                locks.remove([left])
        with contextlib.ExitStack() as stack:
            try:  # the checks above decided whether an existing root may be replaced
                tmp = stack.enter_context(atomic_dir(root, overwrite=True))
            except OSError as exc:
                raise InputError(root.parent, f"cannot create the workspace here ({exc.strerror})") from None
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "szviewer_version": __version__,
                "created": now_iso(),
                "kind": kind,
                "bands": [int(b) for b in bands],
                "pixel_arcmin": float(pixel_arcmin),
                "geometry": geometry,
                "generation": 0,
                "products": {},
            }
            write_json(tmp / MANIFEST, manifest)
            yield Workspace(tmp)

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

    def file(self, product: str, name: str) -> Path:
        """The current file ``name`` of a product (its generation folder's, or a legacy top-level file)."""
        entry = self.products.get(product)
        if not entry:
            raise InputError(self.root, f"workspace has no {product} yet (run `{refresh_command(product, self.root)}`"
                                        .replace(" --overwrite`", "`") + ")")
        for f in entry.get("files", []):
            if Path(f).name == name or f == name:
                return self.path(f)
        raise InputError(self.root, f"product {product} has no file {name}")

    def stale(self, product: str) -> list[str]:
        """Why a product no longer reflects its inputs ([] when fresh or absent)."""
        return stale_reasons(self.products, product) if product in self.products else []

    def refresh_command(self, product: str) -> str:
        return refresh_command(product, self.root)

    def rebuild_command(self) -> str:
        """The commands that rebuild this workspace from scratch with its own settings (for old workspaces)."""
        if self.kind != "synthetic":
            return f"`szviewer cutouts {self.root} --overwrite`"
        st = self.products.get("sky", {}).get("settings", {})
        area = "--octant" if st.get("octant") else f"--area {st.get('area_deg2', 100.0):g}"
        return (f"`szviewer simulate --out {self.root} {area} --seed {st.get('seed', 0)} --overwrite`, then "
                f"`szviewer cutouts {self.root}`")

    def check_fresh(self, products, allow_stale: bool = False) -> list[str]:
        """Refuse stale products (InputError naming the refreshing command) unless ``allow_stale``; returns
        warnings for the stale ones allowed."""
        notes = []
        for p in products:
            why = self.stale(p)
            if not why:
                continue
            msg = f"{p} is stale ({'; '.join(why)}): refresh it with `{self.refresh_command(p)}`"
            if not allow_stale:
                raise InputError(self.root, msg + ", or pass --allow-stale")
            notes.append(msg)
        return notes

    def record(self, product: str, files: list[str], settings: dict | None = None,
               provenance: dict | None = None, summary: dict | None = None,
               inputs: tuple[str, ...] = ()) -> None:
        """Record a product of a workspace being created (its files already in place) and rewrite the manifest
        atomically. Jobs on an existing workspace use :meth:`writing` instead."""
        gen = int(self.manifest.get("generation", 0)) + 1
        self.manifest["generation"] = gen
        self.manifest["products"][product] = {
            "files": list(files),
            "generation": gen,
            "inputs": {d: int(self.products[d].get("generation", 0)) for d in inputs if d in self.products},
            "created": now_iso(),
            "szviewer_version": __version__,
            "settings": settings or {},
            "provenance": provenance or {},
            "summary": summary or {},
        }
        write_json(self.root / MANIFEST, self.manifest)

    def generations(self, product: str, inputs: tuple[str, ...] | None = None) -> dict[str, int]:
        """The current generations of a product's inputs: what a job reads when it starts (pass them to
        :meth:`writing` as ``started`` so a rebuild while the job runs is noticed)."""
        deps = INPUTS.get(product, ()) if inputs is None else inputs
        return {d: int(self.products[d].get("generation", 0)) for d in deps if d in self.products}

    def check_replace(self, product: str, overwrite: bool) -> None:
        """Refuse, before any work, to replace an existing product without ``overwrite``."""
        check_replace(self, product, overwrite)

    @contextlib.contextmanager
    def writing(self, product: str, inputs: tuple[str, ...] | None = None, overwrite: bool = False,
                external: dict | None = None, started: dict[str, int] | None = None) -> Iterator[ProductWriter]:
        """Write one product of this workspace: its files in a private generation folder, committed with its
        manifest entry in one step on success (nothing changes on failure or cancel).

        Refuses an existing product unless ``overwrite`` (the one overwrite policy), a product another job is
        writing (:class:`locks.WorkspaceBusy`), and a read-only workspace (one line, before any work). The inputs
        (default :data:`INPUTS`) are recorded with their generations; if one is rebuilt while the job runs the
        commit is refused. Leftovers of killed runs are removed (and said in :attr:`notices`).
        """
        check_replace(self, product, overwrite)
        with no_space_is_input_error(self.root):
            with locks.product_lock(self.root, product):
                self._clean()
                w = ProductWriter(self, product, INPUTS.get(product, ()) if inputs is None else tuple(inputs),
                                  external)
                if started is not None:  # the generations the job read when it began
                    w.inputs = {d: g for d, g in started.items() if d in w.inputs or inputs is None}
                try:
                    yield w
                    self._commit(w)
                except BaseException:
                    w.discard()
                    raise

    def _clean(self) -> None:
        """Remove leftovers of killed runs: temporary files and folders whose writer is gone, and generation
        folders the manifest does not name (a kill between a folder's rename and the manifest's rewrite)."""
        with locks.manifest_lock(self.root):
            fresh = _manifest.read(self.root / MANIFEST, __version__)
            self.manifest = fresh  # the job starts from the current state
            gone = locks.leftovers(self.root)
            referenced = {Path(f).parts[:2] for e in fresh["products"].values() for f in e.get("files", [])}
            for folder in self.root.iterdir():
                if folder.is_dir() and not folder.name.startswith("."):
                    for g in folder.glob("g[0-9][0-9][0-9][0-9][0-9][0-9]"):
                        if g.is_dir() and (folder.name, g.name) not in referenced:
                            gone.append(g)
            n = locks.remove(gone)
        if n:
            note = f"removed {n} leftover(s) of killed runs in {self.root}"
            self.notices.append(note)
            NOTICES.append(note)

    def _commit(self, w: ProductWriter) -> None:
        with locks.manifest_lock(self.root):
            fresh = _manifest.read(self.root / MANIFEST, __version__)
            for dep, gen in w.inputs.items():
                cur = fresh["products"].get(dep)
                if cur is None or int(cur.get("generation", 0)) != gen:
                    raise InputError(self.root, f"{dep} was rebuilt while {w.name} was being made; run "
                                                f"`{refresh_command(w.name, self.root)}` again")
            gen = int(fresh.get("generation", 0)) + 1
            final = self.root / w.name / f"g{gen:06d}"
            files = [f"{w.name}/{final.name}/{f}" for f in w.files()]
            os.replace(w.folder, final)
            old = fresh["products"].get(w.name)
            fresh["generation"] = gen
            fresh["products"][w.name] = {
                "files": files + list(w.extra_files),
                "generation": gen,
                "inputs": dict(w.inputs),
                "external": dict(w.external),
                "created": now_iso(),
                "szviewer_version": __version__,
                "settings": w.settings,
                "provenance": w.provenance,
                "summary": w.summary,
            }
            write_json(self.root / MANIFEST, fresh)
            self.manifest = fresh
        if old:  # the previous generation's folder, now unreferenced
            for f in old.get("files", []):
                parts = Path(f).parts
                if len(parts) >= 3 and parts[0] == w.name and parts[1] != final.name:
                    shutil.rmtree(self.root / parts[0] / parts[1], ignore_errors=True)

    def forget(self, product: str) -> None:
        """Drop a product's manifest entry (under the manifest lock); its files go with the next clean-up."""
        with locks.manifest_lock(self.root):
            fresh = _manifest.read(self.root / MANIFEST, __version__)
            if fresh["products"].pop(product, None) is not None:
                write_json(self.root / MANIFEST, fresh)
            self.manifest = fresh

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
        return CutoutStore(self.file("cutouts", CUTOUTS), sky=sky)

    def score_products(self) -> list[str]:
        """Products that hold score columns, in manifest order."""
        return [n for n, e in self.products.items()
                if any(Path(f).name in ("scores.h5", LEGACY_SCORES) for f in e.get("files", []))]

    def scores(self, ids=None, products=None) -> dict:
        """Score columns (``mf_snr``, ``cnn_prob``, ...) of every score product (or those named), aligned with the
        cutout store's rows. A product's own file wins over the legacy shared ``scores.h5``."""
        from szviewer.cutouts.scores import read_scores

        out: dict = {}
        legacy = self.path(LEGACY_SCORES)
        if legacy.exists() and any(LEGACY_SCORES in e.get("files", []) for e in self.products.values()):
            out.update(read_scores(legacy, ids))
        for name in products or self.score_products():
            for f in self.products.get(name, {}).get("files", []):
                if Path(f).name == "scores.h5" and f != LEGACY_SCORES:
                    out.update(read_scores(self.path(f), ids))
        return out

    def column_products(self) -> dict[str, str]:
        """Which product each score column comes from."""
        from szviewer.cutouts.scores import read_scores

        out = {}
        for name in self.score_products():
            for f in self.products[name].get("files", []):
                if Path(f).name == "scores.h5" and f != LEGACY_SCORES and self.path(f).exists():
                    out.update({c: name for c in read_scores(self.path(f))})
        return out

    def write_scores(self, product: str, ids, columns: dict, meta: dict | None = None,
                     settings: dict | None = None, summary: dict | None = None, files: list[str] = (),
                     overwrite: bool = True, inputs: tuple[str, ...] | None = None) -> None:
        """Write a finder's score columns as a product of its own, in one commit (for tests and scripts that
        score outside a job; jobs write through :meth:`writing`)."""
        with self.writing(product, inputs=inputs, overwrite=overwrite) as w:
            w.write_scores(ids, columns, meta)
            w.settings, w.summary = settings or {}, summary or {}

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
            prov = self.products["sky"]["provenance"]
            from szviewer.sky.healpix import RECORDED_KINDS, open_recorded

            if prov.get("kind") in RECORDED_KINDS:  # simulated HEALPix skies (Websky, AGORA): their recorded recipe
                return open_recorded(prov, self.root)
            from szviewer.sky.sehgal import open_sehgal_dir

            return open_sehgal_dir(prov["directory"])
        if kind == "fits":
            from szviewer.sky.fits_maps import open_described

            # maps, ivar, mask, beams and frequencies as recorded at import (older records: maps only)
            return open_described(self.products["sky"]["provenance"])
        raise InputError(self.root / MANIFEST, f"unknown workspace kind {kind!r}")
