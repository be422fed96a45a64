"""Halo catalogs: Sehgal's ``halo_sz.ascii`` / ``halo_nbody.ascii`` / ``halo_nbody.binary``, or any table.

Layouts (SCIENCE.md section 1; whitespace-separated, no header, 0-based columns):

- ``halo_sz.ascii``, 48 columns: 0 z, 1 RA [deg], 2 Dec [deg], 10 M_vir [Msun], 12 R_vir [proper Mpc],
  13 integrated tSZ within R_vir [arcmin^2], 32 M500 [Msun] (other columns unverified, not read).
- ``halo_nbody.ascii``, 20 columns: 0 z | 1 RA | 2 Dec | 3-5 comoving x,y,z [Mpc] | 6-8 vx,vy,vz
  [km/s] | 9 M_fof | 10 M_vir [Msun] | 11 R_vir [proper Mpc] | 12 M200 | 13 R200 | 14 M500 | 15 R500 |
  16 M1500 | 17 R1500 | 18 M2500 | 19 R2500. Masses relative to the critical density, no h.

- ``halo_nbody.binary``: the same 20 columns as float32, one halo after another (80 bytes a halo), no header;
  the byte order is detected (:func:`read_sehgal_binary`).

Websky's ``halos.pksc`` and AGORA's ``agora_halolc_*.npz`` shells are read by :mod:`szviewer.sky.websky_halos` and
:mod:`szviewer.sky.agora`; :func:`read_halo_table` hands such files to them.

The ASCII layout is detected from the number of columns on the first line. Every line must have that many
numeric columns; anything else is an :class:`InputError` naming the file, line and column.

Speed: the file is read in ~32 MB blocks; each block is checked with a few vectorised byte operations
(token count, character set) and parsed with :func:`numpy.loadtxt` restricted to the needed columns
(plus the last one, so a short line cannot pass). About 0.3-0.5 M rows/s for the 48-column layout on
this kind of machine (see ``benchmarks/bench_cutting.py``); a line-by-line Python pass runs only to
locate an error.

Halos are unique only in the octant 0 <= RA < 90, 0 <= Dec < 90 (the full-sky maps repeat it):
:func:`restrict_to_octant`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from szviewer.errors import InputError

#: Canonical columns of a halo table, with their units (None: dimensionless).
CANONICAL_UNITS: dict[str, u.UnitBase | None] = {
    "halo_id": None,
    "z": None,
    "ra": u.deg,
    "dec": u.deg,
    "m_vir": u.Msun,
    "r_vir": u.Mpc,
    "m500": u.Msun,
    "r500": u.Mpc,
    "y_int_arcmin2": u.arcmin**2,
    "m200c": u.Msun,
    "m200m": u.Msun,
}
#: Columns a generic (ECSV/FITS/CSV) halo table must provide.
REQUIRED_COLUMNS: tuple[str, ...] = ("ra", "dec", "z", "m_vir")

#: Sehgal layouts: number of columns -> (format name, {canonical name: 0-based column}).
LAYOUTS: dict[int, tuple[str, dict[str, int]]] = {
    48: ("halo_sz", {"z": 0, "ra": 1, "dec": 2, "m_vir": 10, "r_vir": 12, "y_int_arcmin2": 13, "m500": 32}),
    20: ("halo_nbody", {"z": 0, "ra": 1, "dec": 2, "m_vir": 10, "r_vir": 11, "m200c": 12, "m500": 14, "r500": 15}),
}
#: The 20-column layout of ``halo_nbody.ascii`` / ``halo_nbody.binary`` (SCIENCE.md section 1).
NBODY_COLUMNS: tuple[str, ...] = ("z", "ra", "dec", "x", "y", "z_comoving", "vx", "vy", "vz", "m_fof", "m_vir",
                                  "r_vir", "m200", "r200", "m500", "r500", "m1500", "r1500", "m2500", "r2500")

_BLOCK = 32 * 1024 * 1024
# bytes that may appear in a line of numbers: digits, sign, point, exponent, nan/inf spellings, whitespace
_ALLOWED = b"0123456789.+-eEnaifNAIFtyTY \t\r\n\v\f"
_BAD_BYTE = np.ones(256, dtype=bool)
_BAD_BYTE[np.frombuffer(_ALLOWED, dtype=np.uint8)] = False


def _first_line_columns(path: Path) -> tuple[int, int]:
    """(number of columns, 1-based line number) of the first non-blank line."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            toks = line.split()
            if toks:
                return len(toks), lineno
    raise InputError(path, "empty file: no halo rows")


