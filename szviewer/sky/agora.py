"""AGORA (Omori 2022): per-component HEALPix maps and the halo light-cone shells, read where they lie.

Maps: every ``agora*.fits`` in the folder or up to two folders below it (SCIENCE.md section 8: components at
Nside 8192, and mock skies ``agora_{expt}_{freq}ghz_{component}_uk.fits``). The name, split at ``_``, ``-`` and
``.``, says what a map is:

- component: a token holding ``tsz`` -> tsz, ``ksz`` -> ksz, ``cib`` -> ir, ``rad``/``radio`` -> radio, ``cmb`` ->
  cmb (the lensed CMB; names with ``unlensed``, ``ulcmb``, ``kappa`` or ``phi`` are skipped), ``total``, ``sum``,
  ``skymap`` -> skymap (a total sky, usable only at its own frequency); other names are ignored;
- frequency: a token ``95ghz``, ``217p5ghz`` (none: frequency independent, e.g. a Compton-y map);
- unit: the header's unit keyword (uK_CMB, K, Compton-y, Jy/sr, MJy/sr); without one, a unit token in the name
  (``uk``, ``muk`` -> uK_CMB; ``y``, ``comptony`` -> Compton-y; ``mjysr``, ``jysr``); else an InputError.

Each band takes its maps as :func:`szviewer.sky.healpix_recipes.band_parts` says: a frequency-independent map as it is,
Compton-y times the tSZ spectrum (a tSZ map in uK at another frequency through y), the CIB and radio
interpolated in log frequency between the maps that bracket the band (``cib='interp'``) or the nearest
(``cib='nearest'``). When two maps fit one component and frequency (two experiments, two feedback models),
``prefer`` picks the one whose name holds a preferred text; otherwise the folder is ambiguous (InputError).

Halos: :func:`read_agora_halos`. Cosmology: MultiDark-Planck 2, the N-body run AGORA is built on (h 0.6777,
Omega_m 0.307115, Omega_b 0.048206, sigma_8 0.8228, n_s 0.96) **[unverified against the AGORA release]**.
"""

from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.bands import BANDS_GHZ
from szviewer.sky.healpix import COMPONENT_ORDER, HealpixSky
from szviewer.sky.healpix_files import open_healpix_file, parse_unit
from szviewer.sky.healpix_recipes import MapSource, band_parts
from szviewer.sky.tiles import Footprint

H = 0.6777
OMEGA_M = 0.307115
OMEGA_B = 0.048206
#: Default mass floor on read, M_vir [Msun]: keeps every halo of M_vir, M200c or M500c >= 1e14.
DEFAULT_MASS_FLOOR = 1e14
#: Keys a light-cone shell must hold, and the optional ones that are kept (key -> canonical column).
REQUIRED_KEYS = ("ra", "dec", "z", "mvir")
MASS_KEYS = {"mvir": "m_vir", "m200c": "m200c", "m500c": "m500"}
_SKIP_TOKENS = ("unlensed", "ulcmb", "ucmb", "unlcmb", "kappa", "phi", "mask", "noise", "ivar", "hits", "alm")
_TOTAL_TOKENS = {"total", "sum", "skymap", "tot", "combined"}
_UNIT_TOKENS = {"uk": ("uK_CMB", 1.0), "muk": ("uK_CMB", 1.0), "ukcmb": ("uK_CMB", 1.0), "kcmb": ("uK_CMB", 1e6),
                "y": ("y", 1.0), "comptony": ("y", 1.0), "compy": ("y", 1.0), "mjysr": ("Jy/sr", 1e6),
                "jysr": ("Jy/sr", 1.0)}
_FREQ_RE = re.compile(r"^f?(\d+(?:p\d+)?)ghz$")


