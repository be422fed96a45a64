"""Websky (Stein et al. 2020): its HEALPix maps and its peak-patch halo catalogue ``halos.pksc``, read where they lie.

Files in a Websky folder (SCIENCE.md section 8; names as on mocks.cita.utoronto.ca/websky and in PySM):

- ``tsz.fits`` (also ``compton-y.fits``, ``tsz_*.fits``): Compton-y, HEALPix RING, Nside 8192 or 4096.
- ``ksz.fits``: uK_CMB (frequency independent); a reionisation ``ksz_patchy*.fits`` beside it is added to it.
- CIB: ``cib_nu0145.fits``, ``cib_nu0090.2.fits``, ``cib_145.fits``, ``cib-145GHZ_v0.fits``: MJy/sr at the
  frequency in the name. Each band takes a map within 0.1% of it, else a power law per pixel (log I linear in
  log nu) between the two maps that bracket it (``cib='interp'``, the default), or the intensity of the nearest
  map (``cib='nearest'``); see :func:`szviewer.sky.healpix.band_parts`.
- ``lensed_alm*.fits``: alms of the lensed CMB (T in HDU 1, uK_CMB); synthesised once at the maps' Nside by
  :func:`synthesise_cmb` (``healpy.alm2map``, lmax at most 3 Nside - 1) and cached as a HEALPix map.
- ``halos.pksc``: :func:`read_pksc`.

A unit keyword in a map's header is used when present; without one the Websky convention above is assumed (and
recorded as such). Every value a cutout gets is float32 uK_CMB at the band.

Cosmology (Websky): Omega_m 0.31, Omega_b 0.049, h 0.68, n_s 0.965, sigma_8 0.81, flat, matter + Lambda (no
radiation term in the distances). Halo masses: M200m from the Lagrangian radius (the catalogue's own), then
M_vir (Bryan & Norman 1998), M500c and M200c through colossus with the Duffy et al. (2008) concentrations (the
same model the synthetic sky uses; Duffy 2008 was fit to z <= 2 and is extrapolated beyond).
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import struct
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import BANDS_GHZ
from szviewer.sky.healpix import (
    NO_UNIT,
    HealpixSky,
    MapSource,
    band_parts,
    open_healpix_file,
    parse_unit,
    write_healpix_map,
)
from szviewer.sky.tiles import Footprint

OMEGA_M = 0.31
OMEGA_B = 0.049
H = 0.68
N_S = 0.965
SIGMA_8 = 0.81
#: Mean matter density [Msun / Mpc^3]: 2.775e11 h^2 Omega_m (Websky's rho_mean).
RHO_MEAN = 2.775e11 * OMEGA_M * H**2
CONCENTRATION_MODEL = "duffy08"
PKSC_HEADER_BYTES = 12
PKSC_COLUMNS = ("x", "y", "z", "vx", "vy", "vz", "R_TH", "xL", "yL", "zL")
#: Default mass floor on read, M200m [Msun]: keeps every halo any label rule of szviewer needs (M_vir, M200c,
#: M500c >= 1e14 all have M200m above it).
DEFAULT_MASS_FLOOR = 1e14

_CIB_RE = re.compile(r"^cib[-_]?(?:nu)?0*(\d+(?:\.\d+)?)(?:ghz)?(?:[-_][^/]*)?\.fits$", re.IGNORECASE)
_TSZ_RE = re.compile(r"^(?:tsz|compton[-_]?y)(?:[-_][^/]*)?\.fits$", re.IGNORECASE)
_KSZ_RE = re.compile(r"^ksz(?:[-_][^/]*)?\.fits$", re.IGNORECASE)
_PATCHY_RE = re.compile(r"^ksz[-_]?patchy[^/]*\.fits$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------ cosmology
@lru_cache(maxsize=1)
def astropy_cosmology():
    """Websky's cosmology for distances (astropy): flat, matter + Lambda."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=100 * H, Om0=OMEGA_M, Ob0=OMEGA_B, name="Websky")


@contextlib.contextmanager
def colossus_cosmology():
    """Websky's cosmology as colossus's current one for the duration (the previous one is restored; nothing is
    written to ~/.colossus)."""
    from colossus.cosmology import cosmology

    try:
        previous = cosmology.getCurrent()
    except Exception:  # colossus raises a bare Exception when none is set
        previous = None
    params = {"flat": True, "H0": 100 * H, "Om0": OMEGA_M, "Ob0": OMEGA_B, "sigma8": SIGMA_8, "ns": N_S,
              "relspecies": False}
    cosmo = cosmology.setCosmology("websky", params=params, persistence="")
    try:
        yield cosmo
    finally:
        if previous is not None:
            cosmology.setCurrent(previous)