def _diagnose(path: Path, block: bytes, first_line: int, ncol: int) -> np.ndarray:
    """Slow line-by-line parse of ``block``: raises the precise InputError, or returns the rows."""
    rows = []
    lines = block.split(b"\n")
    for k, line in enumerate(lines):
        toks = line.split()
        if not toks:
            continue
        lineno = first_line + k
        if len(toks) != ncol:
            last = k == len(lines) - 1 or all(not rest.strip() for rest in lines[k + 1:])
            hint = " (short last line: truncated file?)" if last and len(toks) < ncol else ""
            raise InputError(path, f"line {lineno}: {len(toks)} columns, expected {ncol}{hint}")
        vals = []
        for j, t in enumerate(toks):
            try:
                vals.append(float(t))
            except ValueError:
                text = t.decode("utf-8", "replace")[:40]
                raise InputError(path, f"line {lineno}, column {j + 1} of {ncol}: "
                                       f"not a number: {text!r}") from None
        rows.append(vals)
    return np.asarray(rows, dtype=float).reshape(-1, ncol)


def _parse_block(path: Path, block: bytes, first_line: int, ncol: int, usecols: list[int]) -> np.ndarray:
    """Rows of ``block`` (complete lines), columns ``usecols``; validates the whole block."""
    ub = np.frombuffer(block, dtype=np.uint8)
    if ub.size == 0:
        return np.empty((0, len(usecols)))
    ws = ub <= 32
    ntok = int(np.count_nonzero(ws[:-1] > ws[1:])) + (0 if ws[0] else 1)
    if ntok == 0:
        return np.empty((0, len(usecols)))
    bad_chars = bool(_BAD_BYTE[ub].any())
    data = None
    if not bad_chars:
        cols = sorted(set(usecols) | {ncol - 1})
        try:
            arr = np.loadtxt(io.BytesIO(block), usecols=cols, comments=None, dtype=np.float64, ndmin=2)
        except ValueError:
            arr = None
        if arr is not None and ntok == arr.shape[0] * ncol:
            data = arr[:, [cols.index(c) for c in usecols]]
    if data is None:
        full = _diagnose(path, block, first_line, ncol)  # raises with line and column
        data = full[:, usecols]
    return data


def read_sehgal_halos(path) -> Table:
    """Read ``halo_sz.ascii`` (48 columns) or ``halo_nbody.ascii`` (20 columns), whatever its name.

    Returns an astropy Table with canonical columns ``halo_id`` (int64, 0-based data row in the file),
    ``z``, ``ra``, ``dec`` [deg], ``m_vir`` [Msun], ``r_vir`` [proper Mpc], ``m500`` [Msun], ``r500``
    [Mpc; NaN for halo_sz], ``y_int_arcmin2`` [arcmin^2; NaN for halo_nbody], and ``meta`` with
    ``source`` (the file), ``format`` and ``ncolumns``. All halos are returned (see
    :func:`restrict_to_octant`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    ncol, _ = _first_line_columns(path)
    if ncol not in LAYOUTS:
        raise InputError(path, f"line 1 has {ncol} columns; expected 48 (halo_sz.ascii) or 20 "
                               "(halo_nbody.ascii)")
    fmt, mapping = LAYOUTS[ncol]
    names = list(mapping)
    usecols = [mapping[n] for n in names]

    parts = []
    line_no = 1  # physical line number of the first line of the next block
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            if not block.endswith(b"\n"):
                block += f.readline()  # complete the last line (or reach the end of the file)
            parts.append(_parse_block(path, block, line_no, ncol, usecols))
            line_no += block.count(b"\n")
    data = np.concatenate(parts, axis=0) if parts else np.empty((0, len(usecols)))

    cols = dict(zip(names, data.T, strict=True))
    return canonical_table(cols, data.shape[0], {"source": str(path), "format": fmt, "ncolumns": ncol})


def canonical_table(cols: dict[str, np.ndarray], n: int, meta: dict, extra: dict[str, np.ndarray] | None = None
                    ) -> Table:
    """A halo Table with every canonical column (:data:`CANONICAL_UNITS`, NaN where ``cols`` has none; ``halo_id``
    the row number unless given), then the ``extra`` columns, with units and ``meta``."""
    t = Table(meta=dict(meta))
    ids = cols.get("halo_id")
    t["halo_id"] = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    for name in CANONICAL_UNITS:
        if name == "halo_id":
            continue
        t[name] = np.ascontiguousarray(cols[name], dtype=float) if name in cols else np.full(n, np.nan)
    for name, v in (extra or {}).items():
        t[name] = v
    _set_units(t)
    return t


def _plausible_halos(rows: np.ndarray) -> float:
    """Fraction of rows of the 20-column layout whose z, RA, Dec and M_vir look like halos'."""
    with np.errstate(invalid="ignore", over="ignore"):
        z, ra, dec, mvir = (rows[:, k].astype(np.float64) for k in (0, 1, 2, 10))
        ok = ((z >= 0) & (z < 20) & (ra >= -360) & (ra <= 360) & (dec >= -90) & (dec <= 90)
              & (mvir > 1e6) & (mvir < 1e18))
    return float(np.mean(ok)) if rows.size else 0.0


