"""One flat-sky FITS image read where it lies: header and WCS checks, units, the memory map, row chunks.

:class:`BandImage` opens one 2-D image (a band's map in uK_CMB, an inverse-variance map in 1/uK^2 or a mask)
and checks its header (not truncated, RA/Dec CAR or TAN without rotation, a supported BUNIT); :func:`same_wcs`
compares two pixel grids; :func:`check_range` scans an image's values in row chunks (:func:`row_chunks`).
The sky made of such images is :class:`szviewer.sky.fits_maps.FlatFitsSky`.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from szviewer.errors import InputError
from szviewer.sky.bands import jy_sr_to_uk

_PROJECTIONS = ("CAR", "TAN")
_BITPIX_DTYPE = {-32: ">f4", -64: ">f8", 16: ">i2", 32: ">i4", 64: ">i8", 8: "u1"}
_PIXELS_PER_CHUNK = 1 << 22  # rows are read in chunks of about 4M pixels (16 MB of float32)
_IVAR_UNITS = {"1/uk2": 1.0, "uk-2": 1.0, "1/mk2": 1e-6, "mk-2": 1e-6, "1/k2": 1e-12, "k-2": 1e-12}


def _unit_factor(bunit, freq_ghz: float, path) -> tuple[float, str]:
    """Factor from a map's BUNIT to uK_CMB (absent -> uK with a warning; Jy/sr converted at ``freq_ghz``)."""
    if bunit is None or not str(bunit).strip():
        warnings.warn(f"{path}: no BUNIT keyword; assuming uK_CMB", stacklevel=3)
        return 1.0, "uK_CMB (assumed)"
    raw = str(bunit).strip()
    key = raw.replace(" ", "").lower()
    if key in ("uk", "uk_cmb", "ukcmb", "muk", "microk", "µk", "μk", "uk_thermo"):
        return 1.0, raw
    if key in ("mk", "mk_cmb", "mkcmb"):
        return 1e3, raw
    if key in ("k", "k_cmb", "kcmb", "k_thermo"):
        return 1e6, raw
    if key in ("jy/sr", "jysr-1", "jy/steradian"):
        return jy_sr_to_uk(freq_ghz), raw
    if raw.replace(" ", "").startswith("MJy") and key[1:] in ("jy/sr", "jysr-1"):
        return 1e6 * jy_sr_to_uk(freq_ghz), raw
    raise InputError(path, f"unsupported BUNIT {raw!r}; expected uK_CMB (uK, muK), mK, K_CMB or Jy/sr")


def _ivar_unit_factor(bunit, path) -> tuple[float, str]:
    """Factor from an inverse-variance map's BUNIT to 1/uK^2 (absent -> 1/uK^2, as ACT and SO ship them)."""
    if bunit is None or not str(bunit).strip():
        return 1.0, "1/uK^2 (assumed)"
    raw = str(bunit).strip()
    key = raw.lower()
    for junk in (" ", "^", "**", "(", ")", "_cmb", "cmb", "_thermo"):
        key = key.replace(junk, "")
    key = key.replace("muk", "uk").replace("µk", "uk").replace("μk", "uk")
    if key not in _IVAR_UNITS:
        raise InputError(path, f"unsupported BUNIT {raw!r} for an inverse-variance map; expected 1/uK^2 "
                               "(or 1/mK^2, 1/K^2, converted)")
    return _IVAR_UNITS[key], raw


