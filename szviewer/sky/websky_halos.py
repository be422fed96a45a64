"""Websky's peak-patch halo catalogue ``halos.pksc``: its header checked, streamed and read down to a mass floor.

:func:`read_pksc` gives the canonical halo table (positions to RA/Dec and redshift, masses through
:mod:`szviewer.sky.websky_cosmology`); :func:`write_pksc` writes the layout for tests and benchmarks.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.tiles import Footprint
from szviewer.sky.websky_cosmology import (
    CONCENTRATION_MODEL,
    N_S,
    OMEGA_B,
    OMEGA_M,
    SIGMA_8,
    H,
    convert_m200m,
    m200m_of_rth,
    redshift_of_distance,
    rth_of_m200m,
)

PKSC_HEADER_BYTES = 12
PKSC_COLUMNS = ("x", "y", "z", "vx", "vy", "vz", "R_TH", "xL", "yL", "zL")
#: Default mass floor on read, M200m [Msun]: keeps every halo any label rule of szviewer needs (M_vir, M200c,
#: M500c >= 1e14 all have M200m above it).
DEFAULT_MASS_FLOOR = 1e14


@dataclass(frozen=True)
class PkscHeader:
    """The 12-byte header of a ``halos.pksc``: N (stored as ``n_stored``; some files store it negative), RTHmax
    [Mpc], the box redshift; ``ncol`` float32 per halo (10, or 11 in newer peak-patch outputs) and the byte
    order ('<' little-endian, as Websky writes; '>' read too)."""

    n: int
    n_stored: int
    rthmax: float
    redshift: float
    ncol: int
    byteorder: str


def read_pksc_header(path) -> PkscHeader:
    """Read and check a ``halos.pksc`` header against the file size (one-line :class:`InputError` naming the
    file: too short, truncated, or a size that is not N halos of 10 or 11 float32)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    size = path.stat().st_size
    if size < PKSC_HEADER_BYTES:
        raise InputError(path, f"truncated: {size} bytes, shorter than the 12-byte halos.pksc header "
                               "(int32 N, float32 RTHmax, float32 redshift)")
    with open(path, "rb") as f:
        head = f.read(PKSC_HEADER_BYTES)
    body = size - PKSC_HEADER_BYTES
    first = None
    for order in ("<", ">"):
        n_stored, rthmax, zbox = struct.unpack(f"{order}iff", head)
        n = abs(n_stored)
        if first is None:
            first = (n, n_stored)
        for ncol in (10, 11):
            if body == n * ncol * 4:
                return PkscHeader(n, n_stored, float(rthmax), float(zbox), ncol, order)
    n, n_stored = first
    if body < n * 10 * 4:
        have = body // 40
        raise InputError(path, f"truncated: the header says {n_stored} halos ({PKSC_HEADER_BYTES + 40 * n} bytes "
                               f"of 10 float32 each) but the file has {size} bytes ({have} whole halos)")
    raise InputError(path, f"the header says {n_stored} halos but the {body} bytes after it are not {n} halos of 10 "
                           "(or 11) float32: not a Websky halos.pksc file?")


def iter_pksc(path, rth_min: float = 0.0, block: int = 1 << 16, header: PkscHeader | None = None,
              progress: ProgressFn | None = None, cancelled: CancelFn | None = None):
    """Stream a ``halos.pksc``: yield ``(rows, values)`` per block of ``block`` halos for the halos with R_TH >=
    ``rth_min`` [Mpc]: their 0-based rows (int64) and their first 7 columns (x, y, z, vx, vy, vz, R_TH; float32).

    One reusable buffer of ``block`` halos is filled with ``readinto`` (2.6 MB by default: it stays in cache), so
    memory stays bounded whatever the file size; the cut is one comparison on the R_TH column.
    """
    path = Path(path)
    hd = header or read_pksc_header(path)
    dtype = np.dtype(f"{hd.byteorder}f4")
    buf = np.empty((block, hd.ncol), dtype=dtype)
    view = memoryview(buf).cast("B")
    mask = np.empty(block, dtype=bool)
    thr = dtype.type(rth_min)
    if rth_min > 0:
        thr = np.nextafter(thr, dtype.type(0))  # the exact mass cut is made on the kept rows
    done = 0
    with open(path, "rb", buffering=0) as f:
        f.seek(PKSC_HEADER_BYTES)
        while done < hd.n:
            check_cancel(cancelled, "reading halos")
            k = min(block, hd.n - done)
            want = k * hd.ncol * 4
            got = 0
            while got < want:
                r = f.readinto(view[got:want])
                if not r:
                    raise InputError(path, f"truncated while reading: {got} of {want} bytes at halo {done}")
                got += r
            arr = buf[:k]
            m = mask[:k]
            np.greater_equal(arr[:, 6], thr, out=m)
            if m.any():
                idx = np.flatnonzero(m)
                yield done + idx.astype(np.int64), np.asarray(arr[idx, :7], dtype=np.float32)
            done += k
            if progress is not None:
                progress(done, hd.n, "halos")


