"""HEALPix maps read where they lie, and a sky of such maps cut into flat cutouts (Sehgal, Websky, AGORA).

- :func:`open_healpix_file` checks one FITS HEALPix binary table (the layout healpy and the simulations write:
  PIXTYPE, ORDERING, NSIDE, INDXSCHM, a float column of rows of pixels) and memory-maps its pixels; nothing is
  loaded. Any Nside that is a power of 2, RING or NESTED (trusting the ORDERING keyword).
- :func:`parse_unit` reads a unit keyword as one of three quantities: ``uK_CMB`` (K, mK, uK), ``Jy/sr`` (Jy/sr,
  MJy/sr) or ``y`` (Compton-y).
- :class:`HealpixSky` is a sky made of such maps: for every (component, band) a short recipe of :class:`Part`s says
  which maps make it and with which factors to uK_CMB at the band (:func:`band_parts`: a frequency-independent map,
  Compton-y times the tSZ spectrum, or an intensity interpolated in log frequency between the maps that bracket
  the band). Its ``cut`` has the interface of :class:`szviewer.sky.sehgal.SehgalSky`: rows south to north,
  columns east to west (RA decreasing), one ``healpy.vec2pix`` per batch per (Nside, ordering), each map
  gathered once per batch whatever the number of bands it feeds.
- :func:`write_healpix_map` streams a map to a FITS HEALPix table without a second copy in memory (the cached
  Websky CMB).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import healpy as hp
import numpy as np
from astropy.io import fits

from szviewer.errors import InputError
from szviewer.sky.bands import BANDS_GHZ, db_dt_jy_sr_per_uk, jy_sr_to_uk, tsz_f, tsz_uk_per_y
from szviewer.sky.geometry import pixel_offsets, tangent_to_vec

#: healpy's UNSEEN marker; any |value| >= 1e30 is treated as a bad pixel.
UNSEEN = hp.UNSEEN
BAD_ABS = 1e30
#: Canonical components in the cumulative order of the paper's noise study, then the sum.
COMPONENT_ORDER: tuple[str, ...] = ("cmb", "tsz", "ksz", "ir", "radio", "dust", "skymap")
#: How each component's value changes with frequency: 'thermal' (constant in uK_CMB), 'y' (Compton-y times the
#: tSZ spectrum), 'intensity' (a spectrum of its own, interpolated between maps), 'as_is' (a sum of everything,
#: only usable at the band's own frequency).
SPECTRUM: dict[str, str] = {"cmb": "thermal", "ksz": "thermal", "tsz": "y", "ir": "intensity",
                            "radio": "intensity", "dust": "intensity", "skymap": "as_is"}
_BATCH = 2048  # centres per batch: ~50 MB of float64 vectors for 32 x 32 cutouts

#: Unit keyword values that say nothing (healpy writes 'unknown' when no unit is given).
NO_UNIT = {"unknown", "none", "n/a", "na", "-", "?"}
_UK_UNITS = {"uk", "ukcmb", "uk_cmb", "muk", "muk_cmb", "mukcmb", "microk", "microkelvin", "µk", "μk", "µk_cmb",
             "μk_cmb", "ukthermo", "uk_thermo", "uk_cmb_thermo"}
_K_UNITS = {"k", "kcmb", "k_cmb", "kthermo", "k_thermo", "kelvin"}
_MK_UNITS = {"mk", "mkcmb", "mk_cmb"}
_JYSR_UNITS = {"jy/sr", "jysr-1", "jy/sr^1", "jysr^-1", "jy/steradian", "jy.sr-1", "jy*sr-1", "jy/str", "jy/sr-1",
               "jysr**-1", "jy.sr**-1"}
_Y_UNITS = {"y", "compton-y", "compton_y", "comptony", "ysz", "y_sz", "tsz_y", "dimensionless", "y_compton",
            "compton"}


def parse_unit(unit) -> tuple[str, float] | None:
    """(quantity, factor) of a unit keyword: the value times ``factor`` is in ``quantity``, one of ``'uK_CMB'``,
    ``'Jy/sr'`` or ``'y'``; None when the unit is not one of these (case and spaces ignored; MJy/sr only with
    a capital M, since 'mJy' would be milli)."""
    if unit is None:
        return None
    raw = str(unit).strip()
    key = raw.replace(" ", "").lower()
    if not key:
        return None
    if raw.replace(" ", "").startswith("MJy") and key[1:] in _JYSR_UNITS:
        return "Jy/sr", 1e6
    if key in _JYSR_UNITS:
        return "Jy/sr", 1.0
    if key in _UK_UNITS:
        return "uK_CMB", 1.0
    if key in _MK_UNITS:
        return "uK_CMB", 1e3
    if key in _K_UNITS:
        return "uK_CMB", 1e6
    if key in _Y_UNITS:
        return "y", 1.0
    return None


def pixel_side_arcmin(nside: int) -> float:
    """Side of a HEALPix pixel (square root of its area) in arcmin: 0.43' at Nside 8192, 0.86' at 4096."""
    return math.degrees(math.sqrt(4 * math.pi / (12 * nside * nside))) * 60


def coarse_pixel_note(nside: int, pixel_arcmin: float) -> str | None:
    """The warning for maps coarser than the cutouts' pixels (the cutout builder's rule: side > 1.5 pixels)."""
    side = pixel_side_arcmin(nside)
    if side <= 1.5 * pixel_arcmin:
        return None
    return (f"the HEALPix maps (Nside {nside}, {side:.2f}' pixels) are coarser than the cutouts' {pixel_arcmin:g}' "
            f"pixels: each map pixel fills about {(side / pixel_arcmin) ** 2:.0f} cutout pixels")


def file_record(path: Path) -> dict:
    """Name, absolute path, size in bytes and modification time (ISO 8601 UTC) of a file."""
    st = path.stat()
    return {"name": path.name, "path": str(path.resolve()), "size": int(st.st_size),
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.timezone.utc).isoformat()}


# ------------------------------------------------------------------------------------------------ one map file
@dataclass
class HealpixFile:
    """One memory-mapped HEALPix map as stored: ``data`` is a read-only big-endian memmap of its pixels, 1-D
    (npix,) when the column fills each row, otherwise 2-D (rows, repeat); ``unit`` the header's unit keyword as
    written (None: none). Values are the stored numbers times ``scale`` plus ``zero`` (TSCAL, TZERO)."""

    path: Path
    nside: int
    nest: bool
    unit: str | None
    data: np.ndarray
    scale: float = 1.0
    zero: float = 0.0
    column: str = ""

    @property
    def ordering(self) -> str:
        return "NESTED" if self.nest else "RING"

    def gather(self, pix: np.ndarray, out: np.ndarray) -> None:
        """Write the map's values at pixel indices ``pix`` into ``out`` (float32, same shape). NaN, infinite or
        UNSEEN values: :class:`InputError` naming the file."""
        if self.data.ndim == 1:
            out[...] = np.take(self.data, pix)
        else:
            row, col = np.divmod(pix, self.data.shape[1])
            out[...] = self.data[row, col]
        nbad = out.size - int(np.count_nonzero(np.abs(out) < BAD_ABS))
        if nbad:
            raise InputError(self.path, f"{nbad} NaN or UNSEEN pixel(s) inside the requested cutouts")
        if self.scale != 1.0 or self.zero != 0.0:
            out *= np.float32(self.scale)
            out += np.float32(self.zero)


def header_value(headers, *keys):
    """The first non-blank value of any of ``keys`` in the headers, in order (None: none)."""
    for h in headers:
        for k in keys:
            if k in h and h[k] is not None and str(h[k]).strip() != "":
                return h[k]
    return None


def open_healpix_file(path, column: str | None = None) -> HealpixFile:
    """Open one HEALPix binary-table FITS map memory-mapped and check its header.

    Checks (each failure an :class:`InputError` naming ``path``): a binary table extension with a float column
    (``column``, else ``signal``, else the first), PIXTYPE HEALPIX if present, Nside a power of 2 (NSIDE keyword,
    or inferred from the pixel count with a warning), ORDERING RING or NESTED, full-sky implicit indexing, pixel
    count 12 Nside^2 and the file at least as long as its header promises ('truncated'). The unit keyword
    (TUNITn, BUNIT, UNITS, UNIT) is returned as written (None when absent or one of :data:`NO_UNIT`). Only the
    headers are read; pixels stay on disk.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    file_size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                primary = hdul[0].header.copy()
                table = None
                for hdu in hdul[1:]:
                    if isinstance(hdu, fits.BinTableHDU):
                        table = hdu
                        break
                if table is None:
                    raise InputError(path, "no binary table extension: not a HEALPix map in the FITS binary-table "
                                           "layout")
                header = table.header.copy()
                dat_loc = int(table.fileinfo()["datLoc"])
                columns = table.columns
                names = [c.name for c in columns]
                offsets = {n: columns.dtype.fields[n][1] for n in names}
                formats = [str(c.format) for c in columns]
    except InputError:
        raise
    except Exception as exc:  # astropy's errors for broken files vary; report them as bad input
        if file_size < 2880 * 2:
            raise InputError(path, f"truncated or not a FITS file ({file_size} bytes)") from exc
        raise InputError(path, f"not a readable FITS file: {exc}") from exc

    headers = (header, primary)
    pixtype = header_value(headers, "PIXTYPE")
    if pixtype is not None and str(pixtype).strip().upper() != "HEALPIX":
        raise InputError(path, f"PIXTYPE is {pixtype!r}, expected 'HEALPIX'")
    indx = header_value(headers, "INDXSCHM")
    if indx is not None and str(indx).strip().upper() != "IMPLICIT":
        raise InputError(path, f"INDXSCHM {indx!r}: only full-sky implicit HEALPix maps are supported")

    lower = [n.lower() for n in names]
    if column is not None:
        if column.lower() not in lower:
            raise InputError(path, f"no column {column!r}; the table has {', '.join(names)}")
        icol = lower.index(column.lower())
    else:
        icol = lower.index("signal") if "signal" in lower else 0
    name = names[icol]
    m = re.fullmatch(r"\s*(\d*)([A-Z])\s*", formats[icol])
    if m is None or m.group(2) not in "ED":
        raise InputError(path, f"column {name!r} has TFORM {formats[icol]!r}; expected float32 'E' or "
                               "float64 'D' pixels (e.g. '1024E')")
    repeat = int(m.group(1) or 1)
    dtype = np.dtype(">f4" if m.group(2) == "E" else ">f8")
    row_bytes = int(header["NAXIS1"])
    nrows = int(header["NAXIS2"])
    npix_file = nrows * repeat

    nside_kw = header_value(headers, "NSIDE")
    if nside_kw is None:
        nside = int(round(np.sqrt(npix_file / 12.0)))
        if 12 * nside * nside != npix_file:
            raise InputError(path, f"no NSIDE keyword and {npix_file} pixels is not 12 Nside^2")
        warnings.warn(f"{path}: no NSIDE keyword; Nside {nside} inferred from the pixel count", stacklevel=2)
    else:
        try:
            nside = int(nside_kw)
        except (TypeError, ValueError):
            raise InputError(path, f"NSIDE {nside_kw!r} is not an integer") from None
    if nside < 1 or nside & (nside - 1):
        raise InputError(path, f"NSIDE {nside} is not a power of 2")
    if npix_file != 12 * nside * nside:
        raise InputError(path, f"{npix_file} pixels ({nrows} rows x {repeat}) but NSIDE {nside} needs "
                               f"12 Nside^2 = {12 * nside * nside}")
    ordering = header_value(headers, "ORDERING")
    if ordering is None:
        raise InputError(path, "no ORDERING keyword (RING or NESTED)")
    order = str(ordering).strip().upper()
    if order not in ("RING", "NESTED", "NEST"):
        raise InputError(path, f"ORDERING {ordering!r}; expected RING or NESTED")

    need = dat_loc + row_bytes * nrows
    if file_size < need:
        raise InputError(path, f"truncated: the header promises {need} bytes ({nrows} rows of {row_bytes} "
                               f"bytes from offset {dat_loc}) but the file has {file_size}")
    unit = header_value(headers, f"TUNIT{icol + 1}", "BUNIT", "UNITS", "UNIT")
    if unit is not None and str(unit).strip().lower() in NO_UNIT:
        unit = None
    col_off = int(offsets[name])
    if col_off == 0 and repeat * dtype.itemsize == row_bytes:
        data = np.memmap(path, dtype=dtype, mode="r", offset=dat_loc, shape=(npix_file,))
    else:
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=dat_loc, shape=(nrows, row_bytes))
        data = raw[:, col_off:col_off + repeat * dtype.itemsize].view(dtype)
    return HealpixFile(path=path, nside=nside, nest=order != "RING", unit=None if unit is None else str(unit),
                       data=data, scale=float(header.get(f"TSCAL{icol + 1}", 1.0)),
                       zero=float(header.get(f"TZERO{icol + 1}", 0.0)), column=name)


