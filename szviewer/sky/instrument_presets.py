"""Instrument preset files: the shipped presets listed and loaded, and a preset TOML file parsed and checked.

:func:`load_instrument` takes a preset name (``resources/instruments/*.toml``) or the path of a user's file;
:func:`parse_instrument` reads the text into an :class:`~szviewer.sky.instruments.Instrument`, each bad field a
one-line :class:`InputError` naming the file and the field.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from importlib import resources
from pathlib import Path

from szviewer.errors import InputError
from szviewer.sky.beams import Beam, read_beam_file
from szviewer.sky.instruments import DEPTH_PATTERNS, BandSpec, Instrument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# ---------------------------------------------------------------------------------------------- presets

def _preset_dir():
    return resources.files("szviewer.resources").joinpath("instruments")


def instrument_names() -> list[str]:
    """The shipped presets (file stems in ``resources/instruments/``), sorted."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".toml"))


def load_instrument(name_or_path: str | os.PathLike) -> Instrument:
    """An instrument from a shipped preset name (e.g. ``"act-dr6"``) or a path to a ``.toml`` file.

    Bad input raises a one-line :class:`InputError` naming the file and the field.
    """
    text = os.fspath(name_or_path)
    looks_like_path = text.endswith(".toml") or os.sep in text or "/" in text or Path(text).is_file()
    if looks_like_path:
        path = Path(text)
        if not path.is_file():
            raise InputError(path, "instrument file not found")
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(path, f"cannot read instrument file: {e}") from None
        return parse_instrument(raw, path)
    names = instrument_names()
    if text not in names:
        close = difflib.get_close_matches(text, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(text, f"unknown instrument preset{hint} Known presets: {', '.join(names)}; "
                               f"or give the path of a .toml file")
    res = _preset_dir().joinpath(text + ".toml")
    with resources.as_file(res) as path:
        return parse_instrument(Path(path).read_text(encoding="utf-8"), Path(path))


# ---------------------------------------------------------------------------------------------- parsing

#: section -> {key: (kind, default)}; default None = required (top level and bands only)
_TOP = {"name": ("str", None), "description": ("str", ""), "pixel_arcmin": ("num", None),
        "references": ("strlist", []), "bands": ("bands", None), "atmosphere": ("table", {}),
        "depth": ("table", {}), "footprint": ("table", {}), "holes": ("table", {})}
_BAND = {"band": ("int", None), "freq_ghz": ("num", None), "white_uk_arcmin": ("num", None),
         "fwhm_arcmin": ("num", None), "beam_file": ("str", None), "ell_knee": ("num", 0.0),
         "alpha_knee": ("num", None)}
_SECTIONS = {
    "atmosphere": {"correlation": ("num", 0.0), "anisotropy": ("num", 1.0)},
    "depth": {"pattern": ("str", "uniform"), "contrast": ("num", 1.0), "scale_deg": ("num", None)},
    "footprint": {"edge_apod_arcmin": ("num", 0.0)},
    "holes": {"flux_mjy": ("num", 0.0), "band": ("int", None), "radius_arcmin": ("num", None),
              "apod_arcmin": ("num", 0.0)},
}


class _Reader:
    """Typed access to one TOML table, reporting ``field 'where.key': problem`` against the file."""

    def __init__(self, path, table: dict, where: str, spec: dict):
        self.path, self.table, self.where, self.spec = path, table, where, spec
        for key in table:
            if key not in spec:
                close = difflib.get_close_matches(key, list(spec), n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(spec)}"
                raise InputError(path, f"unknown key {self.name(key)!r}{hint}")

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str):
        raise InputError(self.path, f"field {self.name(key)!r}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, required: bool = False, why: str = ""):
        kind, default = self.spec[key]
        if key not in self.table:
            if required or default is None:
                self.fail(key, "missing" + (f" ({why})" if why else ""))
            return default
        v = self.table[key]
        if kind == "num":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.fail(key, f"expected a number, got {type(v).__name__} {v!r}")
            v = float(v)
            if not math.isfinite(v):
                self.fail(key, f"{v} is not a finite number")
        elif kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                self.fail(key, f"expected an integer, got {type(v).__name__} {v!r}")
        elif kind == "str":
            if not isinstance(v, str):
                self.fail(key, f"expected a string, got {type(v).__name__} {v!r}")
        elif kind == "strlist":
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                self.fail(key, "expected a list of strings")
        elif kind == "table":
            if not isinstance(v, dict):
                self.fail(key, f"expected a table [{key}], got {type(v).__name__}")
        elif kind == "bands":
            if not isinstance(v, list) or not all(isinstance(b, dict) for b in v):
                self.fail(key, "expected one [[bands]] table per band")
        return v

    def positive(self, key: str, value: float, strict: bool = True) -> float:
        if value < 0 or (strict and value == 0):
            self.fail(key, f"{value:g} must be {'> 0' if strict else '>= 0'}")
        return value


def parse_instrument(text: str, path: str | os.PathLike | None = None) -> Instrument:
    """An :class:`Instrument` from the text of a preset file; beam files are read relative to ``path``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"not valid TOML: {e}") from None
    top = _Reader(path, data, "", _TOP)
    name = top.get("name")
    if not name.strip():
        top.fail("name", "must not be empty")
    pixel = top.positive("pixel_arcmin", top.get("pixel_arcmin"))
    base = Path(path).parent if path is not None else Path.cwd()
    raw_bands = top.get("bands")
    if not raw_bands:
        top.fail("bands", "no bands: give at least one [[bands]] table")
    bands = tuple(_parse_band(path, raw, i, base) for i, raw in enumerate(raw_bands))
    ids = [b.band for b in bands]
    dup = sorted({b for b in ids if ids.count(b) > 1})
    if dup:
        top.fail("bands", f"band id {dup[0]} appears {ids.count(dup[0])} times; band ids must be unique")

    atm = _Reader(path, top.get("atmosphere"), "atmosphere", _SECTIONS["atmosphere"])
    corr = atm.get("correlation")
    if not 0.0 <= corr <= 1.0:
        atm.fail("correlation", f"{corr:g} must be in [0, 1]")
    aniso = atm.positive("anisotropy", atm.get("anisotropy"))

    dep = _Reader(path, top.get("depth"), "depth", _SECTIONS["depth"])
    pattern = dep.get("pattern")
    if pattern not in DEPTH_PATTERNS:
        close = difflib.get_close_matches(pattern, DEPTH_PATTERNS, n=1)
        dep.fail("pattern", f"{pattern!r} is not one of {', '.join(DEPTH_PATTERNS)}"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
    contrast = dep.get("contrast")
    if contrast < 1:
        dep.fail("contrast", f"{contrast:g} must be >= 1 (ratio of the deepest to the shallowest hits)")
    if pattern == "smooth":
        scale = dep.positive("scale_deg", dep.get("scale_deg", required=True, why="needed for pattern 'smooth'"))
    else:
        scale = dep.positive("scale_deg", dep.get("scale_deg"), strict=False) if dep.has("scale_deg") else 0.0

    foot = _Reader(path, top.get("footprint"), "footprint", _SECTIONS["footprint"])
    edge = foot.positive("edge_apod_arcmin", foot.get("edge_apod_arcmin"), strict=False)

    holes = _Reader(path, top.get("holes"), "holes", _SECTIONS["holes"])
    flux = holes.positive("flux_mjy", holes.get("flux_mjy"), strict=False)
    hole_band, radius, apod = 0, 0.0, 0.0
    if flux > 0:
        hole_band = holes.get("band", required=True, why="needed when flux_mjy > 0")
        if hole_band not in ids:
            holes.fail("band", f"{hole_band} is not one of the bands {ids}")
        radius = holes.positive("radius_arcmin", holes.get("radius_arcmin", required=True,
                                                           why="needed when flux_mjy > 0"))
        apod = holes.positive("apod_arcmin", holes.get("apod_arcmin"), strict=False)
    return Instrument(name=name, description=top.get("description"), pixel_arcmin=pixel, bands=bands,
                      atmosphere_correlation=corr, anisotropy=aniso, depth_pattern=pattern,
                      depth_contrast=contrast, depth_scale_deg=scale, edge_apod_arcmin=edge, hole_flux_mjy=flux,
                      hole_band=int(hole_band), hole_radius_arcmin=radius, hole_apod_arcmin=apod,
                      references=tuple(top.get("references")),
                      path=None if path is None else os.fspath(path), _text=text)


def _parse_band(path, raw: dict, i: int, base: Path) -> BandSpec:
    r = _Reader(path, raw, f"bands[{i}]", _BAND)
    band = r.get("band")
    if band <= 0:
        r.fail("band", f"{band} must be a positive integer (nominal GHz)")
    freq = r.positive("freq_ghz", r.get("freq_ghz"))
    white = r.positive("white_uk_arcmin", r.get("white_uk_arcmin"))
    if r.has("fwhm_arcmin") and r.has("beam_file"):
        r.fail("beam_file", "give fwhm_arcmin or beam_file, not both")
    if r.has("beam_file"):
        beam = _read_band_beam(r, base)
    elif r.has("fwhm_arcmin"):
        beam = Beam.gaussian(r.positive("fwhm_arcmin", r.get("fwhm_arcmin"), strict=False))
    else:
        r.fail("fwhm_arcmin", "missing (give fwhm_arcmin, 0 for no beam, or beam_file)")
    knee = r.positive("ell_knee", r.get("ell_knee"), strict=False)
    alpha = 0.0
    if knee > 0:
        alpha = r.get("alpha_knee", required=True, why="needed when ell_knee > 0")
        if alpha >= 0:
            r.fail("alpha_knee", f"{alpha:g} must be < 0 when ell_knee > 0 (1/f noise falls with ell)")
    elif r.has("alpha_knee"):
        alpha = r.get("alpha_knee")
    return BandSpec(band=int(band), freq_ghz=freq, white_uk_arcmin=white, beam=beam, ell_knee=knee,
                    alpha_knee=alpha)


def _read_band_beam(r: _Reader, base: Path) -> Beam:
    rel = r.get("beam_file")
    p = Path(rel)
    p = p if p.is_absolute() else base / p
    try:
        return read_beam_file(p)
    except InputError as e:
        r.fail("beam_file", f"{e.path or rel}: {e.problem}")
