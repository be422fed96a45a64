"""Flat-sky FITS maps, one image per band (90, 148, 219 GHz) in uK_CMB, cut into cutouts by blocks.

The user's own maps (``szviewer import --fits ...``): 2-D images with a celestial RA/Dec WCS in the CAR
or TAN projection, all three bands on the same pixel grid. Images are memory-mapped; only the blocks
of the requested cutouts are read.

Cutouts follow SCIENCE.md section 2 and :mod:`szviewer.sky.geometry`: npix x npix pixels of 0.25',
rows south -> north, columns east -> west (RA increasing to the left). The map's pixels are used as
they are (no resampling), so the map must already be at 0.25' per pixel (within 1%); the block is
flipped when the map's axes run the other way (CDELT1 > 0 or CDELT2 < 0). A CAR map's pixels are
square on the sky only near its reference latitude (usually the equator); blocks are taken as they are.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from szviewer.errors import InputError
from szviewer.sky.bands import BANDS_GHZ, jy_sr_to_uk

_PROJECTIONS = ("CAR", "TAN")
_BITPIX_DTYPE = {-32: ">f4", -64: ">f8", 16: ">i2", 32: ">i4", 64: ">i8", 8: "u1"}
_ROWS_PER_CHUNK = 1024


def _unit_factor(bunit, band: int, path) -> tuple[float, str]:
    """Factor from the image's BUNIT to uK_CMB (absent -> uK with a warning)."""
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
        return jy_sr_to_uk(band), raw
    if raw.replace(" ", "").startswith("MJy") and key[1:] in ("jy/sr", "jysr-1"):
        return 1e6 * jy_sr_to_uk(band), raw
    raise InputError(path, f"unsupported BUNIT {raw!r}; expected uK_CMB (uK, muK), mK, K_CMB or Jy/sr")


class _BandImage:
    """One band's image: memmap (ny, nx), celestial WCS, unit factor, BSCALE/BZERO."""

    def __init__(self, path: Path, band: int):
        self.path = path
        self.band = band
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
        self.factor, self.unit = _unit_factor(header.get("BUNIT"), band, path)
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


def _same_wcs(a: _BandImage, b: _BandImage) -> str | None:
    """None when a and b share the pixel grid, else a description of the difference."""
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    wa, wb = a.wcs.wcs, b.wcs.wcs
    if list(wa.ctype) != list(wb.ctype):
        return f"CTYPE {list(wa.ctype)} != {list(wb.ctype)}"
    if not np.allclose(wa.crpix, wb.crpix, rtol=0, atol=1e-6):
        return f"CRPIX {list(wa.crpix)} != {list(wb.crpix)}"
    if not np.allclose(wa.crval, wb.crval, rtol=0, atol=1e-9):
        return f"CRVAL {list(wa.crval)} != {list(wb.crval)}"
    if not np.allclose(a.wcs.pixel_scale_matrix, b.wcs.pixel_scale_matrix, rtol=1e-9, atol=0):
        return "pixel scale (CDELT/CD/PC) differs"
    return None