@lru_cache(maxsize=1)
def astropy_cosmology():
    """AGORA's (MultiDark-Planck 2) cosmology for distances and densities (astropy, flat)."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=100 * H, Om0=OMEGA_M, Ob0=OMEGA_B, name="MDPL2")


# ------------------------------------------------------------------------------------------------ maps
@dataclass(frozen=True)
class AgoraMap:
    """One AGORA map as its name describes it (``name`` relative to the folder)."""

    name: str
    component: str
    freq_ghz: float | None
    unit_token: str | None


def parse_map_name(name: str) -> AgoraMap | None:
    """What an AGORA map name says (module docstring), or None for a file that is not a sky component."""
    stem = Path(name).name.lower()
    if stem.endswith(".fits"):
        stem = stem[:-5]
    tokens = [t for t in re.split(r"[_\-.]+", stem) if t]
    if not tokens or not tokens[0].startswith("agora"):
        return None
    if any(s in t for t in tokens for s in _SKIP_TOKENS):
        return None
    freq = None
    unit = None
    comp = None
    for t in tokens[1:]:
        m = _FREQ_RE.match(t)
        if m:
            freq = float(m.group(1).replace("p", "."))
            continue
        if t in _UNIT_TOKENS:
            unit = t
            continue
        if comp is not None:
            continue
        if "tsz" in t:
            comp = "tsz"
        elif "ksz" in t:
            comp = "ksz"
        elif "cib" in t:
            comp = "ir"
        elif t.startswith(("rad", "lrad")) or "radio" in t:
            comp = "radio"
        elif t in _TOTAL_TOKENS:
            comp = "skymap"
    if comp is None:  # the CMB last, so an experiment name such as 'cmbs4' does not make every map a CMB map
        comp = next(("cmb" for t in tokens[1:] if "cmb" in t and not t.startswith("cmbs4")), None)
    if comp is None:
        return None
    return AgoraMap(str(name), comp, freq, unit)


def find_agora_maps(directory, prefer=()) -> list[AgoraMap]:
    """The AGORA maps of a folder (and up to two levels below), one per (component, frequency); ties broken by
    ``prefer`` (texts a name should hold, most preferred first). One-line InputError when still ambiguous."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "no such directory")
    found: dict[tuple[str, float | None], list[AgoraMap]] = {}
    for depth in ("agora*.fits", "*/agora*.fits", "*/*/agora*.fits"):
        for p in sorted(directory.glob(depth)):
            if any(part.startswith(".") for part in p.relative_to(directory).parts) or not p.is_file():
                continue
            m = parse_map_name(str(p.relative_to(directory)))
            if m is not None:
                found.setdefault((m.component, m.freq_ghz), []).append(m)
    prefer = [s.lower() for s in prefer if s]
    out = []
    for (comp, freq), maps in sorted(found.items(), key=lambda kv: (COMPONENT_ORDER.index(kv[0][0]),
                                                                      kv[0][1] or 0.0)):
        if len(maps) > 1 and prefer:
            def rank(m: AgoraMap) -> tuple:
                low = m.name.lower()
                return tuple(s not in low for s in prefer)

            best = min(rank(m) for m in maps)
            maps = [m for m in maps if rank(m) == best]
        if len(maps) > 1:
            at = f" at {freq:g} GHz" if freq is not None else ""
            raise InputError(directory, f"several {comp} maps{at}: {', '.join(m.name for m in maps)}; pass "
                                        "--prefer TEXT (a text in the name of the one to use) or keep one")
        out.append(maps[0])
    return out


def _source(directory: Path, m: AgoraMap) -> MapSource:
    path = directory / m.name
    f = open_healpix_file(path)
    if f.unit is not None and str(f.unit).strip():
        parsed = parse_unit(f.unit)
        if parsed is None:
            raise InputError(path, f"unsupported unit {f.unit!r}; expected uK_CMB, K_CMB, Compton-y, Jy/sr or MJy/sr")
        return MapSource(f, parsed[0], parsed[1], m.freq_ghz, str(f.unit).strip())
    if m.unit_token is None:
        raise InputError(path, "no unit keyword (TUNITn, BUNIT or UNITS) and no unit in the name (e.g. _uk)")
    q, fac = _UNIT_TOKENS[m.unit_token]
    return MapSource(f, q, fac, m.freq_ghz, f"{q} (from the name: '{m.unit_token}')")


def open_agora_dir(directory, cib: str = "interp", prefer=(), selection: list[AgoraMap] | None = None,
                   bands=BANDS_GHZ) -> HealpixSky:
    """Open an AGORA folder as a :class:`~szviewer.sky.healpix.HealpixSky`. Needs at least the lensed CMB and tSZ
    (the first component level) or a total sky in every band; every map's header is checked."""
    if cib not in ("interp", "nearest"):
        raise ValueError(f"cib {cib!r}: expected 'interp' or 'nearest'")
    directory = Path(directory)
    maps = selection if selection is not None else find_agora_maps(directory, prefer)
    comps = {m.component for m in maps}
    if "skymap" not in comps and not {"cmb", "tsz"} <= comps:
        raise InputError(directory, f"AGORA maps found for {sorted(comps) or 'no component'}: need at least the "
                                    "lensed CMB and tSZ (agora_*cmb*.fits, agora_*tsz*.fits) or total sky maps")
    sources: list[MapSource] = []
    layers: dict[str, list[int]] = {}
    for m in maps:
        sources.append(_source(directory, m))
        layers.setdefault(m.component, []).append(len(sources) - 1)
    recipes = {comp: {int(b): band_parts(comp, sources, layer, b, cib, directory) for b in bands}
               for comp, layer in layers.items()}
    settings = {"cib": cib, "prefer": list(prefer),
                "files": [{"name": m.name, "component": m.component, "freq_ghz": m.freq_ghz,
                           "unit_token": m.unit_token} for m in maps]}
    return HealpixSky(directory, "agora", sources, recipes, bands, settings,
                      reopen=(open_agora_dir, (directory, cib, tuple(prefer), list(maps), tuple(bands))))


