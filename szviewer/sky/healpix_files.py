"""One HEALPix map file: its unit keyword, its header checked and its pixels memory-mapped, or a map written.

- :func:`open_healpix_file` checks one FITS HEALPix binary table (the layout healpy and the simulations write:
  PIXTYPE, ORDERING, NSIDE, INDXSCHM, a float column of rows of pixels) and memory-maps its pixels; nothing is
  loaded. Any Nside that is a power of 2, RING or NESTED (trusting the ORDERING keyword).
- :func:`parse_unit` reads a unit keyword as one of three quantities: ``uK_CMB`` (K, mK, uK), ``Jy/sr`` (Jy/sr,
  MJy/sr) or ``y`` (Compton-y).
- :func:`write_healpix_map` streams a map to a FITS HEALPix table without a second copy in memory (the cached
  Websky CMB).
"""

from __future__ import annotations

import datetime as _dt
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import healpy as hp
import numpy as np
from astropy.io import fits

from szviewer.errors import InputError

#: healpy's UNSEEN marker; any |value| >= 1e30 is treated as a bad pixel.
UNSEEN = hp.UNSEEN
BAD_ABS = 1e30

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