class FlatFitsSky:
    """Three memory-mapped flat-sky FITS images (90, 148, 219 GHz) on one WCS grid, in uK_CMB.

    Attributes: ``bands`` ((90, 148, 219)), ``components`` (('skymap',)), ``files`` (band -> Path),
    ``wcs`` (celestial astropy WCS), ``shape`` ((ny, nx)), ``projection`` ('CAR' or 'TAN'),
    ``pixel_arcmin`` ((|dx|, |dy|) in arcmin). Build it with :func:`open_fits_maps`.
    """

    components: tuple[str, ...] = ("skymap",)

    def __init__(self, images: dict[int, _BandImage]):
        self._images = images
        self.bands: tuple[int, ...] = tuple(BANDS_GHZ)
        ref = images[self.bands[0]]
        self.files: dict[int, Path] = {b: images[b].path for b in self.bands}
        self.wcs: WCS = ref.wcs
        self.shape: tuple[int, int] = ref.shape
        self.projection: str = ref.projection
        self.pixel_arcmin: tuple[float, float] = (abs(ref.cdelt[0]) * 60.0, abs(ref.cdelt[1]) * 60.0)
        self._nan_mask: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"FlatFitsSky({self.projection}, shape={self.shape}, "
                f"pixel={self.pixel_arcmin[0]:.4g}', files={[p.name for p in self.files.values()]})")

    def __reduce__(self):
        # pickling (e.g. for worker processes) re-opens the files instead of copying the memmaps
        return (open_fits_maps, ({b: p for b, p in self.files.items()},))

    @property
    def nan_mask(self) -> np.ndarray:
        """Boolean (ny, nx): True where any band is NaN (or BLANK). Computed once, in row chunks."""
        if self._nan_mask is None:
            mask = np.zeros(self.shape, dtype=bool)
            for b in self.bands:
                img = self._images[b]
                for r0 in range(0, self.shape[0], _ROWS_PER_CHUNK):
                    r1 = min(self.shape[0], r0 + _ROWS_PER_CHUNK)
                    mask[r0:r1] |= np.isnan(img.to_uk(img.data[r0:r1]))
            self._nan_mask = mask
        return self._nan_mask

    def band_maps(self) -> np.ndarray:
        """All bands as one (nband, ny, nx) float32 array in uK_CMB (NaN where the maps are blank)."""
        return np.stack([self._images[b].to_uk(np.asarray(self._images[b].data)).astype(np.float32, copy=False)
                         for b in self.bands])

    def footprint(self) -> tuple[float, float, float, float]:
        """(ra_min, ra_max, dec_min, dec_max) in deg of the bounding box of the valid (non-NaN) pixels,
        out to the pixel edges. ra_min is in [0, 360); when the map straddles RA 0, ra_max runs past 360
        (e.g. (355, 365, ...)), so ra_min < ra_max < ra_min + 360 always. Raises InputError if no pixel is valid."""
        valid = ~self.nan_mask
        rows = np.flatnonzero(valid.any(axis=1))
        cols = np.flatnonzero(valid.any(axis=0))
        if rows.size == 0:
            raise InputError(self.files[self.bands[0]], "no valid (non-NaN) pixel in the maps")
        x0, x1 = cols[0] - 0.5, cols[-1] + 0.5
        y0, y1 = rows[0] - 0.5, rows[-1] + 0.5
        nx = max(2, int(x1 - x0) + 1)
        ny = max(2, int(y1 - y0) + 1)
        ex, ey = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
        xs = np.concatenate([ex, np.full(ny, x1), ex, np.full(ny, x0)])  # the bounding box's 4 edges
        ys = np.concatenate([np.full(nx, y0), ey, np.full(nx, y1), ey])
        ra, dec = self.wcs.all_pix2world(xs, ys, 0)
        ok = np.isfinite(ra) & np.isfinite(dec)
        ra, dec = ra[ok], dec[ok]
        ref = float(self.wcs.wcs.crval[0])
        ra = ref + (ra - ref + 180.0) % 360.0 - 180.0  # continuous across RA 0 / 360
        ra = ra - 360.0 * np.floor(ra.min() / 360.0)  # ra_min in [0, 360), as szviewer.sky.tiles.Footprint
        return float(ra.min()), float(ra.max()), float(dec.min()), float(dec.max())

    def describe(self) -> dict:
        """JSON-able provenance: per band the file name, path, size, mtime (ISO 8601 UTC), HDU, unit and
        factor to uK_CMB; the grid (shape, projection, pixel size in arcmin) and the WCS header cards."""
        files = {}
        for b in self.bands:
            img = self._images[b]
            st = img.path.stat()
            files[str(b)] = {
                "name": img.path.name,
                "path": str(img.path.resolve()),
                "size": int(st.st_size),
                "mtime": _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.timezone.utc).isoformat(),
                "hdu": img.hdu_index,
                "unit": img.unit,
                "to_uk_cmb": img.factor,
            }
        wcs_cards = {k: (v if isinstance(v, str | int | float | bool) else str(v))
                     for k, v in self.wcs.to_header().items()}
        return {
            "kind": "flat_fits",
            "bands_ghz": list(self.bands),
            "components": list(self.components),
            "shape": list(self.shape),
            "projection": self.projection,
            "pixel_arcmin": list(self.pixel_arcmin),
            "wcs": wcs_cards,
            "files": files,
        }

    def block_origins(self, ra_c, dec_c, npix: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """0-based (row, column) of the first pixel of each centre's npix x npix block, in the FITS image
        (before any flip). The block is centred on the pixel corner nearest the centre (odd npix: on the
        nearest pixel). Out-of-map blocks are not checked here."""
        ra = np.atleast_1d(np.asarray(ra_c, dtype=float))
        dec = np.atleast_1d(np.asarray(dec_c, dtype=float))
        ra, dec = np.broadcast_arrays(ra, dec)
        x, y = self.wcs.all_world2pix(ra, dec, 0)
        half = (int(npix) - 1) / 2.0
        with np.errstate(invalid="ignore"):
            x0 = np.floor(np.asarray(x) - half + 0.5)
            y0 = np.floor(np.asarray(y) - half + 0.5)
        return y0, x0

    def cut(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25,
            components=None) -> dict[str, np.ndarray]:
        """Cutouts centred at (``ra_c``, ``dec_c``) deg (scalars or 1-D arrays).

        Returns ``{'skymap': (N, 3, npix, npix) float32 uK_CMB}`` with rows south -> north and columns
        east -> west. The map's pixel size must equal ``pixel_arcmin`` within 1% (else InputError: the
        map must be at 0.25'; resampling is future work). A block that leaves the map -> ValueError
        naming the centre. NaN pixels are returned as NaN (see :attr:`nan_mask`).
        """
        if components is not None:
            comps = (components,) if isinstance(components, str) else tuple(components)
            bad = [c for c in comps if c != "skymap"]
            if bad:
                raise ValueError(f"component(s) {bad} not available in FITS maps; only 'skymap'")
        npix = int(npix)
        for ax, p in zip(("x", "y"), self.pixel_arcmin, strict=True):
            if abs(p / pixel_arcmin - 1.0) > 0.01:
                raise InputError(self.files[self.bands[0]],
                                 f"pixel size {p:.4g}' along {ax} but cutouts need {pixel_arcmin:g}' "
                                 f"(within 1%): the map must be at {pixel_arcmin:g}' per pixel "
                                 "(resampling is future work)")
        y0, x0 = self.block_origins(ra_c, dec_c, npix)
        ny, nx = self.shape
        outside = ~(np.isfinite(x0) & np.isfinite(y0))
        with np.errstate(invalid="ignore"):
            outside |= (x0 < 0) | (y0 < 0) | (x0 + npix > nx) | (y0 + npix > ny)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            ra = np.broadcast_to(np.atleast_1d(ra_c), outside.shape)[i]
            dec = np.broadcast_to(np.atleast_1d(dec_c), outside.shape)[i]
            raise ValueError(f"{int(outside.sum())} cutout(s) leave the map, e.g. centre {i} at "
                             f"RA {float(ra):.5f}, Dec {float(dec):.5f} deg (map {ny} x {nx} pixels, "
                             f"{self.files[self.bands[0]]})")
        n = x0.size
        out = np.empty((n, len(self.bands), npix, npix), dtype=np.float32)
        xs = x0.astype(np.int64)
        ys = y0.astype(np.int64)
        ref = self._images[self.bands[0]]
        flip_x = ref.cdelt[0] > 0  # RA increasing with column: flip so that east is on the left
        flip_y = ref.cdelt[1] < 0  # Dec decreasing with row: flip so that rows run south to north
        for ib, b in enumerate(self.bands):
            img = self._images[b]
            raw = np.empty((n, npix, npix), dtype=img.data.dtype.newbyteorder("="))
            for k in range(n):
                raw[k] = img.data[ys[k]:ys[k] + npix, xs[k]:xs[k] + npix]
            if flip_x:
                raw = raw[:, :, ::-1]
            if flip_y:
                raw = raw[:, ::-1, :]
            out[:, ib] = img.to_uk(raw)
        return {"skymap": out}


def open_fits_maps(paths: dict) -> FlatFitsSky:
    """Open per-band flat-sky FITS maps ``{90: path, 148: path, 219: path}`` memory-mapped.

    Checks (each an :class:`InputError` naming the file or band): all three bands given; each file a
    2-D image (degenerate axes squeezed), not truncated, with a RA/Dec CAR or TAN WCS without rotation,
    BUNIT uK/uK_CMB/muK, mK, K_CMB (converted), Jy/sr (converted) or absent (uK assumed, warning);
    all bands on the same shape and WCS (error naming the two files).
    """
    given: dict[int, Path] = {}
    for k, v in dict(paths).items():
        try:
            band = int(k)
        except (TypeError, ValueError):
            raise InputError(None, f"band {k!r} is not one of {list(BANDS_GHZ)} GHz") from None
        if band not in BANDS_GHZ:
            raise InputError(v, f"band {band} GHz is not one of {list(BANDS_GHZ)}")
        given[band] = Path(v)
    missing = [b for b in BANDS_GHZ if b not in given]
    if missing:
        raise InputError(None, f"missing FITS map for band(s) {', '.join(f'{b} GHz' for b in missing)}; "
                               f"all of {list(BANDS_GHZ)} GHz are needed")
    images = {b: _BandImage(given[b], b) for b in BANDS_GHZ}
    ref = images[BANDS_GHZ[0]]
    for b in BANDS_GHZ[1:]:
        diff = _same_wcs(ref, images[b])
        if diff is not None:
            raise InputError(images[b].path, f"pixel grid differs from {ref.path}: {diff}")
    return FlatFitsSky(images)