def write_healpix_map(path, values: np.ndarray, nside: int, unit: str, column: str = "TEMPERATURE",
                      nest: bool = False, extra: dict | None = None, block: int = 1 << 22) -> None:
    """Write a full-sky map as a FITS HEALPix binary table (float32 rows of 1024 pixels, the layout healpy and the
    simulations use), converting ``block`` pixels at a time so no second full copy is held. Not atomic: write
    to a temporary name."""
    npix = 12 * nside * nside
    values = np.asarray(values).reshape(-1)
    if values.size != npix:
        raise ValueError(f"{values.size} values for Nside {nside} (12 Nside^2 = {npix})")
    repeat = 1024 if npix % 1024 == 0 else 1
    rows = npix // repeat
    tbl = fits.BinTableHDU.from_columns(
        [fits.Column(name=column, format=f"{repeat}E", unit=unit, array=np.zeros((1, repeat), np.float32))])
    h = tbl.header
    h["NAXIS2"] = rows
    h["PIXTYPE"] = ("HEALPIX", "HEALPIX pixelisation")
    h["ORDERING"] = "NESTED" if nest else "RING"
    h["NSIDE"] = nside
    h["FIRSTPIX"] = 0
    h["LASTPIX"] = npix - 1
    h["INDXSCHM"] = "IMPLICIT"
    h["OBJECT"] = "FULLSKY"
    for k, v in (extra or {}).items():
        h[k] = v
    head = fits.PrimaryHDU().header.tostring().encode("ascii") + h.tostring().encode("ascii")
    with open(path, "wb") as f:
        f.write(head)
        for s in range(0, npix, block):
            f.write(np.asarray(values[s:s + block], dtype=">f4").tobytes())
        pad = -(npix * 4) % 2880
        f.write(b"\0" * pad)


