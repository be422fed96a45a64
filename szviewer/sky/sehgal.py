"""Sehgal et al. (2010) full-sky HEALPix maps, read memory-mapped, and fast cutting into flat cutouts.

See SCIENCE.md section 1 (file names, Nside 8192, RING ordering, Jy/sr; the Simons Observatory "v3"
re-processing at Nside 4096 in uK_CMB or Compton-y) and section 2 (32 x 32 cutouts of 0.25' pixels,
the fast cutting recipe: tangent-plane offsets rotated to each centre, one pixel look-up per batch).

A directory holds ``{FFF}_{component}_healpix.fits`` with FFF in 090, 148, 219 (other bands are
ignored). File components map to szviewer's canonical names as::

    lensedcmb -> cmb, tsz -> tsz, ksz -> ksz, ir_pts -> ir, rad_pts -> radio, dust -> dust,
    skymap -> skymap        (unlensedcmb is ignored)

Each map is a FITS binary table (column ``signal`` or the first column, usually TFORM ``1024E``: rows of
1024 pixels) that is never loaded whole: the table's data area is mapped with :class:`numpy.memmap`
and only the pixels of the cutouts are gathered. All values returned are float32 uK_CMB.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import healpy as hp
import numpy as np

from szviewer.errors import InputError
from szviewer.sky.bands import BANDS_GHZ, band_label, jy_sr_to_uk, tsz_uk_per_y
from szviewer.sky.geometry import pixel_offsets, tangent_to_vec
from szviewer.sky.healpix import (  # noqa: F401 (COMPONENT_ORDER is part of this module's interface)
    COMPONENT_ORDER,
    centres,
    resolve_components,
)
from szviewer.sky.healpix_files import (  # noqa: F401 (UNSEEN is part of this module's interface)
    BAD_ABS,
    UNSEEN,
    open_healpix_file,
    parse_unit,
)

#: File component name -> canonical szviewer component name (SCIENCE.md section 1).
FILE_COMPONENTS: dict[str, str] = {
    "lensedcmb": "cmb",
    "tsz": "tsz",
    "ksz": "ksz",
    "ir_pts": "ir",
    "rad_pts": "radio",
    "dust": "dust",
    "skymap": "skymap",
}
_BAD_ABS = BAD_ABS  # any |value| >= 1e30 (healpy's UNSEEN is -1.6375e30) is a bad pixel
_FILE_RE = re.compile(r"^(\d{3})_([a-z_]+)_healpix\.fits$")
_BATCH = 2048  # centres per batch: ~50 MB of float64 vectors for 32 x 32 cutouts


def unit_factor(unit: str | None, band: int, component: str, path, nside: int) -> tuple[float, str]:
    """Multiplicative factor from a map's stored unit to uK_CMB, and the unit as understood.

    Accepted (:func:`szviewer.sky.healpix_files.parse_unit`; case-insensitive, spaces ignored): Jy/sr (x
    ``jy_sr_to_uk(band)``), MJy/sr, uK / uK_CMB / muK (x 1), mK (x 1e3), K / K_CMB (x 1e6), and for ``tsz`` only
    Compton-y (x ``tsz_uk_per_y(band)``, the SO v3 convention). With no unit keyword, Nside 8192 is taken as
    Jy/sr (Sehgal's original maps) and Nside 4096 as uK_CMB (SO v3), each with a warning; anything else is an
    :class:`InputError`.
    """
    if unit is None or not str(unit).strip():
        if nside == 8192:
            warnings.warn(f"{path}: no unit keyword; assuming Jy/sr (Sehgal Nside 8192)", stacklevel=3)
            return jy_sr_to_uk(band), "Jy/sr (assumed)"
        if nside == 4096 and component != "tsz":
            warnings.warn(f"{path}: no unit keyword; assuming uK_CMB (SO v3 Nside 4096)", stacklevel=3)
            return 1.0, "uK_CMB (assumed)"
        raise InputError(path, f"no unit keyword (TUNITn, BUNIT or UNITS) for an Nside {nside} map; "
                               "expected Jy/sr, uK_CMB or Compton-y")
    raw = str(unit).strip()
    parsed = parse_unit(raw)
    if parsed is None:
        raise InputError(path, f"unsupported unit {raw!r}; expected Jy/sr, uK_CMB (uK, muK), K_CMB or "
                               "Compton-y (tSZ only)")
    quantity, factor = parsed
    if quantity == "Jy/sr":
        return factor * jy_sr_to_uk(band), raw
    if quantity == "y":
        if component != "tsz":
            raise InputError(path, f"unit {raw!r} (Compton-y) is only valid for a tSZ map, not {component!r}")
        return factor * float(tsz_uk_per_y(band)), raw
    return factor, raw


@dataclass
class HealpixMap:
    """One memory-mapped HEALPix map (a single band of a single component).

    ``data`` is a read-only big-endian memmap of the file's pixels: 1-D (npix,) when the column fills
    each row, otherwise 2-D (rows, repeat) and indexed with ``divmod``. ``factor`` converts the stored
    values (after TSCAL/TZERO) to uK_CMB.
    """

    path: Path
    component: str
    band: int
    nside: int
    nest: bool
    unit: str
    factor: float
    data: np.ndarray
    scale: float = 1.0
    zero: float = 0.0

    @property
    def ordering(self) -> str:
        return "NESTED" if self.nest else "RING"

    def gather(self, pix: np.ndarray, out: np.ndarray) -> None:
        """Write the map at pixel indices ``pix`` into ``out`` (float32, same shape) in uK_CMB.

        Raises :class:`InputError` naming the file if any gathered value is NaN, infinite or UNSEEN.
        """
        if self.data.ndim == 1:
            out[...] = np.take(self.data, pix)
        else:
            row, col = np.divmod(pix, self.data.shape[1])
            out[...] = self.data[row, col]
        nbad = out.size - int(np.count_nonzero(np.abs(out) < _BAD_ABS))
        if nbad:
            raise InputError(self.path, f"{nbad} NaN or UNSEEN pixel(s) inside the requested cutouts "
                                        f"({self.component}, {self.band} GHz)")
        if self.scale != 1.0 or self.zero != 0.0:
            out *= np.float32(self.scale)
            out += np.float32(self.zero)
        if self.factor != 1.0:
            out *= np.float32(self.factor)


def open_healpix_map(path, band: int, component: str) -> HealpixMap:
    """Open one HEALPix binary-table FITS map memory-mapped, check its header and read its unit.

    The header checks are :func:`szviewer.sky.healpix_files.open_healpix_file`'s (each failure an :class:`InputError`
    naming ``path``: binary table, float column ``signal`` or the first, PIXTYPE, Nside a power of 2, ORDERING,
    implicit full-sky indexing, 12 Nside^2 pixels, 'truncated'); the unit must be known (:func:`unit_factor`).
    Only the headers are read; pixels stay on disk.
    """
    f = open_healpix_file(path)
    factor, unit_str = unit_factor(f.unit, band, component, f.path, f.nside)
    return HealpixMap(path=f.path, component=component, band=int(band), nside=f.nside, nest=f.nest,
                      unit=unit_str, factor=float(factor), data=f.data, scale=f.scale, zero=f.zero)


class SehgalSky:
    """A directory of Sehgal HEALPix maps, memory-mapped, cut into flat cutouts on request.

    Attributes: ``directory`` (Path), ``bands`` ((90, 148, 219) GHz), ``components`` (canonical names
    present, in :data:`COMPONENT_ORDER`), ``nside``, ``files`` (dict ``(component, band) -> Path``),
    ``maps`` (dict ``(component, band) -> HealpixMap``). Build it with :func:`open_sehgal_dir`.
    """

    def __init__(self, directory: Path, maps: dict[tuple[str, int], HealpixMap]):
        self.directory = Path(directory)
        self.maps = maps
        self.bands: tuple[int, ...] = tuple(BANDS_GHZ)
        present = {c for c, _ in maps}
        self.components: tuple[str, ...] = tuple(c for c in COMPONENT_ORDER if c in present)
        self.files: dict[tuple[str, int], Path] = {k: m.path for k, m in maps.items()}
        self.nside: int = next(iter(maps.values())).nside

    def __repr__(self) -> str:
        return (f"SehgalSky({str(self.directory)!r}, nside={self.nside}, "
                f"components={self.components}, bands={self.bands})")

    def __reduce__(self):
        # pickling (e.g. for worker processes) re-opens the directory instead of copying the memmaps
        return (open_sehgal_dir, (self.directory,))

    def close(self) -> None:
        """Drop the memory maps (they are also released when the object is garbage-collected)."""
        self.maps = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        """JSON-able provenance: directory, Nside, bands, components and, per file, name, path, size in
        bytes, modification time (ISO 8601 UTC), Nside, ordering, unit and the factor to uK_CMB."""
        files = []
        for (comp, band), m in sorted(self.maps.items(), key=lambda kv: (COMPONENT_ORDER.index(kv[0][0]),
                                                                           kv[0][1])):
            st = m.path.stat()
            files.append({
                "component": comp,
                "band_ghz": band,
                "name": m.path.name,
                "path": str(m.path.resolve()),
                "size": int(st.st_size),
                "mtime": _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.timezone.utc).isoformat(),
                "nside": m.nside,
                "ordering": m.ordering,
                "unit": m.unit,
                "to_uk_cmb": m.factor,
            })
        return {
            "kind": "sehgal_healpix",
            "directory": str(self.directory.resolve()),
            "nside": self.nside,
            "bands_ghz": list(self.bands),
            "components": list(self.components),
            "files": files,
        }

    def _resolve_components(self, components) -> tuple[str, ...]:
        return resolve_components(self.components, components, self.directory)

    def pixel_indices(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25,
                      nest: bool = False) -> np.ndarray:
        """HEALPix pixel index of every cutout pixel, shape (N, npix, npix) int64 (nearest pixel).

        Rows run south to north and columns east to west (RA decreasing), as
        :func:`szviewer.sky.geometry.pixel_offsets`.
        """
        ra, dec = _centres(ra_c, dec_c)
        xi, eta = pixel_offsets(npix, pixel_arcmin)
        v = tangent_to_vec(ra, dec, xi, eta)
        return hp.vec2pix(self.nside, v[..., 0], v[..., 1], v[..., 2], nest=nest)

    def cut(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25,
            components=None) -> dict[str, np.ndarray]:
        """Cut flat gnomonic cutouts centred at (``ra_c``, ``dec_c``) degrees (scalars or 1-D arrays).

        Returns ``{component: array (N, 3, npix, npix) float32 uK_CMB}``, band axis in ``self.bands``
        order, rows south -> north, columns east -> west (SCIENCE.md section 2). Pixel indices are
        computed once per batch of centres (tangent-plane offsets rotated to each centre, then
        ``healpy.vec2pix``, i.e. the HEALPix pixel containing each cutout pixel centre) and every map is
        then gathered one band at a time. NaN or UNSEEN values -> :class:`InputError` naming the file.
        """
        ra, dec = _centres(ra_c, dec_c)
        comps = self._resolve_components(components)
        n = ra.size
        npix = int(npix)
        out = {c: np.empty((n, len(self.bands), npix, npix), dtype=np.float32) for c in comps}
        if n == 0:
            return out
        xi, eta = pixel_offsets(npix, pixel_arcmin)
        for s in range(0, n, _BATCH):
            e = min(n, s + _BATCH)
            v = tangent_to_vec(ra[s:e], dec[s:e], xi, eta)
            pix_by_order: dict[bool, np.ndarray] = {}
            for c in comps:
                for ib, band in enumerate(self.bands):
                    m = self.maps[(c, band)]
                    pix = pix_by_order.get(m.nest)
                    if pix is None:
                        pix = hp.vec2pix(self.nside, v[..., 0], v[..., 1], v[..., 2], nest=m.nest)
                        pix_by_order[m.nest] = pix
                    m.gather(pix, out[c][s:e, ib])
        return out


_centres = centres


def find_sehgal_files(directory) -> dict[tuple[str, int], Path]:
    """Map ``(canonical component, band)`` to the files ``{FFF}_{component}_healpix.fits`` present in
    ``directory`` (bands 90/148/219 only; unknown components and ``unlensedcmb`` are ignored)."""
    found: dict[tuple[str, int], Path] = {}
    for entry in sorted(os.listdir(directory)):
        m = _FILE_RE.match(entry)
        if m is None:
            continue
        band = int(m.group(1))
        comp = FILE_COMPONENTS.get(m.group(2))
        if comp is None or band not in BANDS_GHZ:
            continue
        found[(comp, band)] = Path(directory) / entry
    return found


def open_sehgal_dir(directory) -> SehgalSky:
    """Open a directory of Sehgal maps (SCIENCE.md section 1) memory-mapped.

    Every component offered must have all three bands (a missing band -> :class:`InputError` naming the
    missing file); the set must contain at least ``cmb`` and ``tsz`` (the paper's first component level)
    or a ``skymap``; all maps must share one Nside. Every file's header is checked by
    :func:`open_healpix_map`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "no such directory")
    found = find_sehgal_files(directory)
    if not found:
        raise InputError(directory, "no Sehgal maps found: expected files named {090,148,219}_{component}"
                                    "_healpix.fits, component one of " + ", ".join(FILE_COMPONENTS))
    file_name = {v: k for k, v in FILE_COMPONENTS.items()}
    comps = sorted({c for c, _ in found}, key=COMPONENT_ORDER.index)
    for c in comps:
        for b in BANDS_GHZ:
            if (c, b) not in found:
                missing = directory / f"{band_label(b)}_{file_name[c]}_healpix.fits"
                raise InputError(missing, f"missing: component {c!r} is present in other bands but "
                                          f"this {b} GHz file is absent")
    if "skymap" not in comps and not {"cmb", "tsz"} <= set(comps):
        raise InputError(directory, f"found only components {comps}: need at least lensedcmb and tsz "
                                    "(the CMB+tSZ level) or skymap, in all three bands 090, 148, 219")
    maps: dict[tuple[str, int], HealpixMap] = {}
    first: HealpixMap | None = None
    for c in comps:
        for b in BANDS_GHZ:
            m = open_healpix_map(found[(c, b)], b, c)
            if first is None:
                first = m
            elif m.nside != first.nside:
                raise InputError(m.path, f"NSIDE {m.nside} differs from NSIDE {first.nside} of {first.path}")
            maps[(c, b)] = m
    return SehgalSky(directory, maps)
