"""The workspace manifest ``workspace.json``: its schema, checked on every open, and its atomic rewrite.

A manifest is a JSON object::

    schema_version    int (<= SCHEMA_VERSION)          szviewer_version  str       created  str (ISO 8601)
    kind              'synthetic' | 'sehgal' | 'fits'  bands             [int]     pixel_arcmin  number > 0
    geometry          {type, footprint [4 numbers], ...}
    generation        int, the last generation number handed out (one per committed product)
    products          {name: {files: [str], generation: int, created: str, inputs: {name: int},
                              external: {what: {path, size, mtime, sha256}}, settings: {}, provenance: {},
                              summary: {}}}

:func:`validate` checks every field a reader relies on and raises one :class:`InputError` naming the file and the
field, so a damaged or hand-edited manifest is a one-line message in every command and in the app.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from szviewer.errors import InputError

MANIFEST = "workspace.json"
SCHEMA_VERSION = 2
KINDS = ("synthetic", "sehgal", "fits")


def _fail(path, field: str, problem: str):
    raise InputError(path, f"field {field!r}: {problem}")


def _number(path, field, v, positive=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        _fail(path, field, f"{v!r} is not a {'positive ' if positive else ''}finite number")


def validate(manifest, path: str | os.PathLike, reader_version: str = "") -> dict:
    """Check a parsed manifest; returns it. One-line InputError naming ``path`` and the field otherwise."""
    if not isinstance(manifest, dict):
        raise InputError(path, f"the manifest is a JSON {type(manifest).__name__}, not an object; this folder's "
                               "workspace.json is damaged")
    version = manifest.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        _fail(path, "schema_version", f"{version!r} is not an integer")
    if version > SCHEMA_VERSION:
        raise InputError(path, f"schema version {version} is newer than this szviewer ({reader_version}) reads "
                               f"(<= {SCHEMA_VERSION}); update szviewer")
    for key in ("kind", "bands", "pixel_arcmin", "geometry", "products"):
        if key not in manifest:
            _fail(path, key, "missing")
    if manifest["kind"] not in KINDS:
        _fail(path, "kind", f"{manifest['kind']!r} is not one of {', '.join(KINDS)}")
    bands = manifest["bands"]
    if (not isinstance(bands, list) or not bands
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bands)):
        _fail(path, "bands", f"{bands!r} is not a list of band frequencies in GHz")
    if len(set(bands)) != len(bands):
        _fail(path, "bands", f"{bands!r} names a band twice")
    _number(path, "pixel_arcmin", manifest["pixel_arcmin"], positive=True)
    geometry = manifest["geometry"]
    if not isinstance(geometry, dict):
        _fail(path, "geometry", "is not an object")
    if "footprint" in geometry:
        fp = geometry["footprint"]
        if not isinstance(fp, list) or len(fp) != 4:
            _fail(path, "geometry.footprint", f"{fp!r} is not [ra_min, ra_max, dec_min, dec_max]")
        for i, v in enumerate(fp):
            _number(path, f"geometry.footprint[{i}]", v)
    gen = manifest.get("generation", 0)
    if isinstance(gen, bool) or not isinstance(gen, int) or gen < 0:
        _fail(path, "generation", f"{gen!r} is not a non-negative integer")
    products = manifest["products"]
    if not isinstance(products, dict):
        _fail(path, "products", "is not an object")
    for name, entry in products.items():
        where = f"products.{name}"
        if not isinstance(entry, dict):
            _fail(path, where, "is not an object")
        files = entry.get("files", [])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            _fail(path, f"{where}.files", f"{files!r} is not a list of file names")
        for f in files:
            p = Path(f)
            if p.is_absolute() or ".." in p.parts:
                _fail(path, f"{where}.files", f"{f!r} leaves the workspace")
        for key in ("settings", "provenance", "summary", "inputs", "external"):
            if key in entry and not isinstance(entry[key], dict):
                _fail(path, f"{where}.{key}", "is not an object")
        for dep, g in (entry.get("inputs") or {}).items():
            if isinstance(g, bool) or not isinstance(g, int):
                _fail(path, f"{where}.inputs.{dep}", f"{g!r} is not a generation number")
        g = entry.get("generation", 0)
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            _fail(path, f"{where}.generation", f"{g!r} is not a generation number")
    return manifest


def read(path: str | os.PathLike, reader_version: str = "") -> dict:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "missing: this folder is not an szviewer workspace") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the manifest: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"corrupt manifest (not UTF-8: {exc})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"corrupt manifest ({exc})") from None
    return validate(manifest, path, reader_version)