def reopen_agora(provenance: dict, root) -> HealpixSky:
    """The AGORA sky an import recorded (:meth:`HealpixSky.describe`)."""
    s = provenance.get("settings", {})
    maps = [AgoraMap(f["name"], f["component"], f.get("freq_ghz"), f.get("unit_token")) for f in s.get("files", [])]
    return open_agora_dir(provenance["directory"], s.get("cib", "interp"), s.get("prefer", ()), maps,
                          provenance.get("bands_ghz", BANDS_GHZ))


# ------------------------------------------------------------------------------------------------ halos
def find_halo_shells(directory) -> list[Path]:
    """The light-cone shells ``agora_halolc_*.npz`` in the folder or up to two levels below (e.g. halocat/)."""
    directory = Path(directory)
    out = []
    for pat in ("agora_halolc*.npz", "*/agora_halolc*.npz", "*/*/agora_halolc*.npz"):
        out += [p for p in sorted(directory.glob(pat)) if p.is_file()]
    return out


def _bryan_norman_r_proper(m_msun: np.ndarray, z: np.ndarray) -> np.ndarray:
    """R_vir [proper Mpc] of M_vir [Msun] at z (Bryan & Norman 1998 Delta_c, AGORA's cosmology)."""
    cosmo = astropy_cosmology()
    om = cosmo.Om(z)
    x = om - 1.0
    delta = 18 * np.pi**2 + 82 * x - 39 * x**2
    rho_c = cosmo.critical_density(z).to_value(u.Msun / u.Mpc**3)
    return (3 * m_msun / (4 * np.pi * delta * rho_c)) ** (1.0 / 3.0)


def _rvir_convention(m_vir: np.ndarray, z: np.ndarray, r: np.ndarray) -> tuple[str, np.ndarray]:
    """R_vir [Mpc] read as proper or comoving, whichever agrees with M_vir (Bryan & Norman); returns the
    convention found and R_vir in proper Mpc (as given when neither agrees)."""
    ok = np.isfinite(r) & (r > 0)
    if not ok.any():
        return "absent", np.full(r.shape, np.nan)
    pick = np.nonzero(ok)[0][:2000]
    expect = _bryan_norman_r_proper(m_vir[pick], z[pick])
    proper = float(np.median(r[pick] / expect))
    comoving = float(np.median(r[pick] / (1 + z[pick]) / expect))
    if abs(math.log(comoving)) < abs(math.log(proper)) and abs(math.log(comoving)) < math.log(1.15):
        return "comoving (converted to proper)", r / (1 + z)
    if abs(math.log(proper)) < math.log(1.15):
        return "proper", r
    return f"as given (neither proper nor comoving matches M_vir: ratios {proper:.2f}, {comoving:.2f})", r


def _load_shell(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"not a readable .npz archive (truncated?): {exc}") from None


def _column(npz, path: Path, key: str, n: int | None) -> np.ndarray:
    try:
        a = npz[key]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise InputError(path, f"key {key!r} cannot be read (truncated?): {exc}") from None
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise InputError(path, f"key {key!r} has shape {a.shape}; expected ({n},) like 'mvir'")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(path, f"key {key!r} is not numeric ({a.dtype})")
    return a