@lru_cache(maxsize=4)
def _chi_table(z_max: float) -> tuple[np.ndarray, np.ndarray]:
    z = np.expm1(np.linspace(0.0, math.log1p(z_max), 8192))
    return astropy_cosmology().comoving_distance(z).value, z


def redshift_of_distance(chi_mpc: np.ndarray) -> np.ndarray:
    """Redshift of comoving distances [Mpc] in Websky's cosmology (astropy's distances, inverted by linear
    interpolation on 8,192 points uniform in ln(1 + z): error below 1e-6 in z)."""
    chi = np.asarray(chi_mpc, dtype=float)
    z_max = 10.0
    top = float(np.max(chi)) if chi.size else 0.0
    while _chi_table(z_max)[0][-1] < top and z_max < 1e4:
        z_max *= 4
    d, z = _chi_table(z_max)
    if top > d[-1]:
        raise ValueError(f"comoving distance {top:.6g} Mpc is beyond z = {z_max:g} (the horizon is at "
                         f"{d[-1]:.6g} Mpc)")
    return np.interp(chi, d, z)


def m200m_of_rth(rth_mpc) -> np.ndarray:
    """M200m [Msun] of Lagrangian radii [Mpc]: (4 pi / 3) rho_mean R_TH^3 (Websky's definition)."""
    return (4.0 * np.pi / 3.0) * RHO_MEAN * np.asarray(rth_mpc, dtype=np.float64) ** 3


def rth_of_m200m(m_msun: float) -> float:
    """The Lagrangian radius [Mpc] of a halo of M200m = ``m_msun``."""
    return (m_msun / ((4.0 * np.pi / 3.0) * RHO_MEAN)) ** (1.0 / 3.0)