def read_sehgal_binary(path) -> Table:
    """Read Sehgal's ``halo_nbody.binary``: 20 float32 per halo in the column order of ``halo_nbody.ascii``.

    The file must be a whole number of 80-byte halos (an optional leading int32 count equal to the number of
    halos is accepted); the byte order is the one in which the first rows look like halos (z 0-20, RA, Dec,
    M_vir 1e6-1e18 Msun). Only the needed columns are copied out of a memory map. Returns the canonical table
    of :func:`read_sehgal_halos` (format ``halo_nbody_binary``); anything else is an :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    size = path.stat().st_size
    row_bytes = 20 * 4
    offset = 0
    if size % row_bytes:
        head = np.fromfile(path, dtype=np.uint8, count=4)
        counts = {int(head.view("<i4")[0]), int(head.view(">i4")[0])} if head.size == 4 else set()
        if size % row_bytes == 4 and (size - 4) // row_bytes in counts:
            offset = 4
        else:
            raise InputError(path, f"{size} bytes is not a whole number of halos of 20 float32 (80 bytes each): "
                                   f"truncated, or not a halo_nbody.binary file")
    n = (size - offset) // row_bytes
    if n == 0:
        raise InputError(path, "empty file: no halo rows")
    probe = min(n, 1000)
    best = None
    for order in ("<", ">"):
        mm = np.memmap(path, dtype=f"{order}f4", mode="r", offset=offset, shape=(n, 20))
        frac = _plausible_halos(np.asarray(mm[:probe]))
        if best is None or frac > best[0]:
            best = (frac, order, mm)
    frac, order, mm = best
    if frac < 0.99:
        raise InputError(path, f"only {100 * frac:.0f}% of the first {probe} rows look like halos (z, RA, Dec, "
                               "M_vir in range) in either byte order: not a halo_nbody.binary file?")
    _, mapping = LAYOUTS[20]
    cols = {name: np.asarray(mm[:, k], dtype=np.float64) for name, k in mapping.items()}
    bad = ~np.isfinite(np.column_stack([cols[c] for c in ("z", "ra", "dec", "m_vir")]))
    if bad.any():
        row = int(np.nonzero(bad.any(axis=1))[0][0])
        raise InputError(path, f"halo {row} (0-based) has a NaN or infinite z, RA, Dec or M_vir")
    return canonical_table(cols, n, {"source": str(path), "format": "halo_nbody_binary", "ncolumns": 20,
                                     "endian": "little" if order == "<" else "big"})


def write_sehgal_binary(path, rows, byteorder: str = "<") -> None:
    """Write an (N, 20) array as ``halo_nbody.binary`` (float32, no header; for tests and benchmarks)."""
    arr = np.asarray(rows, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 20:
        raise ValueError("expected an (N, 20) array")
    arr.astype(f"{byteorder}f4").tofile(os.fspath(path))


def _set_units(t: Table) -> None:
    for name, unit in CANONICAL_UNITS.items():
        if unit is not None and name in t.colnames:
            t[name].unit = unit


def restrict_to_octant(table: Table) -> Table:
    """Rows with 0 <= RA < 90 and 0 <= Dec < 90 deg: the octant in which Sehgal's halos are unique
    (SCIENCE.md section 1). ``halo_id`` keeps each halo's row in the original file."""
    ra = np.asarray(table["ra"], dtype=float)
    dec = np.asarray(table["dec"], dtype=float)
    keep = (ra >= 0) & (ra < 90) & (dec >= 0) & (dec < 90)
    out = table[keep]
    out.meta = dict(table.meta)
    out.meta["octant"] = "0<=ra<90, 0<=dec<90"
    return out