def read_agora_halos(paths, mass_floor: float = DEFAULT_MASS_FLOOR, footprint: Footprint | None = None,
                     h: float | None = None, progress: ProgressFn | None = None,
                     cancelled: CancelFn | None = None) -> Table:
    """Read AGORA halo light-cone shells (``agora_halolc_*.npz``) down to a mass floor.

    Keys (SCIENCE.md section 8): ra, dec [deg], z, m200c, m500c, mvir [Msun/h], rvir [Mpc/h], vlos [km/s], haloid,
    ... Masses and radii are divided by h (the shell's ``h`` key, else ``h``, else MDPL2's 0.6777); R_vir is made
    proper (:func:`_rvir_convention`). Kept: M_vir >= ``mass_floor`` [Msun] and, if given, inside ``footprint``.
    One shell is read key by key (never more than one column of it whole in memory besides the kept rows).

    Returns the canonical halo table (``halo_id``: the row over all shells in sorted order, before any cut) plus
    ``v_los`` and ``source_halo_id`` (the shell's ``haloid``) when the shells have them; meta (keys of at most 8
    characters): source, format, nshells, nfile, h, massdef, massmin, rvir (the convention found), radecu, region.
    """
    from szviewer.sky.halo_ascii import canonical_table

    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError(None, "no AGORA halo shells (agora_halolc_*.npz) given")
    if not (math.isfinite(mass_floor) and mass_floor >= 0):
        raise ValueError(f"mass floor {mass_floor!r}: must be a finite number >= 0 of Msun")
    parts: dict[str, list[np.ndarray]] = {}
    offset = 0
    hs = set()
    radians = False
    for k, path in enumerate(paths):
        check_cancel(cancelled, "reading halos")
        if not path.is_file():
            raise InputError(path, "no such file")
        with _load_shell(path) as npz:
            keys = set(npz.files)
            missing = [key for key in REQUIRED_KEYS if key not in keys]
            if missing:
                raise InputError(path, f"missing key(s) {', '.join(missing)}; an AGORA halo shell has ra, dec, z, "
                                       f"mvir, m200c, m500c, rvir, ... (this one: {', '.join(sorted(keys))})")
            hh = float(npz["h"]) if "h" in keys else (h or H)
            hs.add(hh)
            mvir = _column(npz, path, "mvir", None).astype(np.float64) / hh
            n = mvir.shape[0]
            keep = np.isfinite(mvir) & (mvir >= mass_floor)
            idx = np.nonzero(keep)[0]
            ra = _column(npz, path, "ra", n)[idx].astype(np.float64)
            dec = _column(npz, path, "dec", n)[idx].astype(np.float64)
            if n >= 1000 and np.all(np.abs(dec) <= np.pi / 2 + 1e-9) and np.all(np.abs(ra) <= 2 * np.pi + 1e-9):
                ra, dec, radians = np.degrees(ra), np.degrees(dec), True
            ra = np.mod(ra, 360.0)
            if np.any(np.abs(dec) > 90) or not np.all(np.isfinite(ra)):
                raise InputError(path, "dec outside [-90, 90] deg or a non-finite ra: not an AGORA halo shell?")
            if footprint is not None:
                inside = footprint.contains(ra, dec)
                idx, ra, dec = idx[inside], ra[inside], dec[inside]
            cols = {"halo_id": offset + idx.astype(np.int64), "ra": ra, "dec": dec, "m_vir": mvir[idx],
                    "z": _column(npz, path, "z", n)[idx].astype(np.float64)}
            for key, name in MASS_KEYS.items():
                if key != "mvir" and key in keys:
                    cols[name] = _column(npz, path, key, n)[idx].astype(np.float64) / hh
            if "rvir" in keys:
                cols["r_vir_given"] = _column(npz, path, "rvir", n)[idx].astype(np.float64) / hh
            if "vlos" in keys:
                cols["v_los"] = _column(npz, path, "vlos", n)[idx].astype(np.float64)
            if "haloid" in keys:
                cols["source_halo_id"] = _column(npz, path, "haloid", n)[idx].astype(np.int64)
            for name, v in cols.items():
                parts.setdefault(name, []).append(v)
            offset += n
        if progress is not None:
            progress(k + 1, len(paths), "halo shells")
    names = set(parts)
    for name in list(parts):
        if len(parts[name]) != len(paths):
            raise InputError(paths[0].parent, f"key for {name!r} is in some halo shells but not all")
    cols = {name: np.concatenate(v) for name, v in parts.items()}
    ntot = cols["m_vir"].size
    conv = "absent"
    if "r_vir_given" in names:
        conv, cols["r_vir"] = _rvir_convention(cols["m_vir"], cols["z"], cols.pop("r_vir_given"))
    extra = {}
    if "v_los" in cols:
        extra["v_los"] = cols.pop("v_los") * u.km / u.s
    if "source_halo_id" in cols:
        extra["source_halo_id"] = cols.pop("source_halo_id")
    meta = {"source": ", ".join(str(p) for p in paths), "format": "agora_halolc", "nshells": len(paths),
            "nfile": int(offset), "h": ",".join(f"{v:g}" for v in sorted(hs)), "massdef": "M_vir",
            "massmin": float(mass_floor), "rvir": conv, "radecu": "rad (converted to deg)" if radians else "deg"}
    if footprint is not None:
        meta["region"] = ",".join(f"{v:g}" for v in footprint.box)
    return canonical_table(cols, ntot, meta, extra)