@lru_cache(maxsize=8)
def _mass_tables(z0: float, z1: float, lm0: float, lm1: float):
    """log10 of M_vir, M500c, M200c [Msun] and R_vir, R500c [proper Mpc] on a (z, log10 M200m) grid."""
    from colossus.halo import mass_adv

    zg = np.linspace(z0, z1, max(2, int(math.ceil((z1 - z0) / 0.05)) + 1))
    lmg = np.linspace(lm0, lm1, max(2, int(math.ceil((lm1 - lm0) / 0.05)) + 1))
    mh = 10**lmg * H  # Msun/h
    keys = ("lmvir", "lrvir", "lm500", "lr500", "lm200c")
    out = {k: np.empty((zg.size, lmg.size)) for k in keys}
    with colossus_cosmology(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Duffy 2008 beyond its fitted z range: smooth
        for i, z in enumerate(zg):
            mv, rv, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200m", "vir", c_model=CONCENTRATION_MODEL)
            m5, r5, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200m", "500c", c_model=CONCENTRATION_MODEL)
            m2, _, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200m", "200c", c_model=CONCENTRATION_MODEL)
            out["lmvir"][i] = np.log10(mv / H)
            out["lrvir"][i] = np.log10(rv / H / 1e3)  # physical kpc/h -> proper Mpc
            out["lm500"][i] = np.log10(m5 / H)
            out["lr500"][i] = np.log10(r5 / H / 1e3)
            out["lm200c"][i] = np.log10(m2 / H)
    return zg, lmg, out


def convert_m200m(z: np.ndarray, m200m: np.ndarray) -> dict[str, np.ndarray]:
    """M_vir, M500c, M200c [Msun] and R_vir, R500c [proper Mpc] of halos of M200m [Msun] at redshift z (colossus,
    Duffy 2008 concentrations, NFW; bilinear in (z, log10 M) on a 0.05 x 0.05 grid: error ~1e-4)."""
    z = np.asarray(z, dtype=float)
    m = np.asarray(m200m, dtype=float)
    names = (("lmvir", "m_vir"), ("lrvir", "r_vir"), ("lm500", "m500"), ("lr500", "r500"), ("lm200c", "m200c"))
    if z.size == 0:
        return {name: np.empty(0) for _, name in names}
    lm = np.log10(m)
    z = np.minimum(z, 20.0)  # beyond any halo catalogue (Websky stops at z = 4.6); keeps the grid small
    z0 = max(0.0, math.floor(float(z.min()) / 0.05) * 0.05 - 0.05)
    z1 = math.ceil(float(z.max()) / 0.05) * 0.05 + 0.05
    lm0 = math.floor(float(lm.min()) / 0.05) * 0.05 - 0.05
    lm1 = math.ceil(float(lm.max()) / 0.05) * 0.05 + 0.05
    zg, lmg, tabs = _mass_tables(round(z0, 4), round(z1, 4), round(lm0, 4), round(lm1, 4))
    # one set of bilinear weights on the uniform grid for all five tables
    fz = np.clip((z - zg[0]) / (zg[1] - zg[0]), 0, zg.size - 1 - 1e-9)
    fm = np.clip((lm - lmg[0]) / (lmg[1] - lmg[0]), 0, lmg.size - 1 - 1e-9)
    iz, im = fz.astype(np.int64), fm.astype(np.int64)
    wz, wm = fz - iz, fm - im
    res = {}
    for key, name in names:
        t = tabs[key]
        v = ((1 - wz) * ((1 - wm) * t[iz, im] + wm * t[iz, im + 1])
             + wz * ((1 - wm) * t[iz + 1, im] + wm * t[iz + 1, im + 1]))
        res[name] = 10**v
    return res


# ------------------------------------------------------------------------------------------------ halos.pksc
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


# ------------------------------------------------------------------------------------------------ maps
@dataclass
class WebskyFiles:
    """The files of a Websky folder that a sky is made of (names relative to ``directory``)."""

    directory: Path
    tsz: str
    ksz: list[str] = field(default_factory=list)
    cib: dict[str, float] = field(default_factory=dict)
    alm: str | None = None
    halos: str | None = None

    def to_json(self) -> dict:
        return {"tsz": self.tsz, "ksz": list(self.ksz), "cib": dict(self.cib), "alm": self.alm, "halos": self.halos}

    @classmethod
    def from_json(cls, directory, d: dict) -> WebskyFiles:
        cib = {k: float(v) for k, v in d.get("cib", {}).items()}
        return cls(Path(directory), d["tsz"], list(d.get("ksz", [])), cib, d.get("alm"), d.get("halos"))

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.directory / p


def _one(directory: Path, names: list[str], what: str, hint: str) -> str | None:
    if len(names) > 1:
        raise InputError(directory, f"several {what}: {', '.join(names)}; {hint}")
    return names[0] if names else None


def find_websky_files(directory, cmb_alm=None, halos=None) -> WebskyFiles:
    """Find the Websky files of a folder (module docstring): one tSZ map (required), kSZ maps, CIB maps by
    frequency, the lensed-CMB alms (required: every component level has the CMB; ``cmb_alm`` names the file when
    there are several) and ``halos.pksc`` (``halos`` overrides). One-line :class:`InputError` otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "no such directory")
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    fits_names = [n for n in names if n.lower().endswith(".fits") and "alm" not in n.lower()]
    if "tsz.fits" in fits_names:
        tsz = "tsz.fits"
    else:
        tsz = _one(directory, [n for n in fits_names if _TSZ_RE.match(n)], "tSZ maps",
                   "keep one, or name the one to use tsz.fits")
    if tsz is None:
        raise InputError(directory, "no tsz.fits (the Compton-y map): not a Websky folder? expected tsz.fits, "
                                    "ksz.fits, cib_nu*.fits, lensed_alm*.fits and halos.pksc")
    patchy = [n for n in fits_names if _PATCHY_RE.match(n)]
    if "ksz.fits" in fits_names:
        ksz = ["ksz.fits"]
    else:
        k = _one(directory, [n for n in fits_names if _KSZ_RE.match(n) and n not in patchy], "kSZ maps",
                 "keep one, or name the one to use ksz.fits")
        ksz = [k] if k else []
    p = _one(directory, patchy, "patchy kSZ maps", "keep one")
    if p is not None:
        ksz.append(p)
    cib: dict[str, float] = {}
    seen: dict[float, str] = {}
    for n in fits_names:
        m = _CIB_RE.match(n)
        if m is None:
            continue
        nu = float(m.group(1))
        if nu <= 0:
            continue
        if nu in seen:
            raise InputError(directory / n, f"a second CIB map at {nu:g} GHz (also {seen[nu]}); keep one")
        seen[nu] = n
        cib[n] = nu
    if cmb_alm is not None:
        alm_path = Path(cmb_alm)
        if not alm_path.is_file():
            raise InputError(alm_path, "no such file (the lensed-CMB alms)")
        alm = str(alm_path.resolve())
    else:
        alms = [n for n in names if n.lower().startswith("lensed_alm") and n.lower().endswith(".fits")]
        alm = "lensed_alm.fits" if "lensed_alm.fits" in alms else _one(
            directory, alms, "lensed-CMB alm files", "choose one with --cmb-alm FILE")
        if alm is None:
            raise InputError(directory, "no lensed_alm*.fits (the lensed CMB): every component level holds the CMB; "
                                        "give the alms with --cmb-alm FILE")
    if halos is not None:
        halo_name = str(Path(halos).resolve())
    elif "halos.pksc" in names:
        halo_name = "halos.pksc"
    else:
        halo_name = _one(directory, [n for n in names if n.lower().endswith(".pksc")], "halo catalogues (.pksc)",
                         "choose one with --halos FILE")
    return WebskyFiles(directory, tsz, ksz, cib, alm, halo_name)


def _source(path: Path, expect: str, factor: float, convention: str, freq: float | None) -> MapSource:
    """A Websky map with its unit: the header's when it has one, else the Websky convention."""
    f = open_healpix_file(path)
    if f.unit is not None and str(f.unit).strip():
        parsed = parse_unit(f.unit)
        if parsed is None:
            raise InputError(path, f"unsupported unit {f.unit!r}; expected {convention}")
        return MapSource(f, parsed[0], parsed[1], freq, str(f.unit).strip())
    return MapSource(f, expect, factor, freq, f"{convention} (Websky convention; no unit keyword)")


def open_websky_dir(directory, cmb_map=None, cib: str = "interp", selection: WebskyFiles | None = None,
                    bands=BANDS_GHZ) -> HealpixSky:
    """Open a Websky folder as a :class:`~szviewer.sky.healpix.HealpixSky` (components cmb, tsz, ksz, ir).

    ``cmb_map``: the lensed CMB already synthesised as a HEALPix map in uK_CMB (:func:`synthesise_cmb`; without it
    the sky has no ``cmb``); ``cib``: 'interp' or 'nearest' (module docstring); ``selection``: the files to use
    (default :func:`find_websky_files`). Every map's header is checked; maps may have different Nside.
    """
    if cib not in ("interp", "nearest"):
        raise ValueError(f"cib {cib!r}: expected 'interp' or 'nearest'")
    directory = Path(directory)
    sel = selection or find_websky_files(directory)
    sources: list[MapSource] = [_source(sel.path(sel.tsz), "y", 1.0, "Compton-y", None)]
    layers: dict[str, list[list[int]]] = {"tsz": [[0]]}
    for name in sel.ksz:
        sources.append(_source(sel.path(name), "uK_CMB", 1.0, "uK_CMB", None))
        layers.setdefault("ksz", []).append([len(sources) - 1])
    cib_layer = []
    for name, nu in sorted(sel.cib.items(), key=lambda kv: kv[1]):
        sources.append(_source(sel.path(name), "Jy/sr", 1e6, "MJy/sr", nu))
        cib_layer.append(len(sources) - 1)
    if cib_layer:
        layers["ir"] = [cib_layer]
    if cmb_map is not None:
        sources.append(_source(Path(cmb_map), "uK_CMB", 1.0, "uK_CMB", None))
        layers["cmb"] = [[len(sources) - 1]]
    recipes = {comp: {int(b): [p for layer in ls for p in band_parts(comp, sources, layer, b, cib, directory)]
                      for b in bands} for comp, ls in layers.items()}
    settings = {"cib": cib, "files": sel.to_json()}
    return HealpixSky(directory, "websky", sources, recipes, bands, settings,
                      reopen=(open_websky_dir, (directory, cmb_map, cib, sel, tuple(bands))))


def reopen_websky(provenance: dict, root) -> HealpixSky:
    """The Websky sky an import recorded (:meth:`HealpixSky.describe` plus ``settings['cmb_map']``, relative to
    the workspace ``root``)."""
    s = provenance.get("settings", {})
    directory = Path(provenance["directory"])
    sel = WebskyFiles.from_json(directory, s["files"])
    cmb = s.get("cmb_map")
    return open_websky_dir(directory, Path(root) / cmb if cmb else None, s.get("cib", "interp"), sel,
                           provenance.get("bands_ghz", BANDS_GHZ))


# ------------------------------------------------------------------------------------------------ lensed CMB
def _alm_unit(path: Path) -> tuple[float, str]:
    from astropy.io import fits

    try:
        hdr = fits.getheader(path, 1)
    except Exception as exc:  # astropy's errors for broken files vary
        raise InputError(path, f"not a readable alm FITS file: {exc}") from None
    raw = next((hdr.get(k) for k in ("TUNIT2", "BUNIT", "UNITS")  # TUNIT2: the 'real' column of write_alm
                if hdr.get(k) and str(hdr.get(k)).strip().lower() not in NO_UNIT), None)
    if raw is None:
        return 1.0, "uK_CMB (Websky convention; no unit keyword)"
    parsed = parse_unit(raw)
    if parsed is None or parsed[0] != "uK_CMB":
        raise InputError(path, f"unit {raw!r}: the lensed-CMB alms must be in K, mK or uK (CMB)")
    return parsed[1], str(raw)


def cmb_cache_matches(cache: Path, alm_path: Path, nside: int) -> bool:
    """True when ``cache`` is the map :func:`synthesise_cmb` made from this very alm file (name, size, mtime)
    at this Nside."""
    from astropy.io import fits

    if not cache.is_file():
        return False
    try:
        h = fits.getheader(cache, 1)
    except Exception:  # a damaged cache is simply made again
        return False
    st = alm_path.stat()
    return (h.get("ALMFILE") == alm_path.name and int(h.get("ALMSIZE", -1)) == st.st_size
            and abs(float(h.get("ALMMTIME", -1)) - st.st_mtime) < 1e-3 and int(h.get("NSIDE", -1)) == nside
            and cache.stat().st_size >= 12 * nside * nside * 4)


def synthesise_cmb(alm_path, nside: int, out_path, progress: ProgressFn | None = None,
                   cancelled: CancelFn | None = None, reuse=None) -> dict:
    """The lensed CMB temperature as a HEALPix map: ``healpy.alm2map`` of the T alms (HDU 1 of ``alm_path``) at
    ``nside`` with lmax = min(the file's, 3 Nside - 1), no pixel window, written as float32 uK_CMB (RING) to
    ``out_path`` through a temporary name. ``reuse``: an earlier cache that is copied instead when it was made
    from the same file at the same Nside (:func:`cmb_cache_matches`). Memory: the alms (complex128) plus one
    float64 map (6.4 GB at Nside 8192). Returns a record of what was done."""
    import healpy as hp

    from szviewer.atomic import atomic_path

    alm_path = Path(alm_path)
    out_path = Path(out_path)
    if not alm_path.is_file():
        raise InputError(alm_path, "no such file")
    st = alm_path.stat()
    if reuse is not None and cmb_cache_matches(Path(reuse), alm_path, nside):
        with atomic_path(out_path) as tmp:
            shutil.copyfile(reuse, tmp)
        return {"alm": str(alm_path.resolve()), "nside": nside, "reused": str(reuse)}
    steps = 3
    if progress is not None:
        progress(0, steps, "reading the lensed-CMB alms")
    factor, unit = _alm_unit(alm_path)
    try:
        alm, mmax = hp.read_alm(str(alm_path), hdu=1, return_mmax=True)
    except Exception as exc:  # healpy/astropy raise many types for damaged files
        raise InputError(alm_path, f"cannot read the alms: {exc}") from None
    try:
        lmax = int(hp.Alm.getlmax(alm.size, mmax if mmax >= 0 else None))
    except Exception:
        lmax = -1
    if lmax < 0:
        raise InputError(alm_path, f"{alm.size} alms is not a triangular (lmax, mmax) set")
    mmax = lmax if mmax is None or mmax < 0 else int(mmax)
    lout = min(lmax, 3 * nside - 1)
    mout = min(mmax, lout)
    if lout < lmax or mout < mmax:
        alm = hp.resize_alm(alm, lmax, mmax, lout, mout)
    check_cancel(cancelled, "synthesising the CMB")
    if progress is not None:
        progress(1, steps, f"alm2map at Nside {nside}, lmax {lout}")
    m = hp.alm2map(alm, nside, lmax=lout, mmax=mout, pixwin=False)
    del alm
    if factor != 1.0:
        m *= factor
    check_cancel(cancelled, "synthesising the CMB")
    if progress is not None:
        progress(2, steps, "writing the CMB map")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"ALMFILE": alm_path.name, "ALMSIZE": int(st.st_size), "ALMMTIME": float(st.st_mtime), "LMAX": lout,
             "MMAX": mout, "COMMENT": "lensed CMB T synthesised by szviewer (healpy.alm2map, no pixel window)"}
    with atomic_path(out_path) as tmp:
        write_healpix_map(tmp, m, nside, "uK_CMB", extra=extra)
    if progress is not None:
        progress(steps, steps, "CMB map written")
    return {"alm": str(alm_path.resolve()), "alm_unit": unit, "nside": nside, "lmax_file": lmax, "lmax": lout,
            "mmax": mout}