# ------------------------------------------------------------------------------------------------ recipes
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


# ------------------------------------------------------------------------------------------------ the sky
def centres(ra_c, dec_c) -> tuple[np.ndarray, np.ndarray]:
    """Cutout centres as matching 1-D float arrays (ValueError for non-finite values or |Dec| > 90)."""
    ra = np.atleast_1d(np.asarray(ra_c, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_c, dtype=float))
    if ra.ndim != 1 or dec.ndim != 1:
        raise ValueError("ra_c and dec_c must be scalars or 1-D arrays")
    ra, dec = np.broadcast_arrays(ra, dec)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("cutout centres must be finite")
    if np.any(np.abs(dec) > 90.0):
        raise ValueError("cutout centre Dec outside [-90, 90] deg")
    return ra, dec


class HealpixSky:
    """A simulated sky of HEALPix maps, memory-mapped, cut into flat cutouts on request.

    ``recipes[component][band]`` lists the :class:`Part`s that make that image from ``sources``. Attributes as
    :class:`~szviewer.sky.sehgal.SehgalSky`: ``directory``, ``bands``, ``components`` (in
    :data:`COMPONENT_ORDER`), ``nside`` (the finest of the maps; the per-pixel noise uses it), ``files``
    (file name -> Path of every map read), plus ``simulation`` (e.g. 'websky') and ``settings`` (how it was
    opened, JSON-able; :func:`open_recorded` reopens it from :meth:`describe`).
    """

    def __init__(self, directory, simulation: str, sources: list[MapSource],
                 recipes: dict[str, dict[int, list[Part]]], bands=BANDS_GHZ, settings: dict | None = None,
                 reopen=None):
        self.directory = Path(directory)
        self.simulation = simulation
        self.sources = sources
        self.recipes = recipes
        self.bands: tuple[int, ...] = tuple(int(b) for b in bands)
        self.components: tuple[str, ...] = tuple(c for c in COMPONENT_ORDER if c in recipes)
        self.nside: int = max(s.file.nside for s in sources)
        self.files: dict[str, Path] = {s.path.name: s.path for s in sources}
        self.settings = dict(settings or {})
        self._reopen = reopen

    def __repr__(self) -> str:
        return (f"HealpixSky({self.simulation}, {str(self.directory)!r}, nside={self.nside}, "
                f"components={self.components}, bands={self.bands})")

    def __reduce__(self):
        if self._reopen is None:
            raise TypeError("this HealpixSky was built without a way to reopen it")
        return self._reopen

    def close(self) -> None:
        """Drop the memory maps (they are also released when the object is garbage-collected)."""
        self.sources = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def nsides(self) -> dict[str, int]:
        """Nside of each map file."""
        return {s.path.name: s.file.nside for s in self.sources}

    def coarse_notes(self, pixel_arcmin: float = 0.25) -> list[str]:
        """One warning per Nside of the maps whose pixels are coarser than the cutouts' (see
        :func:`coarse_pixel_note`), naming the components that use them."""
        notes = []
        for nside in sorted({s.file.nside for s in self.sources}):
            note = coarse_pixel_note(nside, pixel_arcmin)
            if note is None:
                continue
            comps = [c for c in self.components
                     if any(self.sources[i].file.nside == nside for parts in self.recipes[c].values()
                            for p in parts for i in p.sources())]
            notes.append(f"{', '.join(comps)}: {note}")
        return notes

    def describe(self) -> dict:
        """JSON-able provenance: simulation, directory, Nside, bands, components, every map file (name, path,
        size, mtime, Nside, ordering, unit, quantity, frequency), the recipe of each (component, band) and the
        settings it was opened with."""
        files = []
        for s in self.sources:
            rec = file_record(s.path)
            rec.update({"nside": s.file.nside, "ordering": s.file.ordering, "unit": s.unit, "quantity": s.quantity,
                        "to_quantity": s.to_base, "freq_ghz": s.freq_ghz})
            files.append(rec)
        recipes = {c: {str(b): [p.note for p in self.recipes[c][b]] for b in self.bands} for c in self.components}
        return {"kind": f"{self.simulation}_healpix", "simulation": self.simulation,
                "directory": str(self.directory.resolve()), "nside": self.nside, "bands_ghz": list(self.bands),
                "components": list(self.components), "files": files, "recipes": recipes, "settings": self.settings}

    def _resolve_components(self, components) -> tuple[str, ...]:
        if components is None:
            return self.components
        if isinstance(components, str):
            components = (components,)
        comps = tuple(components)
        missing = [c for c in comps if c not in self.components]
        if missing:
            raise ValueError(f"component(s) {missing} not available in {self.directory}; "
                             f"available: {list(self.components)}")
        return comps

    def pixel_indices(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25, nest: bool = False,
                      nside: int | None = None) -> np.ndarray:
        """HEALPix pixel (at ``nside``, default the sky's) of every cutout pixel, (N, npix, npix) int64; rows
        south to north, columns east to west."""
        ra, dec = centres(ra_c, dec_c)
        xi, eta = pixel_offsets(npix, pixel_arcmin)
        v = tangent_to_vec(ra, dec, xi, eta)
        return hp.vec2pix(nside or self.nside, v[..., 0], v[..., 1], v[..., 2], nest=nest)

    def cut(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25,
            components=None) -> dict[str, np.ndarray]:
        """Flat gnomonic cutouts centred at (``ra_c``, ``dec_c``) degrees: ``{component: (N, nband, npix, npix)
        float32 uK_CMB}``, rows south -> north, columns east -> west, each pixel the HEALPix pixel holding its
        centre. NaN or UNSEEN values -> :class:`InputError` naming the file."""
        ra, dec = centres(ra_c, dec_c)
        comps = self._resolve_components(components)
        n = ra.size
        npix = int(npix)
        out = {c: np.empty((n, len(self.bands), npix, npix), dtype=np.float32) for c in comps}
        if n == 0:
            return out
        need = sorted({i for c in comps for b in self.bands for p in self.recipes[c][b] for i in p.sources()})
        xi, eta = pixel_offsets(npix, pixel_arcmin)
        for s in range(0, n, _BATCH):
            e = min(n, s + _BATCH)
            v = tangent_to_vec(ra[s:e], dec[s:e], xi, eta)
            pix: dict[tuple[int, bool], np.ndarray] = {}
            raw: dict[int, np.ndarray] = {}
            for i in need:
                f = self.sources[i].file
                key = (f.nside, f.nest)
                if key not in pix:
                    pix[key] = hp.vec2pix(f.nside, v[..., 0], v[..., 1], v[..., 2], nest=f.nest)
                buf = np.empty(pix[key].shape, np.float32)
                f.gather(pix[key], buf)
                raw[i] = buf
            del v
            logs: dict = {}
            for c in comps:
                for ib, band in enumerate(self.bands):
                    dst = out[c][s:e, ib]
                    for k, part in enumerate(self.recipes[c][band]):
                        part.evaluate(raw, dst, add=k > 0, logs=logs)
        return out


def open_recorded(provenance: dict, root) -> HealpixSky:
    """Reopen a simulated HEALPix sky from the provenance its import recorded (:meth:`HealpixSky.describe`);
    ``root``: the workspace folder, against which cached files (the Websky CMB) are resolved."""
    kind = provenance.get("kind")
    if kind == "websky_healpix":
        from szviewer.sky.websky import reopen_websky

        return reopen_websky(provenance, root)
    if kind == "agora_healpix":
        from szviewer.sky.agora import reopen_agora

        return reopen_agora(provenance, root)
    raise InputError(Path(root) / "workspace.json", f"sky provenance of kind {kind!r} is not a simulated "
                                                    "HEALPix sky (websky_healpix or agora_healpix)")


#: Workspace sky provenance kinds :func:`open_recorded` reopens.
RECORDED_KINDS = ("websky_healpix", "agora_healpix")