_ALIASES: dict[str, tuple[str, ...]] = {
    "halo_id": ("halo_id", "id", "haloid"),
    "z": ("z", "redshift"),
    "ra": ("ra", "ra_deg", "raj2000"),
    "dec": ("dec", "dec_deg", "dej2000", "decj2000"),
    "m_vir": ("m_vir", "mvir"),
    "r_vir": ("r_vir", "rvir"),
    "m500": ("m500", "m500c", "m_500"),
    "r500": ("r500", "r500c", "r_500"),
    "y_int_arcmin2": ("y_int_arcmin2", "y_int", "yint"),
    "m200c": ("m200c", "m200", "m_200c", "m200_c"),
    "m200m": ("m200m", "m_200m", "m200_m"),
}
_TABLE_FORMATS = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits", ".fit": "fits",
                  ".fits.gz": "fits", ".hdf5": "hdf5", ".h5": "hdf5", ".vot": "votable", ".xml": "votable"}


def _looks_like_numbers(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    if b"\x00" in head:
        return False
    line = head.split(b"\n", 1)[0]
    toks = line.split()
    if not toks:
        return False
    try:
        [float(t) for t in toks]
    except ValueError:
        return False
    return True


def read_halo_table(path) -> Table:
    """Read a halo catalog: Sehgal's ASCII layouts (:func:`read_sehgal_halos`) or an astropy-readable
    table (ECSV, FITS, CSV, ...) with at least columns ``ra``, ``dec``, ``z``, ``m_vir`` (matched
    case-insensitively; common aliases such as ``redshift``, ``mvir`` accepted).

    Returns a Table with the canonical columns of :func:`read_sehgal_halos` (NaN where absent; RA/Dec
    converted to deg, masses to Msun and radii to Mpc when the columns carry units). Missing required
    columns -> :class:`InputError` listing them. ``*.binary`` files are Sehgal's binary layout
    (:func:`read_sehgal_binary`), ``*.pksc`` Websky's halos (:func:`szviewer.sky.websky_halos.read_pksc`, default mass
    floor) and ``*.npz`` an AGORA light-cone shell (:func:`szviewer.sky.agora.read_agora_halos`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    name = path.name.lower()
    if name.endswith(".binary"):
        return read_sehgal_binary(path)
    if name.endswith(".pksc"):
        from szviewer.sky.websky_halos import read_pksc

        return read_pksc(path)
    if name.endswith(".npz"):
        from szviewer.sky.agora import read_agora_halos

        return read_agora_halos([path])
    fmt = next((f for ext, f in _TABLE_FORMATS.items() if name.endswith(ext)), None)
    if fmt is None and _looks_like_numbers(path):
        return read_sehgal_halos(path)
    try:
        src = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many types for unreadable files
        raise InputError(path, f"not a readable table ({exc})") from exc
    lower = {c.lower(): c for c in src.colnames}
    found: dict[str, str] = {}
    for canon, aliases in _ALIASES.items():
        for a in aliases:
            if a in lower:
                found[canon] = lower[a]
                break
    missing = [c for c in REQUIRED_COLUMNS if c not in found]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; the table has "
                               f"{', '.join(src.colnames) or 'no columns'}")
    n = len(src)
    t = Table(meta={"source": str(path), "format": fmt or "astropy-guess"})
    if "halo_id" in found:
        ids = np.asarray(src[found["halo_id"]])
        if not np.issubdtype(ids.dtype, np.integer):
            raise InputError(path, f"column {found['halo_id']!r} must hold integers")
        t["halo_id"] = ids.astype(np.int64)
    else:
        t["halo_id"] = np.arange(n, dtype=np.int64)
    for canon, unit in CANONICAL_UNITS.items():
        if canon == "halo_id":
            continue
        if canon not in found:
            t[canon] = np.full(n, np.nan)
            continue
        col = src[found[canon]]
        try:
            vals = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
        except (TypeError, ValueError):
            raise InputError(path, f"column {found[canon]!r} is not numeric") from None
        if unit is not None and col.unit is not None:
            try:
                vals = (vals * u.Unit(col.unit)).to_value(unit)
            except (u.UnitConversionError, ValueError) as exc:
                raise InputError(path, f"column {found[canon]!r} has unit {col.unit}, "
                                       f"not convertible to {unit}") from exc
        t[canon] = np.asarray(vals, dtype=float)
    _set_units(t)
    return t


#: Alias used by :mod:`szviewer.jobs.importing`.
read_halo_catalog = read_halo_table


def write_sehgal_ascii(path, rows) -> None:
    """Write an (N, 48) or (N, 20) array in Sehgal's whitespace ASCII layout (for tests, benchmarks)."""
    arr = np.asarray(rows, dtype=float)
    if arr.ndim != 2 or arr.shape[1] not in LAYOUTS:
        raise ValueError("expected an (N, 48) or (N, 20) array")
    np.savetxt(os.fspath(path), arr, fmt="%.7e")
