"""How a HEALPix sky makes each (component, band) image in uK_CMB from its maps: the recipes of :class:`Part`s.

A :class:`MapSource` is one map with the quantity its values are in; :func:`band_parts` says which maps make a
component at a band and with which factors (a frequency-independent map, Compton-y times the tSZ spectrum, or an
intensity interpolated in log frequency between the maps that bracket the band); :meth:`Part.evaluate` applies
one term to gathered pixel values. :class:`szviewer.sky.healpix.HealpixSky` cuts with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from szviewer.errors import InputError
from szviewer.sky.bands import db_dt_jy_sr_per_uk, jy_sr_to_uk, tsz_f, tsz_uk_per_y
from szviewer.sky.healpix_files import HealpixFile

#: How each component's value changes with frequency: 'thermal' (constant in uK_CMB), 'y' (Compton-y times the
#: tSZ spectrum), 'intensity' (a spectrum of its own, interpolated between maps), 'as_is' (a sum of everything,
#: only usable at the band's own frequency).
SPECTRUM: dict[str, str] = {"cmb": "thermal", "ksz": "thermal", "tsz": "y", "ir": "intensity",
                            "radio": "intensity", "dust": "intensity", "skymap": "as_is"}


@dataclass
class MapSource:
    """One map a sky reads: raw value x ``to_base`` is in ``quantity`` ('uK_CMB', 'Jy/sr' or 'y') at
    ``freq_ghz`` (None: the map does not depend on frequency). ``unit`` says how the unit was found."""

    file: HealpixFile
    quantity: str
    to_base: float
    freq_ghz: float | None
    unit: str

    @property
    def path(self) -> Path:
        return self.file.path


@dataclass(frozen=True)
class Part:
    """One additive term of a (component, band) image in uK_CMB. Linear (``src2`` None): ``c1 * raw1``. Power law:
    ``out * x1**(1 - t) * x2**t`` with ``x_i = c_i * raw_i`` (intensities; where either is <= 0 the values are
    interpolated linearly in log frequency instead, ``out * ((1 - t) x1 + t x2)``)."""

    src1: int
    c1: float
    src2: int | None = None
    c2: float = 0.0
    t: float = 0.0
    out: float = 1.0
    note: str = ""

    def sources(self) -> tuple[int, ...]:
        return (self.src1,) if self.src2 is None else (self.src1, self.src2)

    def evaluate(self, raw: dict[int, np.ndarray], dst: np.ndarray, add: bool, logs: dict | None = None) -> None:
        """Write (or with ``add``, add) this term for the gathered raw values ``raw`` (source -> float32 array)
        into ``dst``; ``logs`` caches log intensities per (source, factor) across the terms of one batch."""
        x1 = raw[self.src1]
        if self.src2 is None:
            if add:
                dst += np.float32(self.c1) * x1
            else:
                np.multiply(x1, np.float32(self.c1), out=dst)
            return
        logs = {} if logs is None else logs
        l1, ok1 = _log_of(raw, self.src1, self.c1, logs)
        l2, ok2 = _log_of(raw, self.src2, self.c2, logs)
        t = np.float32(self.t)
        val = np.multiply(l1, np.float32(1) - t)
        val += t * l2
        val += np.float32(math.log(self.out))
        np.exp(val, out=val)
        if not (ok1 and ok2):  # a pixel <= 0: linear in log frequency there
            a = raw[self.src1] * np.float32(self.c1)
            b = raw[self.src2] * np.float32(self.c2)
            bad = ~((a > 0) & (b > 0))
            val[bad] = (((np.float32(1) - t) * a + t * b) * np.float32(self.out))[bad]
        if add:
            dst += val
        else:
            dst[...] = val


def _log_of(raw: dict[int, np.ndarray], src: int, c: float, logs: dict) -> tuple[np.ndarray, bool]:
    """ln(c * raw[src]) (float32; -inf or NaN where <= 0) and whether every value was > 0, cached in ``logs``."""
    key = (src, c)
    if key not in logs:
        x = raw[src] * np.float32(c)
        ok = bool(np.all(x > 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(x, out=x)
        logs[key] = (x, ok)
    return logs[key]


def _log_distance(a: float, b: float) -> float:
    return abs(math.log(a / b))


def base_factor(src: MapSource, spectrum: str, where) -> float:
    """Factor from a map's raw values to its component's base quantity at the map's frequency: uK_CMB for a
    'thermal' component, Compton-y for 'y', Jy/sr for 'intensity', uK_CMB for 'as_is'."""
    q, f, nu = src.quantity, src.to_base, src.freq_ghz

    def need_freq():
        if nu is None:
            raise InputError(src.path, f"a map in {src.unit} needs a frequency to be converted, and its name has none")
        return nu

    if spectrum in ("thermal", "as_is"):
        if q == "uK_CMB":
            return f
        if q == "Jy/sr":
            return f * jy_sr_to_uk(need_freq())
    elif spectrum == "y":
        if q == "y":
            return f
        if q in ("uK_CMB", "Jy/sr"):
            g = need_freq()
            if abs(float(tsz_f(g))) < 0.05:
                raise InputError(src.path, f"a tSZ map at {g:g} GHz, at the null of the tSZ spectrum, cannot give "
                                           "Compton-y")
            return f * (jy_sr_to_uk(g) if q == "Jy/sr" else 1.0) / float(tsz_uk_per_y(g))
    elif spectrum == "intensity":
        if q == "Jy/sr":
            return f
        if q == "uK_CMB":
            return f * float(db_dt_jy_sr_per_uk(need_freq()))
    raise InputError(src.path, f"unit {src.unit} is not a {spectrum} quantity ({where})")


def band_parts(component: str, sources: list[MapSource], layer: list[int], band: float, mode: str = "interp",
               where="") -> list[Part]:
    """How one layer of maps (indices into ``sources``) of a component makes its image at ``band`` GHz in uK_CMB.

    - thermal (CMB, kSZ) and y (tSZ): the map with no frequency, else the one nearest in log frequency, times
      its factor to uK_CMB (tSZ: Compton-y times ``tsz_uk_per_y(band)``; a tSZ map in uK at another frequency is
      converted through y).
    - intensity (CIB, radio): ``mode`` 'nearest' takes the intensity of the map nearest in log frequency as the
      band's. ``mode`` 'interp' (default) takes a map within 0.1% of the band as it is; otherwise interpolates
      between the two maps that bracket the band as a power law per pixel, log I linear in log nu (linear in
      log nu where a pixel is <= 0); outside the maps' range it extrapolates the power law of the two nearest
      maps, up to a factor 1.25 in frequency, and beyond that is an :class:`InputError`.
    - as_is (a total sky map): the map within 10% of the band, taken as it is.
    """
    spectrum = SPECTRUM[component]
    cands = [(i, sources[i]) for i in layer]
    if not cands:
        raise InputError(where or None, f"no {component} map")
    if spectrum == "intensity":
        to_uk = jy_sr_to_uk(band)
    elif spectrum == "y":
        to_uk = float(tsz_uk_per_y(band))
    else:
        to_uk = 1.0
    flat = [(i, s) for i, s in cands if s.freq_ghz is None]
    if flat:
        i, s = flat[0]
        c = base_factor(s, spectrum, where) * to_uk
        return [Part(i, c, note=f"{s.path.name} x {c:.6g}")]
    by_dist = sorted(cands, key=lambda p: _log_distance(p[1].freq_ghz, band))
    if spectrum in ("thermal", "y") or mode == "nearest" or spectrum == "as_is":
        if spectrum == "y":  # maps at the tSZ null hold no y: skip them
            usable = [p for p in by_dist if abs(float(tsz_f(p[1].freq_ghz))) >= 0.05]
            by_dist = usable or by_dist
        i, s = by_dist[0]
        if spectrum == "as_is" and _log_distance(s.freq_ghz, band) > math.log(1.1):
            raise InputError(s.path, f"a total sky map at {s.freq_ghz:g} GHz cannot stand for the {band:g} GHz band "
                                     "(more than 10% away) and its components cannot be told apart")
        c = base_factor(s, spectrum, where) * to_uk
        how = "nearest" if spectrum == "intensity" else f"{s.freq_ghz:g} GHz"
        return [Part(i, c, note=f"{s.path.name} ({how}) x {c:.6g}")]
    i0, s0 = by_dist[0]
    if _log_distance(s0.freq_ghz, band) < 1e-3 or len(cands) == 1:
        if _log_distance(s0.freq_ghz, band) > math.log(1.05):
            raise InputError(s0.path, f"the only {component} map is at {s0.freq_ghz:g} GHz, too far from the "
                                      f"{band:g} GHz band to extrapolate; add maps that bracket it")
        c = base_factor(s0, spectrum, where) * to_uk
        return [Part(i0, c, note=f"{s0.path.name} ({s0.freq_ghz:g} GHz) x {c:.6g}")]
    below = [p for p in cands if p[1].freq_ghz < band]
    above = [p for p in cands if p[1].freq_ghz > band]
    if below and above:
        lo = max(below, key=lambda p: p[1].freq_ghz)
        hi = min(above, key=lambda p: p[1].freq_ghz)
        how = "between"
    else:
        side = sorted(below or above, key=lambda p: _log_distance(p[1].freq_ghz, band))[:2]
        lo, hi = sorted(side, key=lambda p: p[1].freq_ghz)
        edge = lo if above else hi
        if _log_distance(edge[1].freq_ghz, band) > math.log(1.25):
            freqs = ", ".join(f"{s.freq_ghz:g}" for _, s in sorted(cands, key=lambda p: p[1].freq_ghz))
            raise InputError(edge[1].path.parent, f"no {component} map near {band:g} GHz (maps at {freqs} GHz): "
                                                  "more than a factor 1.25 outside their range")
        how = "extrapolated from"
    (i1, s1), (i2, s2) = lo, hi
    t = math.log(band / s1.freq_ghz) / math.log(s2.freq_ghz / s1.freq_ghz)
    return [Part(i1, base_factor(s1, spectrum, where), i2, base_factor(s2, spectrum, where), t, to_uk,
                 note=f"power law {how} {s1.path.name} ({s1.freq_ghz:g} GHz) and {s2.path.name} "
                      f"({s2.freq_ghz:g} GHz), t = {t:.4f}, x {to_uk:.6g} uK per Jy/sr")]
