"""Websky (Stein et al. 2020): the files of a Websky folder found, and its HEALPix maps opened as a sky where they lie.

Files in a Websky folder (SCIENCE.md section 8; names as on mocks.cita.utoronto.ca/websky and in PySM):

- ``tsz.fits`` (also ``compton-y.fits``, ``tsz_*.fits``): Compton-y, HEALPix RING, Nside 8192 or 4096.
- ``ksz.fits``: uK_CMB (frequency independent); a reionisation ``ksz_patchy*.fits`` beside it is added to it.
- CIB: ``cib_nu0145.fits``, ``cib_nu0090.2.fits``, ``cib_145.fits``, ``cib-145GHZ_v0.fits``: MJy/sr at the
  frequency in the name. Each band takes a map within 0.1% of it, else a power law per pixel (log I linear in
  log nu) between the two maps that bracket it (``cib='interp'``, the default), or the intensity of the nearest
  map (``cib='nearest'``); see :func:`szviewer.sky.healpix_recipes.band_parts`.
- ``lensed_alm*.fits``: alms of the lensed CMB (T in HDU 1, uK_CMB); synthesised once at the maps' Nside by
  :func:`szviewer.sky.websky_cmb.synthesise_cmb` (``healpy.alm2map``, lmax at most 3 Nside - 1) and cached as a
  HEALPix map.
- ``halos.pksc``: :func:`szviewer.sky.websky_halos.read_pksc`.

A unit keyword in a map's header is used when present; without one the Websky convention above is assumed (and
recorded as such). Every value a cutout gets is float32 uK_CMB at the band.

Websky's cosmology and halo masses: :mod:`szviewer.sky.websky_cosmology`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from szviewer.errors import InputError
from szviewer.sky.bands import BANDS_GHZ
from szviewer.sky.healpix import HealpixSky
from szviewer.sky.healpix_files import open_healpix_file, parse_unit
from szviewer.sky.healpix_recipes import MapSource, band_parts

_CIB_RE = re.compile(r"^cib[-_]?(?:nu)?0*(\d+(?:\.\d+)?)(?:ghz)?(?:[-_][^/]*)?\.fits$", re.IGNORECASE)
_TSZ_RE = re.compile(r"^(?:tsz|compton[-_]?y)(?:[-_][^/]*)?\.fits$", re.IGNORECASE)
_KSZ_RE = re.compile(r"^ksz(?:[-_][^/]*)?\.fits$", re.IGNORECASE)
_PATCHY_RE = re.compile(r"^ksz[-_]?patchy[^/]*\.fits$", re.IGNORECASE)


@dataclass
class WebskyFiles:
    """The files of a Websky folder that a sky is made of (names relative to ``directory``)."""

    directory: Path
    tsz: str
    ksz: list[str] = field(default_factory=list)
    cib: dict[str, float] = field(default_factory=dict)
    alm: str | None = None
    halos: str | None = None

    def to_json(self) -> dict:
        return {"tsz": self.tsz, "ksz": list(self.ksz), "cib": dict(self.cib), "alm": self.alm, "halos": self.halos}

    @classmethod
    def from_json(cls, directory, d: dict) -> WebskyFiles:
        cib = {k: float(v) for k, v in d.get("cib", {}).items()}
        return cls(Path(directory), d["tsz"], list(d.get("ksz", [])), cib, d.get("alm"), d.get("halos"))

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.directory / p


def _one(directory: Path, names: list[str], what: str, hint: str) -> str | None:
    if len(names) > 1:
        raise InputError(directory, f"several {what}: {', '.join(names)}; {hint}")
    return names[0] if names else None


def find_websky_files(directory, cmb_alm=None, halos=None) -> WebskyFiles:
    """Find the Websky files of a folder (module docstring): one tSZ map (required), kSZ maps, CIB maps by
    frequency, the lensed-CMB alms (required: every component level has the CMB; ``cmb_alm`` names the file when
    there are several) and ``halos.pksc`` (``halos`` overrides). One-line :class:`InputError` otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "no such directory")
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    fits_names = [n for n in names if n.lower().endswith(".fits") and "alm" not in n.lower()]
    if "tsz.fits" in fits_names:
        tsz = "tsz.fits"
    else:
        tsz = _one(directory, [n for n in fits_names if _TSZ_RE.match(n)], "tSZ maps",
                   "keep one, or name the one to use tsz.fits")
    if tsz is None:
        raise InputError(directory, "no tsz.fits (the Compton-y map): not a Websky folder? expected tsz.fits, "
                                    "ksz.fits, cib_nu*.fits, lensed_alm*.fits and halos.pksc")
    patchy = [n for n in fits_names if _PATCHY_RE.match(n)]
    if "ksz.fits" in fits_names:
        ksz = ["ksz.fits"]
    else:
        k = _one(directory, [n for n in fits_names if _KSZ_RE.match(n) and n not in patchy], "kSZ maps",
                 "keep one, or name the one to use ksz.fits")
        ksz = [k] if k else []
    p = _one(directory, patchy, "patchy kSZ maps", "keep one")
    if p is not None:
        ksz.append(p)
    cib: dict[str, float] = {}
    seen: dict[float, str] = {}
    for n in fits_names:
        m = _CIB_RE.match(n)
        if m is None:
            continue
        nu = float(m.group(1))
        if nu <= 0:
            continue
        if nu in seen:
            raise InputError(directory / n, f"a second CIB map at {nu:g} GHz (also {seen[nu]}); keep one")
        seen[nu] = n
        cib[n] = nu
    if cmb_alm is not None:
        alm_path = Path(cmb_alm)
        if not alm_path.is_file():
            raise InputError(alm_path, "no such file (the lensed-CMB alms)")
        alm = str(alm_path.resolve())
    else:
        alms = [n for n in names if n.lower().startswith("lensed_alm") and n.lower().endswith(".fits")]
        alm = "lensed_alm.fits" if "lensed_alm.fits" in alms else _one(
            directory, alms, "lensed-CMB alm files", "choose one with --cmb-alm FILE")
        if alm is None:
            raise InputError(directory, "no lensed_alm*.fits (the lensed CMB): every component level holds the CMB; "
                                        "give the alms with --cmb-alm FILE")
    if halos is not None:
        halo_name = str(Path(halos).resolve())
    elif "halos.pksc" in names:
        halo_name = "halos.pksc"
    else:
        halo_name = _one(directory, [n for n in names if n.lower().endswith(".pksc")], "halo catalogues (.pksc)",
                         "choose one with --halos FILE")
    return WebskyFiles(directory, tsz, ksz, cib, alm, halo_name)