class BandImage:
    """One image: memmap (ny, nx), celestial WCS, unit factor, BSCALE/BZERO.

    ``kind`` is 'map' (converted to uK_CMB; Jy/sr at ``freq_ghz``), 'ivar' (to 1/uK^2) or 'mask' (as stored).
    """

    def __init__(self, path: Path, band: int | None, kind: str = "map", freq_ghz: float | None = None):
        self.path = path
        self.band = band
        self.kind = kind
        if not path.is_file():
            raise InputError(path, "no such file")
        size = path.stat().st_size
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                    found = None
                    for idx, hdu in enumerate(hdul):
                        is_image = isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU)
                        if is_image and hdu.header.get("NAXIS", 0) >= 2:
                            found = (idx, hdu.header.copy(), int(hdu.fileinfo()["datLoc"]))
                            break
        except Exception as exc:  # astropy's errors for broken files vary
            if size < 2880:
                raise InputError(path, f"truncated or not a FITS file ({size} bytes)") from exc
            raise InputError(path, f"not a readable FITS file: {exc}") from exc
        if found is None:
            raise InputError(path, "no 2-D image HDU")
        self.hdu_index, header, dat_loc = found
        naxis = int(header["NAXIS"])
        dims = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
        if any(d != 1 for d in dims[2:]):
            raise InputError(path, f"image has shape {tuple(reversed(dims))}; expected a 2-D image "
                                   "(extra axes of length 1 are allowed)")
        if dims[0] < 2 or dims[1] < 2:
            raise InputError(path, f"image axes {dims[:2]} are degenerate")
        bitpix = int(header["BITPIX"])
        if bitpix not in _BITPIX_DTYPE:
            raise InputError(path, f"unsupported BITPIX {bitpix}")
        dtype = np.dtype(_BITPIX_DTYPE[bitpix])
        nx, ny = dims[0], dims[1]
        need = dat_loc + nx * ny * dtype.itemsize
        if size < need:
            raise InputError(path, f"truncated: the header promises {need} bytes ({ny} x {nx} pixels of "
                                   f"{dtype.itemsize} bytes from offset {dat_loc}) but the file has {size}")
        self.header = header
        self.shape = (ny, nx)
        self.bscale = float(header.get("BSCALE", 1.0))
        self.bzero = float(header.get("BZERO", 0.0))
        self.blank = header.get("BLANK") if bitpix > 0 else None
        if kind == "map":
            self.factor, self.unit = _unit_factor(header.get("BUNIT"), float(freq_ghz or band), path)
        elif kind == "ivar":
            self.factor, self.unit = _ivar_unit_factor(header.get("BUNIT"), path)
        else:
            self.factor, self.unit = 1.0, ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(header, naxis=2)
        except Exception as exc:
            raise InputError(path, f"invalid WCS: {exc}") from exc
        if not wcs.has_celestial or wcs.naxis != 2:
            raise InputError(path, "no celestial WCS on the first two axes")
        ctype = [str(c).upper() for c in wcs.wcs.ctype]
        if not (ctype[0].startswith("RA--") and ctype[1].startswith("DEC-")):
            raise InputError(path, f"CTYPE {ctype}: need equatorial RA/Dec axes (RA first)")
        proj = ctype[0][5:8].strip("-")
        if proj not in _PROJECTIONS or ctype[1][5:8].strip("-") != proj:
            raise InputError(path, f"projection {ctype[0]}/{ctype[1]} is not supported; expected CAR or TAN")
        self.projection = proj
        m = wcs.pixel_scale_matrix  # deg per pixel
        diag = np.abs(np.diag(m))
        if np.any(diag == 0) or abs(m[0, 1]) > 1e-6 * diag.max() or abs(m[1, 0]) > 1e-6 * diag.max():
            raise InputError(path, "rotated or skewed WCS (non-diagonal CD/PC matrix) is not supported")
        self.wcs = wcs
        self.cdelt = (float(m[0, 0]), float(m[1, 1]))  # deg per pixel along x (columns), y (rows)
        self.data = np.memmap(path, dtype=dtype, mode="r", offset=dat_loc, shape=(ny, nx))

    def to_uk(self, block: np.ndarray) -> np.ndarray:
        out = np.asarray(block, dtype=np.float32)
        if self.blank is not None:
            out = np.where(np.asarray(block) == self.blank, np.float32(np.nan), out)
        if self.bscale != 1.0 or self.bzero != 0.0:
            out = out * np.float32(self.bscale) + np.float32(self.bzero)
        if self.factor != 1.0:
            out = out * np.float32(self.factor)
        return out.astype(np.float32, copy=False)

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows r0:r1 converted (float32, native byte order; NaN where BLANK)."""
        return self.to_uk(self.data[r0:r1])

    def as_float32(self) -> np.ndarray:
        """The whole image as float32: the memmap itself (big-endian, as FITS stores it) when the file holds
        unscaled float32, else a converted copy."""
        plain = self.bscale == 1.0 and self.bzero == 0.0 and self.factor == 1.0 and self.blank is None
        if plain and self.data.dtype.kind == "f" and self.data.dtype.itemsize == 4:
            return self.data
        return self.to_uk(self.data)


def row_chunks(shape: tuple[int, int]):
    """(r0, r1) row ranges of about ``_PIXELS_PER_CHUNK`` pixels covering an image of ``shape``."""
    ny, nx = shape
    step = max(1, _PIXELS_PER_CHUNK // max(nx, 1))
    for r0 in range(0, ny, step):
        yield r0, min(ny, r0 + step)


def file_record(path: Path) -> dict:
    """Name, absolute path, size [bytes] and mtime (ISO 8601 UTC) of a file."""
    st = path.stat()
    return {"name": path.name, "path": str(path.resolve()), "size": int(st.st_size),
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.timezone.utc).isoformat()}


def same_wcs(a: BandImage, b: BandImage) -> str | None:
    """None when a and b share the pixel grid, else a description of the difference."""
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    wa, wb = a.wcs.wcs, b.wcs.wcs
    if list(wa.ctype) != list(wb.ctype):
        return f"CTYPE {list(wa.ctype)} != {list(wb.ctype)}"
    if not np.allclose(wa.crpix, wb.crpix, rtol=0, atol=1e-6):
        return f"CRPIX {[float(v) for v in wa.crpix]} != {[float(v) for v in wb.crpix]}"
    if not np.allclose(wa.crval, wb.crval, rtol=0, atol=1e-9):
        return f"CRVAL {[float(v) for v in wa.crval]} != {[float(v) for v in wb.crval]}"
    if not np.allclose(a.wcs.pixel_scale_matrix, b.wcs.pixel_scale_matrix, rtol=1e-9, atol=0):
        return "pixel scale (CDELT/CD/PC) differs"
    return None


def check_range(img: BandImage, lo: float, hi: float, what: str, rule: str, empty: str) -> None:
    """InputError naming ``img.path`` unless every pixel is finite and in [lo, hi], and some pixel is > 0."""
    n_nan = n_out = 0
    first_nan = first_out = None
    any_pos = False
    for r0, r1 in row_chunks(img.shape):
        v = img.rows(r0, r1)
        fin = np.isfinite(v)
        with np.errstate(invalid="ignore"):
            out = fin & ((v < lo) | (v > hi))
            any_pos = any_pos or bool(np.any(v > 0))
        if not fin.all():
            n_nan += int(fin.size - np.count_nonzero(fin))
            if first_nan is None:
                r, c = (int(i) for i in np.argwhere(~fin)[0])
                first_nan = (r0 + r, c)
        if out.any():
            n_out += int(np.count_nonzero(out))
            if first_out is None:
                r, c = (int(i) for i in np.argwhere(out)[0])
                first_out = (r0 + r, c, float(v[r, c]))
    if n_nan:
        raise InputError(img.path, f"{n_nan} pixel(s) of {what} are NaN or infinite (first at row {first_nan[0]}, "
                                   f"column {first_nan[1]}); {rule}")
    if n_out:
        r, c, val = first_out
        side = "are negative" if (lo == 0.0 and val < 0) else f"lie outside [{lo:g}, {hi:g}]"
        raise InputError(img.path, f"{n_out} pixel(s) of {what} {side} (first at row {r}, column {c}: {val:g}); "
                                   f"{rule}")
    if not any_pos:
        raise InputError(img.path, empty)
