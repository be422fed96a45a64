"""Flat-sky FITS maps per band in uK_CMB with the survey products shipped beside them, cut by blocks.

What ACT, SPT and Simons Observatory ship per band (SCIENCE.md section 7): a map (uK_CMB, CAR or TAN), an
inverse-variance map (1/uK^2 per pixel, 0 = no data), a beam (a Gaussian FWHM or an ``ell B_ell`` table, see
:mod:`szviewer.sky.beams`) and an effective frequency; plus one mask (1 = use, 0 = masked, apodised values in
between). Any number of bands >= 1, each an integer id in GHz. Every image is on one pixel grid (shape and WCS)
and memory-mapped; only the blocks of the requested cutouts are read. A pixel is usable where every map is
finite, every given ivar map > 0 and the mask > 0.

Cutouts follow :mod:`szviewer.sky.geometry`: npix x npix pixels at the map's own pixel size (any square pixel;
no resampling), rows south -> north, columns east -> west (RA increasing to the left); the block is flipped
when the map's axes run the other way (CDELT1 > 0 or CDELT2 < 0). A CAR map's pixels are square on the sky
only near its reference latitude (usually the equator); blocks are taken as they are.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from szviewer.errors import InputError
from szviewer.sky.beams import Beam
from szviewer.sky.fits_images import BandImage, check_range, file_record, row_chunks, same_wcs
from szviewer.sky.fits_products import beam_of, parse_band, spec_text

_SQUARE_TOLERANCE = 0.01  # pixels are square when |dx / dy - 1| <= 1%


class FlatFitsSky:
    """Per-band memory-mapped flat-sky FITS maps on one WCS grid, in uK_CMB, with their survey products.

    Attributes: ``bands`` (band ids in GHz, ascending), ``components`` (('skymap',)), ``files`` (band -> map
    Path), ``ivar_files`` (band -> Path or None), ``mask_file`` (Path or None), ``beams`` (band -> Beam or
    None), ``freqs_ghz`` (band -> effective frequency in GHz, for the tSZ spectrum), ``wcs`` (celestial astropy
    WCS), ``shape`` ((ny, nx)), ``projection`` ('CAR' or 'TAN'), ``pixel_arcmin`` ((|dx|, |dy|) in arcmin).
    Build it with :func:`open_fits_maps`.
    """

    components: tuple[str, ...] = ("skymap",)

    def __init__(self, images: dict[int, BandImage], ivar: dict[int, BandImage] | None = None,
                 mask: BandImage | None = None, beams: dict[int, Beam | None] | None = None,
                 freqs_ghz: dict[int, float] | None = None, beam_specs: dict | None = None):
        self._images = images
        self._ivar = dict(ivar or {})
        self._mask = mask
        self.bands: tuple[int, ...] = tuple(sorted(images))
        ref = images[self.bands[0]]
        self.files: dict[int, Path] = {b: images[b].path for b in self.bands}
        self.ivar_files: dict[int, Path | None] = {b: (self._ivar[b].path if b in self._ivar else None)
                                                    for b in self.bands}
        self.mask_file: Path | None = None if mask is None else mask.path
        self.beams: dict[int, Beam | None] = {b: (beams or {}).get(b) for b in self.bands}
        self.freqs_ghz: dict[int, float] = {b: float((freqs_ghz or {}).get(b, b)) for b in self.bands}
        self._beam_specs = dict(beam_specs or {})  # band -> FWHM, absolute beam-file path or Beam (for pickling)
        self.wcs: WCS = ref.wcs
        self.shape: tuple[int, int] = ref.shape
        self.projection: str = ref.projection
        self.pixel_arcmin: tuple[float, float] = (abs(ref.cdelt[0]) * 60.0, abs(ref.cdelt[1]) * 60.0)
        self._nan_mask: np.ndarray | None = None
        self._usable: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"FlatFitsSky({self.projection}, shape={self.shape}, bands={list(self.bands)}, "
                f"pixel={self.pixel_arcmin[0]:.4g}', files={[p.name for p in self.files.values()]}, "
                f"ivar={sum(p is not None for p in self.ivar_files.values())}, "
                f"mask={None if self.mask_file is None else self.mask_file.name})")

    def __reduce__(self):
        # pickling (e.g. for worker processes) re-opens the files instead of copying the memmaps
        return (_reopen, (dict(self.files), {b: p for b, p in self.ivar_files.items() if p is not None},
                          self.mask_file, dict(self._beam_specs), dict(self.freqs_ghz)))

    # ------------------------------------------------------------------ the images
    def ivar(self, band: int) -> np.ndarray | None:
        """The band's inverse-variance map (ny, nx) in 1/uK^2 per pixel (0 = no data), or None when not given.

        Memory-mapped float32 (big-endian, as FITS stores it) when the file holds unscaled float32 in 1/uK^2;
        a float32 copy otherwise."""
        img = self._ivar.get(int(band))
        return None if img is None else img.as_float32()

    def ivar_maps(self) -> dict[int, np.ndarray | None]:
        """Every band's :meth:`ivar` (band -> array or None)."""
        return {b: self.ivar(b) for b in self.bands}

    @property
    def mask(self) -> np.ndarray | None:
        """The mask (ny, nx) in [0, 1] (1 = use, 0 = masked), memory-mapped float32 as :meth:`ivar`; or None."""
        return None if self._mask is None else self._mask.as_float32()

    def square_pixel_arcmin(self) -> float:
        """The pixel side in arcmin (mean of |dx| and |dy|). InputError when the pixels are not square within 1%."""
        dx, dy = self.pixel_arcmin
        if abs(dx / dy - 1.0) > _SQUARE_TOLERANCE:
            raise InputError(self.files[self.bands[0]],
                             f"pixels are {dx:.4g}' x {dy:.4g}' (RA x Dec): szviewer needs square pixels "
                             f"(within {_SQUARE_TOLERANCE:.0%})")
        return float(f"{(dx + dy) / 2.0:.10g}")

    @property
    def nan_mask(self) -> np.ndarray:
        """Boolean (ny, nx): True where any band is NaN (or BLANK). Computed once, in row chunks."""
        if self._nan_mask is None:
            mask = np.zeros(self.shape, dtype=bool)
            for b in self.bands:
                img = self._images[b]
                for r0, r1 in row_chunks(self.shape):
                    mask[r0:r1] |= np.isnan(img.rows(r0, r1))
            self._nan_mask = mask
        return self._nan_mask

    @property
    def usable(self) -> np.ndarray:
        """Boolean (ny, nx): True where no map is NaN, every given ivar map > 0 and the mask > 0."""
        if self._usable is None:
            ok = ~self.nan_mask
            for img in self._extra_images():
                for r0, r1 in row_chunks(self.shape):
                    with np.errstate(invalid="ignore"):
                        ok[r0:r1] &= img.rows(r0, r1) > 0
            self._usable = ok
        return self._usable

    def _extra_images(self) -> list[BandImage]:
        return [*self._ivar.values(), *([] if self._mask is None else [self._mask])]

    def check_values(self) -> None:
        """Scan the ivar maps (finite, >= 0, not all 0) and the mask (finite, in [0, 1], some pixel > 0).

        One-line :class:`InputError` naming the file, the count of bad pixels and the first one (0-based row,
        column of the FITS image)."""
        for b in self.bands:
            if b in self._ivar:
                check_range(self._ivar[b], 0.0, math.inf, f"inverse variance (band {b} GHz)",
                             "ivar must be finite and >= 0 in 1/uK^2 (0 = no data)",
                             "every pixel is 0 (no data anywhere)")
        if self._mask is not None:
            check_range(self._mask, 0.0, 1.0, "the mask", "a mask holds values in [0, 1] (1 = use, 0 = masked)",
                         "the mask covers everything: no pixel > 0 (1 = use, 0 = masked)")

    def band_maps(self) -> np.ndarray:
        """All bands as one (nband, ny, nx) float32 array in uK_CMB (NaN where the maps are blank)."""
        return np.stack([self._images[b].to_uk(np.asarray(self._images[b].data)).astype(np.float32, copy=False)
                         for b in self.bands])

    # ------------------------------------------------------------------ summaries
    def footprint(self) -> tuple[float, float, float, float]:
        """(ra_min, ra_max, dec_min, dec_max) in deg of the bounding box of the usable pixels (:attr:`usable`:
        no map NaN, ivar > 0 and mask > 0 where given), out to the pixel edges. ra_min is in [0, 360); when the
        map straddles RA 0, ra_max runs past 360 (e.g. (355, 365, ...)), so ra_min < ra_max < ra_min + 360
        always. Raises InputError if no pixel is usable."""
        valid = self.usable
        rows = np.flatnonzero(valid.any(axis=1))
        cols = np.flatnonzero(valid.any(axis=0))
        if rows.size == 0:
            extra = self._extra_images()
            if not extra:
                raise InputError(self.files[self.bands[0]], "no valid (non-NaN) pixel in the maps")
            names = ", ".join(p.name for p in [*self.files.values(), *(img.path for img in extra)])
            raise InputError(self.mask_file or extra[0].path,
                             f"no usable pixel: each is NaN in a map, 0 in an ivar map or 0 in the mask ({names})")
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

    def pixel_side_arcmin_by_row(self) -> np.ndarray:
        """Side [arcmin] of a pixel on the sky (the square root of its area) per row, shape (ny,).

        sqrt(dx dy) for TAN (its pixel area varies by < 3% within 7 deg of the tangent point); sqrt(dx dy cos Dec)
        for CAR, whose pixels narrow in RA away from the equator (as pixell's pixel-size map)."""
        dx, dy = self.pixel_arcmin
        side = np.full(self.shape[0], math.sqrt(dx * dy))
        if self.projection == "CAR":
            _, dec = self.wcs.all_pix2world(np.full(self.shape[0], (self.shape[1] - 1) / 2.0),
                                            np.arange(self.shape[0], dtype=float), 0)
            side *= np.sqrt(np.clip(np.cos(np.deg2rad(np.asarray(dec, dtype=float))), 0.0, None))
        return side

    def depth_summary(self, max_samples: int = 4_000_000) -> dict:
        """White depth per band from its ivar map, and the usable fractions (JSON-able).

        depth [uK-arcmin] = sqrt(1 / ivar [1/uK^2]) * pixel side [arcmin] (:meth:`pixel_side_arcmin_by_row`),
        over the usable pixels (:attr:`usable`), at most ``max_samples`` of them, evenly strided. Returns
        ``{"bands": {"90": {"ivar": bool, "depth_uk_arcmin": {"p5", "median", "p95"} or None}, ...},
        "usable_fraction": usable pixels / all pixels, "mask": {"usable_fraction": fraction of pixels with
        mask > 0, "mean": mean mask value} or None}``.
        """
        usable = self.usable
        n_ok = int(usable.sum())
        step = max(1, -(-n_ok // int(max_samples)))
        side = self.pixel_side_arcmin_by_row()
        bands = {}
        for b in self.bands:
            entry = {"ivar": b in self._ivar, "depth_uk_arcmin": None}
            if b in self._ivar and n_ok:
                img, parts, seen = self._ivar[b], [], 0
                for r0, r1 in row_chunks(self.shape):
                    idx = np.flatnonzero(usable[r0:r1])
                    take = idx[(-seen) % step::step]
                    seen += idx.size
                    if take.size:
                        r, c = np.divmod(take, self.shape[1])
                        iv = img.rows(r0, r1)[r, c].astype(np.float64)
                        parts.append(np.sqrt(1.0 / iv) * side[r0 + r])
                p5, med, p95 = np.percentile(np.concatenate(parts), [5.0, 50.0, 95.0])
                entry["depth_uk_arcmin"] = {"p5": round(float(p5), 4), "median": round(float(med), 4),
                                            "p95": round(float(p95), 4)}
            bands[str(b)] = entry
        mask = None
        if self._mask is not None:
            n_pos, total = 0, 0.0
            for r0, r1 in row_chunks(self.shape):
                m = self._mask.rows(r0, r1)
                n_pos += int(np.count_nonzero(m > 0))
                total += float(m.sum(dtype=np.float64))
            size = self.shape[0] * self.shape[1]
            mask = {"usable_fraction": round(n_pos / size, 6), "mean": round(total / size, 6)}
        return {"bands": bands, "usable_fraction": round(n_ok / usable.size, 6), "mask": mask}

    def describe(self) -> dict:
        """JSON-able provenance, enough to re-open the sky (:func:`open_described`).

        ``files``: per band the map's name, path, size, mtime (ISO 8601 UTC), HDU, unit and factor to uK_CMB;
        ``maps``: band -> map path; ``bands``: band -> {"map", "ivar" (path or None), "beam" (``Beam.to_dict()``
        plus "source": the FWHM or beam file given; None when no beam), "freq_ghz"}; ``ivar_files`` as ``files``;
        ``mask`` (path or None) and ``mask_file``; the grid (shape, projection, pixel size in arcmin, WCS cards).
        """
        files, ivar_files, bands = {}, {}, {}
        for b in self.bands:
            img = self._images[b]
            files[str(b)] = {**file_record(img.path), "hdu": img.hdu_index, "unit": img.unit,
                             "to_uk_cmb": img.factor}
            iv = self._ivar.get(b)
            if iv is not None:
                ivar_files[str(b)] = {**file_record(iv.path), "hdu": iv.hdu_index, "unit": iv.unit,
                                      "to_inv_uk2": iv.factor}
            beam = self.beams[b]
            bands[str(b)] = {
                "map": str(img.path.resolve()),
                "ivar": None if iv is None else str(iv.path.resolve()),
                "beam": None if beam is None else {**beam.to_dict(), "source": spec_text(self._beam_specs.get(b))},
                "freq_ghz": self.freqs_ghz[b],
            }
        wcs_cards = {k: (v if isinstance(v, str | int | float | bool) else str(v))
                     for k, v in self.wcs.to_header().items()}
        mask_file = None if self._mask is None else {**file_record(self._mask.path), "hdu": self._mask.hdu_index}
        return {
            "kind": "flat_fits",
            "bands_ghz": list(self.bands),
            "components": list(self.components),
            "shape": list(self.shape),
            "projection": self.projection,
            "pixel_arcmin": list(self.pixel_arcmin),
            "wcs": wcs_cards,
            "files": files,
            "maps": {str(b): str(p.resolve()) for b, p in self.files.items()},
            "bands": bands,
            "ivar_files": ivar_files,
            "mask": None if self._mask is None else str(self._mask.path.resolve()),
            "mask_file": mask_file,
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

        Returns ``{'skymap': (N, nband, npix, npix) float32 uK_CMB}`` with rows south -> north and columns
        east -> west. ``pixel_arcmin`` must be the map's own pixel size within 1% (any size: e.g. 0.5' gives
        16 x 16 blocks for 8'; else InputError, since resampling is future work). A block that leaves the map
        -> ValueError naming the centre. Map pixels are returned as they are: NaN as NaN (see :attr:`nan_mask`),
        and pixels with ivar 0 or mask 0 unchanged (see :attr:`usable`).
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
                                 f"pixel size {p:.4g}' along {ax} but {pixel_arcmin:g}' per pixel was asked for "
                                 f"(within 1%): cut at the map's own pixel size (resampling is future work)")
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


def open_fits_maps(paths: dict, ivar: dict | None = None, mask=None, beams: dict | None = None,
                   freqs: dict | None = None, check_values: bool = True) -> FlatFitsSky:
    """Open per-band flat-sky FITS maps and their survey products, memory-mapped.

    ``paths``: {band GHz: map path}, any number of bands >= 1; ``ivar``: {band: inverse-variance map path}
    (1/uK^2 per pixel); ``mask``: one path (1 = use, 0 = masked, values in [0, 1]); ``beams``: {band: Beam,
    FWHM in arcmin or beam-file path}; ``freqs``: {band: effective frequency in GHz} (default: the band id; also
    used to convert a map in Jy/sr). Checks, each an :class:`InputError` naming the file or the band: band ids
    positive integers; ivar, beam or frequency only for a band with a map; frequencies finite and > 0; beams
    valid (:mod:`szviewer.sky.beams`); each file a 2-D image (degenerate axes squeezed), not truncated, with a
    RA/Dec CAR or TAN WCS without rotation; map BUNIT uK/uK_CMB/muK, mK, K_CMB, Jy/sr (converted) or absent
    (uK assumed, warning); every image on one shape and WCS (naming the two files); with ``check_values`` the
    ivar and mask values (:meth:`FlatFitsSky.check_values`: one pass over each of those files).
    """
    given: dict[int, Path] = {}
    for k, v in dict(paths).items():
        given[parse_band(k, v)] = Path(v)
    if not given:
        raise InputError(None, "no FITS map given: need at least one band (BAND=map.fits)")
    listed = ", ".join(str(b) for b in sorted(given))

    def for_mapped_bands(mapping, what: str, named: bool) -> dict:
        out = {}
        for k, v in dict(mapping or {}).items():
            band = parse_band(k, v if named else None)
            if band not in given:
                given_as = "" if named else f" {v!r}"
                raise InputError(v if named else None, f"{what}{given_as} for band {band} GHz, which has no map "
                                                       f"(bands with maps: {listed})")
            out[band] = v
        return out

    freqs_ghz = {}
    for b, v in for_mapped_bands(freqs, "effective frequency", named=False).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        if not (math.isfinite(f) and f > 0):
            raise InputError(None, f"band {b} GHz: effective frequency {v!r} GHz must be a finite number > 0")
        freqs_ghz[b] = f
    beam_objs, beam_specs = {}, {}
    for b, spec in for_mapped_bands(beams, "beam", named=False).items():
        if spec is not None:
            beam_objs[b], beam_specs[b] = beam_of(b, spec)
    ivar_paths = {b: Path(p) for b, p in for_mapped_bands(ivar, "inverse-variance map", named=True).items()
                  if p is not None}
    images = {b: BandImage(given[b], b, "map", freqs_ghz.get(b, float(b))) for b in sorted(given)}
    ref = images[min(given)]
    for img in images.values():
        diff = same_wcs(ref, img)
        if diff is not None:
            raise InputError(img.path, f"pixel grid differs from {ref.path}: {diff}")
    ivar_imgs = {}
    for b, p in ivar_paths.items():
        ivar_imgs[b] = BandImage(p, b, "ivar")
        diff = same_wcs(images[b], ivar_imgs[b])
        if diff is not None:
            raise InputError(p, f"inverse-variance map's pixel grid differs from its map {images[b].path}: {diff}")
    mask_img = None
    if mask is not None:
        mask_img = BandImage(Path(mask), None, "mask")
        diff = same_wcs(ref, mask_img)
        if diff is not None:
            raise InputError(mask_img.path, f"mask's pixel grid differs from the maps' ({ref.path}): {diff}")
    sky = FlatFitsSky(images, ivar_imgs, mask_img, beam_objs, freqs_ghz, beam_specs)
    if check_values:
        sky.check_values()
    return sky


def _reopen(maps, ivar, mask, beams, freqs) -> FlatFitsSky:
    return open_fits_maps(maps, ivar=ivar, mask=mask, beams=beams, freqs=freqs, check_values=False)


def open_described(prov: dict) -> FlatFitsSky:
    """Re-open a sky from its :meth:`FlatFitsSky.describe` record (a fits workspace's 'sky' provenance).

    Records from before survey products (only ``maps``) open as maps alone. The ivar and mask values were
    checked when the record was made, so they are not scanned again.
    """
    bands = prov.get("bands")
    if not bands:
        return open_fits_maps({int(b): p for b, p in prov["maps"].items()}, check_values=False)
    beams = {}
    for b, e in bands.items():
        beam = e.get("beam")
        if beam:
            beams[int(b)] = beam["path"] if beam.get("path") else float(beam.get("fwhm_arcmin", 0.0))
    return open_fits_maps({int(b): e["map"] for b, e in bands.items()},
                          ivar={int(b): e["ivar"] for b, e in bands.items() if e.get("ivar")},
                          mask=prov.get("mask"), beams=beams,
                          freqs={int(b): e["freq_ghz"] for b, e in bands.items() if e.get("freq_ghz") is not None},
                          check_values=False)
