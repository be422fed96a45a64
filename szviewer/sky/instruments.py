"""Instruments: the bands, beams and noise of a survey, read from a preset TOML file a person can read and write.

An :class:`Instrument` is what ``szviewer simulate --instrument NAME`` observes the synthetic sky through: per band
an effective frequency, a beam (Gaussian FWHM or a B_ell table, see :mod:`szviewer.sky.beams`), a white depth and
an atmospheric 1/f knee; one atmosphere shared by all bands; a hit-count pattern; a footprint with apodised edges
and holes around bright sources; a pixel size. The shipped presets live in ``resources/instruments/`` (their
README explains every field); a user passes their own file by path.

The noise model of one band at unit relative hits (white level N_w = (depth [uK rad])^2; the form of the SO
forecasts, Ade et al. 2019 sec. 2.2, and of the CMB-S4 LAT noise models) is::

    N_ell = N_w (1 + (ell / ell_knee)^alpha_knee)        [uK^2 sr]

The 1/f part is correlated between bands with coefficient ``atmosphere_correlation`` r: its cross-spectrum is
``r sqrt(R_a R_b)`` with ``R = N_w (ell/ell_knee)^alpha`` (as the SO V3 noise calculator does within a dichroic
tube, with r = 0.9). The white part is independent between bands.

``anisotropy`` A redistributes the 1/f power of each multipole in angle, toward scan-direction stripes. Columns of a
tile run along RA (the scan direction of SPT; ACT and SO cross-link, A = 1), so a stripe along RA is a mode with
l_x = 0. With phi the angle of the mode (l_x, l_y) from the l_y axis, the 1/f power is multiplied by
``g(phi) = exp(kappa cos 2 phi) / I0(kappa)``, kappa = ln(A) / 2: at a fixed |ell| the modes with l_x = 0 carry A
times the 1/f power of the modes with l_y = 0, and the azimuthal mean of g is exactly 1, so the isotropic N_ell
(and the measured white level and ell_knee) do not depend on A. A = 1 is isotropic.

The map mean is not observed: the 1/f part is given no power at ell = 0 (the white part keeps its own).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from szviewer.errors import InputError
from szviewer.sky.beams import Beam, read_beam_file
from szviewer.sky.spectra import ARCMIN_RAD

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEPTH_PATTERNS = ("uniform", "smooth")


@dataclass(frozen=True)
class BandSpec:
    """One band: nominal id [GHz], effective frequency [GHz], white depth [uK-arcmin], beam, 1/f knee and slope."""

    band: int
    freq_ghz: float
    white_uk_arcmin: float
    beam: Beam
    ell_knee: float = 0.0
    alpha_knee: float = 0.0

    @property
    def has_one_over_f(self) -> bool:
        return self.ell_knee > 0

    def white_sigma_uk(self, pixel_arcmin: float) -> float:
        """Per-pixel standard deviation of the white part at unit hits [uK]: depth [uK-arcmin] / pixel [arcmin]."""
        return self.white_uk_arcmin / float(pixel_arcmin)

    def white_cl(self) -> float:
        """White level N_w [uK^2 sr] = (depth [uK-arcmin] x 1 arcmin in rad)^2."""
        return (self.white_uk_arcmin * ARCMIN_RAD) ** 2

    def one_over_f_ratio(self, ell) -> np.ndarray:
        """(ell / ell_knee)^alpha_knee, the 1/f power in units of the white level; 0 at ell = 0 and without 1/f."""
        ell = np.asarray(ell, dtype=float)
        if not self.has_one_over_f:
            return np.zeros_like(ell)
        with np.errstate(divide="ignore"):
            return np.where(ell > 0, (np.maximum(ell, 1e-30) / self.ell_knee) ** self.alpha_knee, 0.0)

    def noise_cl(self, ell) -> np.ndarray:
        """Auto noise spectrum N_ell [uK^2 sr] at unit hits: N_w (1 + (ell/ell_knee)^alpha); N_w at ell = 0."""
        return self.white_cl() * (1.0 + self.one_over_f_ratio(ell))


@dataclass(frozen=True)
class Instrument:
    """A survey instrument (see the module docstring and ``resources/instruments/README.md``)."""

    name: str
    description: str
    pixel_arcmin: float
    bands: tuple[BandSpec, ...]
    atmosphere_correlation: float = 0.0
    anisotropy: float = 1.0
    depth_pattern: str = "uniform"
    depth_contrast: float = 1.0
    depth_scale_deg: float = 0.0
    edge_apod_arcmin: float = 0.0
    hole_flux_mjy: float = 0.0
    hole_band: int = 0
    hole_radius_arcmin: float = 0.0
    hole_apod_arcmin: float = 0.0
    references: tuple[str, ...] = ()
    path: str | None = None
    _text: str | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ views
    @property
    def band_ids(self) -> tuple[int, ...]:
        return tuple(b.band for b in self.bands)

    @property
    def freqs_ghz(self) -> tuple[float, ...]:
        return tuple(b.freq_ghz for b in self.bands)

    @property
    def white_uk_arcmin(self) -> dict[int, float]:
        return {b.band: b.white_uk_arcmin for b in self.bands}

    @property
    def has_beams(self) -> bool:
        return any(b.beam.is_table or b.beam.fwhm_arcmin > 0 for b in self.bands)

    @property
    def has_one_over_f(self) -> bool:
        return any(b.has_one_over_f for b in self.bands)

    def band(self, band_id: int) -> BandSpec:
        for b in self.bands:
            if b.band == int(band_id):
                return b
        raise KeyError(f"instrument {self.name!r} has no band {band_id} (bands {list(self.band_ids)})")

    # ------------------------------------------------------------------ noise covariance
    def noise_power(self, shape: tuple[int, int], pixel_arcmin: float | None = None) -> np.ndarray:
        """Stationary noise covariance at unit relative hits, (nb, nb, ny, nx // 2 + 1) float64, uK^2 per pixel.

        Same convention as ``szviewer.mf.noise``: ``P_ij(k) = <M_i(k) M_j(k)^*> / N_pix`` for the unnormalised
        rfft2 ``M`` of the maps, so a white map of per-pixel sigma s has P = s^2 and a C_ell [uK^2 sr] gives
        P = C_ell / Omega_pix. White on the diagonal; the 1/f part (anisotropic if ``anisotropy`` != 1) with
        cross terms ``r sqrt(R_i R_j)``.
        """
        pix = self.pixel_arcmin if pixel_arcmin is None else float(pixel_arcmin)
        ny, nx = shape
        nb = len(self.bands)
        out = np.zeros((nb, nb, ny, nx // 2 + 1))
        red = one_over_f_amplitudes(self, shape, pix)  # sqrt of the 1/f power per band, or None
        for i, b in enumerate(self.bands):
            out[i, i] = b.white_sigma_uk(pix) ** 2
        if red is None:
            return out
        r = self.atmosphere_correlation
        for i in range(nb):
            if red[i] is None:
                continue
            out[i, i] += red[i].astype(np.float64) ** 2
            for j in range(i + 1, nb):
                if red[j] is not None and r > 0:
                    cross = r * red[i].astype(np.float64) * red[j]
                    out[i, j] = cross
                    out[j, i] = cross
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """A JSON-ready dict (beam tables inline), the inverse of :meth:`from_dict`."""
        return {
            "name": self.name, "description": self.description, "pixel_arcmin": self.pixel_arcmin,
            "bands": [_band_to_dict(b) for b in self.bands],
            "atmosphere_correlation": self.atmosphere_correlation, "anisotropy": self.anisotropy,
            "depth_pattern": self.depth_pattern, "depth_contrast": self.depth_contrast,
            "depth_scale_deg": self.depth_scale_deg, "edge_apod_arcmin": self.edge_apod_arcmin,
            "hole_flux_mjy": self.hole_flux_mjy, "hole_band": self.hole_band,
            "hole_radius_arcmin": self.hole_radius_arcmin, "hole_apod_arcmin": self.hole_apod_arcmin,
            "references": list(self.references), "path": self.path,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Instrument:
        d = dict(d)
        d["bands"] = tuple(_band_from_dict(b) for b in d["bands"])
        d["references"] = tuple(d.get("references", ()))
        for key in ("pixel_arcmin", "atmosphere_correlation", "anisotropy", "depth_contrast", "depth_scale_deg",
                    "edge_apod_arcmin", "hole_flux_mjy", "hole_radius_arcmin", "hole_apod_arcmin"):
            d[key] = float(d[key])
        d["hole_band"] = int(d["hole_band"])
        return cls(**d)

    def toml_text(self) -> str:
        """A readable TOML description: the original file's text when loaded from a file, else generated."""
        return self._text if self._text is not None else _to_toml(self)


# ---------------------------------------------------------------------------------------------- 1/f amplitudes

def _log_anisotropy(shape: tuple[int, int], anisotropy: float) -> np.ndarray | float:
    """ln g(phi) = kappa cos 2 phi - ln I0(kappa), kappa = ln(A)/2, on the rfft2 grid (0.0 when A = 1).

    phi is the angle of the mode from the l_y axis (l_x = 0: a stripe along RA, the scan direction).
    """
    if anisotropy == 1.0:
        return 0.0
    from scipy.special import i0e

    ny, nx = shape
    ky2 = (np.fft.fftfreq(ny).astype(np.float32) ** 2)[:, None]
    kx2 = (np.fft.rfftfreq(nx).astype(np.float32) ** 2)[None, :]
    k2 = ky2 + kx2
    k2[0, 0] = 1.0
    cos2 = (ky2 - kx2) / k2
    cos2[0, 0] = 0.0
    kappa = 0.5 * math.log(anisotropy)
    ak = abs(kappa)
    return np.float32(kappa) * cos2 - np.float32(ak + math.log(i0e(ak)))  # ln I0(k) = |k| + ln i0e(|k|)


def anisotropy_weight(shape: tuple[int, int], anisotropy: float) -> np.ndarray:
    """g(phi) = exp(kappa cos 2 phi) / I0(kappa) on the rfft2 grid (see the module docstring), float32."""
    return np.exp(np.broadcast_to(_log_anisotropy(shape, anisotropy), (shape[0], shape[1] // 2 + 1)),
                  dtype=np.float32)


def one_over_f_amplitudes(inst: Instrument, shape: tuple[int, int], pixel_arcmin: float) -> list | None:
    """Per band, sqrt of the 1/f power [uK, per-pixel units] on the rfft2 grid (float32), or None for a band
    without 1/f; None overall for a white-only instrument. Zero at ell = 0.

    amp_b = sigma_b (ell / ell_knee)^(alpha/2) sqrt(g), computed as one exp of a sum of logs per band.
    """
    if not inst.has_one_over_f:
        return None
    ny, nx = shape
    d = pixel_arcmin * ARCMIN_RAD
    ly2 = ((np.fft.fftfreq(ny, d=d) * 2 * np.pi) ** 2).astype(np.float32)[:, None]
    lx2 = ((np.fft.rfftfreq(nx, d=d) * 2 * np.pi) ** 2).astype(np.float32)[None, :]
    ln_ell = ly2 + lx2
    ln_ell[0, 0] = 1.0  # the DC amplitude is set to 0 below
    np.log(ln_ell, out=ln_ell)
    ln_ell *= np.float32(0.5)
    half_ln_g = np.float32(0.5) * _log_anisotropy(shape, inst.anisotropy)
    out = []
    for b in inst.bands:
        if not b.has_one_over_f:
            out.append(None)
            continue
        half_alpha = np.float32(0.5 * b.alpha_knee)
        const = np.float32(math.log(b.white_sigma_uk(pixel_arcmin)) - 0.5 * b.alpha_knee * math.log(b.ell_knee))
        amp = half_alpha * ln_ell
        amp += half_ln_g
        amp += const
        np.exp(amp, out=amp)
        amp[0, 0] = 0.0
        out.append(amp)
    return out


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


# ---------------------------------------------------------------------------------------------- dict / TOML out

def _band_to_dict(b: BandSpec) -> dict:
    d = {"band": b.band, "freq_ghz": b.freq_ghz, "white_uk_arcmin": b.white_uk_arcmin,
         "ell_knee": b.ell_knee, "alpha_knee": b.alpha_knee}
    if b.beam.is_table:
        d["beam"] = {"ell": list(b.beam.ell), "bell": list(b.beam.bell), "path": b.beam.path}
    else:
        d["beam"] = {"fwhm_arcmin": b.beam.fwhm_arcmin}
    return d


def _band_from_dict(d: dict) -> BandSpec:
    beam_d = d["beam"]
    if "ell" in beam_d:
        beam = Beam.from_table(beam_d["ell"], beam_d["bell"], beam_d.get("path"))
    else:
        beam = Beam.gaussian(beam_d["fwhm_arcmin"])
    return BandSpec(band=int(d["band"]), freq_ghz=float(d["freq_ghz"]), white_uk_arcmin=float(d["white_uk_arcmin"]),
                    beam=beam, ell_knee=float(d["ell_knee"]), alpha_knee=float(d["alpha_knee"]))


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _to_toml(inst: Instrument) -> str:
    lines = [f"name = {_q(inst.name)}", f"description = {_q(inst.description)}",
             f"pixel_arcmin = {inst.pixel_arcmin!r}",
             "references = [" + ", ".join(_q(r) for r in inst.references) + "]", ""]
    for b in inst.bands:
        lines += ["[[bands]]", f"band = {b.band}", f"freq_ghz = {b.freq_ghz!r}",
                  f"white_uk_arcmin = {b.white_uk_arcmin!r}"]
        if b.beam.is_table:
            lines.append(f"beam_file = {_q(b.beam.path or '')}  # B_ell table ({len(b.beam.ell)} rows)")
        else:
            lines.append(f"fwhm_arcmin = {b.beam.fwhm_arcmin!r}")
        lines += [f"ell_knee = {b.ell_knee!r}", f"alpha_knee = {b.alpha_knee!r}", ""]
    lines += ["[atmosphere]", f"correlation = {inst.atmosphere_correlation!r}", f"anisotropy = {inst.anisotropy!r}",
              "", "[depth]", f"pattern = {_q(inst.depth_pattern)}", f"contrast = {inst.depth_contrast!r}",
              f"scale_deg = {inst.depth_scale_deg!r}", "", "[footprint]",
              f"edge_apod_arcmin = {inst.edge_apod_arcmin!r}", "", "[holes]", f"flux_mjy = {inst.hole_flux_mjy!r}"]
    if inst.hole_flux_mjy > 0:
        lines += [f"band = {inst.hole_band}", f"radius_arcmin = {inst.hole_radius_arcmin!r}",
                  f"apod_arcmin = {inst.hole_apod_arcmin!r}"]
    return "\n".join(lines) + "\n"