def read_pksc(path, m200m_min: float = DEFAULT_MASS_FLOOR, footprint: Footprint | None = None,
              block: int = 1 << 16, progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> Table:
    """Read Websky's ``halos.pksc`` down to a mass floor, streamed (never loaded whole).

    Format (little-endian): int32 N (some files store -N), float32 RTHmax, float32 redshift, then N x 10 float32:
    x, y, z [comoving Mpc], vx, vy, vz [km/s], R_TH [Lagrangian Mpc], xL, yL, zL. Kept: halos with
    M200m = (4 pi / 3) 2.775e11 Omega_m h^2 R_TH^3 >= ``m200m_min`` [Msun] and, if given, inside ``footprint``
    (RA/Dec box in degrees). RA/Dec from ``healpy.vec2ang(x, y, z)``; z from the comoving distance
    (:func:`redshift_of_distance`); M_vir, R_vir, M500c, R500c, M200c from :func:`convert_m200m`; ``v_los`` the
    line-of-sight velocity [km/s, positive receding].

    Returns the canonical halo table (:func:`szviewer.sky.halo_ascii.canonical_table`; ``halo_id`` the 0-based row
    in the file, ``y_int_arcmin2`` NaN) plus ``v_los``, with meta (keys of at most 8 characters, so they survive a
    FITS header): source, format, nfile, nstored, ncolumns, rthmax, boxz (the header's redshift), massdef, massmin
    (the floor), cosmo, concmod and region.
    """
    import healpy as hp

    from szviewer.sky.halo_ascii import canonical_table

    path = Path(path)
    hd = read_pksc_header(path)
    if not (math.isfinite(m200m_min) and m200m_min >= 0):
        raise ValueError(f"mass floor {m200m_min!r}: must be a finite number >= 0 of Msun")
    rows, vals = [], []
    for r, v in iter_pksc(path, rth_of_m200m(m200m_min) if m200m_min > 0 else 0.0, block, hd, progress, cancelled):
        keep = m200m_of_rth(v[:, 6]) >= m200m_min
        rows.append(r[keep])
        vals.append(v[keep])
    idx = np.concatenate(rows) if rows else np.empty(0, np.int64)
    v = np.concatenate(vals) if vals else np.empty((0, 7), np.float32)
    pos = v[:, :3].astype(np.float64)
    chi = np.sqrt(np.sum(pos**2, axis=1))
    if np.any(chi == 0) or not np.all(np.isfinite(v)):
        bad = int(np.nonzero((chi == 0) | ~np.all(np.isfinite(v), axis=1))[0][0])
        raise InputError(path, f"halo {int(idx[bad])} (0-based) has a NaN, infinite or zero position: not a Websky "
                               "halos.pksc file?")
    if idx.size:
        ra, dec = hp.vec2ang(pos, lonlat=True)
        ra = np.mod(ra, 360.0)
    else:
        ra = dec = np.empty(0)
    if footprint is not None:
        inside = footprint.contains(ra, dec)
        idx, v, pos, chi, ra, dec = idx[inside], v[inside], pos[inside], chi[inside], ra[inside], dec[inside]
    try:
        z = redshift_of_distance(chi)
    except ValueError as exc:
        raise InputError(path, f"a halo at {exc}: not a Websky halos.pksc file (positions in comoving Mpc)?") from None
    m200m = m200m_of_rth(v[:, 6])
    conv = convert_m200m(z, m200m)
    v_los = np.sum(v[:, 3:6].astype(np.float64) * pos, axis=1) / np.where(chi > 0, chi, 1.0)
    cols = {"halo_id": idx, "z": z, "ra": ra, "dec": dec, "m200m": m200m, **conv}
    meta = {"source": str(path), "format": "websky_pksc", "nfile": hd.n, "nstored": hd.n_stored,
            "ncolumns": hd.ncol, "rthmax": hd.rthmax, "boxz": hd.redshift, "massdef": "M200m",
            "massmin": float(m200m_min),
            "cosmo": f"Websky: Omega_m {OMEGA_M}, Omega_b {OMEGA_B}, h {H}, n_s {N_S}, sigma_8 {SIGMA_8}",
            "concmod": f"{CONCENTRATION_MODEL} (colossus)"}
    if footprint is not None:
        meta["region"] = ",".join(f"{v:g}" for v in footprint.box)
    t = canonical_table(cols, idx.size, meta, extra={"v_los": v_los})
    t["v_los"].unit = u.km / u.s
    return t


def write_pksc(path, rows: np.ndarray, rthmax: float | None = None, redshift: float = 0.0,
               negative_n: bool = False) -> None:
    """Write an (N, 10) array in the ``halos.pksc`` layout (little-endian; for tests and benchmarks)."""
    arr = np.asarray(rows, dtype="<f4")
    if arr.ndim != 2 or arr.shape[1] not in (10, 11):
        raise ValueError("expected an (N, 10) array")
    n = arr.shape[0]
    rmax = float(arr[:, 6].max()) if rthmax is None and n else float(rthmax or 0.0)
    with open(path, "wb") as f:
        f.write(struct.pack("<iff", -n if negative_n else n, rmax, redshift))
        arr.tofile(f)