def _source(path: Path, expect: str, factor: float, convention: str, freq: float | None) -> MapSource:
    """A Websky map with its unit: the header's when it has one, else the Websky convention."""
    f = open_healpix_file(path)
    if f.unit is not None and str(f.unit).strip():
        parsed = parse_unit(f.unit)
        if parsed is None:
            raise InputError(path, f"unsupported unit {f.unit!r}; expected {convention}")
        return MapSource(f, parsed[0], parsed[1], freq, str(f.unit).strip())
    return MapSource(f, expect, factor, freq, f"{convention} (Websky convention; no unit keyword)")


def open_websky_dir(directory, cmb_map=None, cib: str = "interp", selection: WebskyFiles | None = None,
                    bands=BANDS_GHZ) -> HealpixSky:
    """Open a Websky folder as a :class:`~szviewer.sky.healpix.HealpixSky` (components cmb, tsz, ksz, ir).

    ``cmb_map``: the lensed CMB already synthesised as a HEALPix map in uK_CMB (:func:`synthesise_cmb`; without it
    the sky has no ``cmb``); ``cib``: 'interp' or 'nearest' (module docstring); ``selection``: the files to use
    (default :func:`find_websky_files`). Every map's header is checked; maps may have different Nside.
    """
    if cib not in ("interp", "nearest"):
        raise ValueError(f"cib {cib!r}: expected 'interp' or 'nearest'")
    directory = Path(directory)
    sel = selection or find_websky_files(directory)
    sources: list[MapSource] = [_source(sel.path(sel.tsz), "y", 1.0, "Compton-y", None)]
    layers: dict[str, list[list[int]]] = {"tsz": [[0]]}
    for name in sel.ksz:
        sources.append(_source(sel.path(name), "uK_CMB", 1.0, "uK_CMB", None))
        layers.setdefault("ksz", []).append([len(sources) - 1])
    cib_layer = []
    for name, nu in sorted(sel.cib.items(), key=lambda kv: kv[1]):
        sources.append(_source(sel.path(name), "Jy/sr", 1e6, "MJy/sr", nu))
        cib_layer.append(len(sources) - 1)
    if cib_layer:
        layers["ir"] = [cib_layer]
    if cmb_map is not None:
        sources.append(_source(Path(cmb_map), "uK_CMB", 1.0, "uK_CMB", None))
        layers["cmb"] = [[len(sources) - 1]]
    recipes = {comp: {int(b): [p for layer in ls for p in band_parts(comp, sources, layer, b, cib, directory)]
                      for b in bands} for comp, ls in layers.items()}
    settings = {"cib": cib, "files": sel.to_json()}
    return HealpixSky(directory, "websky", sources, recipes, bands, settings,
                      reopen=(open_websky_dir, (directory, cmb_map, cib, sel, tuple(bands))))


def reopen_websky(provenance: dict, root) -> HealpixSky:
    """The Websky sky an import recorded (:meth:`HealpixSky.describe` plus ``settings['cmb_map']``, relative to
    the workspace ``root``)."""
    s = provenance.get("settings", {})
    directory = Path(provenance["directory"])
    sel = WebskyFiles.from_json(directory, s["files"])
    cmb = s.get("cmb_map")
    return open_websky_dir(directory, Path(root) / cmb if cmb else None, s.get("cib", "interp"), sel,
                           provenance.get("bands_ghz", BANDS_GHZ))
