"""Instrument beams: a Gaussian FWHM or a beam transfer function B_ell read from a two-column text file.

ACT, SPT and Simons Observatory ship beams as text files of two (or more) columns, ``ell B_ell``, with ``#``
comments; B_ell is normalised to 1 at ell = 0 (szviewer renormalises a table whose first value is not 1 and
says so). Between tabulated multipoles B_ell is interpolated linearly; beyond the last one it is extended as the
Gaussian that matches the table's last value, so it falls to 0 smoothly and never goes negative.

A :class:`Beam` is called with an array of multipoles and returns B_ell (dimensionless); ``Beam.none()`` is 1
everywhere (the paper applied no beam, section 1.1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from szviewer.errors import InputError

FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))
ARCMIN_RAD = math.pi / (180.0 * 60.0)


def gaussian_bell(ell: np.ndarray, fwhm_arcmin: float) -> np.ndarray:
    """Gaussian beam transfer ``exp(-ell (ell + 1) sigma^2 / 2)``; 1 for FWHM 0."""
    ell = np.asarray(ell, dtype=float)
    if fwhm_arcmin <= 0:
        return np.ones_like(ell)
    sig = fwhm_arcmin * FWHM_TO_SIGMA * ARCMIN_RAD
    return np.exp(-0.5 * ell * (ell + 1.0) * sig * sig)


@dataclass(frozen=True)
class Beam:
    """A band's beam: Gaussian (``fwhm_arcmin``, 0 = none) or a B_ell table (``ell``, ``bell``) from ``path``."""

    fwhm_arcmin: float = 0.0
    ell: tuple[float, ...] = ()
    bell: tuple[float, ...] = ()
    path: str | None = None
    _tail_sigma2: float = field(default=0.0, repr=False, compare=False)

    @classmethod
    def none(cls) -> Beam:
        return cls(0.0)

    @classmethod
    def gaussian(cls, fwhm_arcmin: float, what: str | os.PathLike | None = None) -> Beam:
        f = float(fwhm_arcmin)
        if not math.isfinite(f) or f < 0:
            raise InputError(what, f"beam FWHM {fwhm_arcmin!r} arcmin: must be a finite number >= 0")
        return cls(f)

    @classmethod
    def from_table(cls, ell, bell, path: str | os.PathLike | None = None) -> Beam:
        ell = np.asarray(ell, dtype=float)
        bell = np.asarray(bell, dtype=float)
        if ell.size < 2:
            raise InputError(path, f"beam table has {ell.size} row(s); need at least 2 (ell, B_ell)")
        if not (np.all(np.isfinite(ell)) and np.all(np.isfinite(bell))):
            raise InputError(path, "beam table holds NaN or infinite values")
        if np.any(np.diff(ell) <= 0):
            i = int(np.nonzero(np.diff(ell) <= 0)[0][0])
            raise InputError(path, f"beam table: ell is not increasing (row {i + 2}: ell {ell[i + 1]:g} after "
                                   f"{ell[i]:g})")
        if ell[0] < 0:
            raise InputError(path, f"beam table: negative ell {ell[0]:g}")
        if np.any(bell < 0) or bell[0] <= 0:
            raise InputError(path, "beam table: B_ell must be >= 0 and positive at the first ell")
        if ell[0] > 0:  # extend to ell = 0 with the first value
            ell = np.r_[0.0, ell]
            bell = np.r_[bell[0], bell]
        bell = bell / bell[0]
        # Gaussian tail matching the last positive value: B = exp(-ell(ell+1) s2 / 2)
        pos = np.nonzero(bell > 0)[0]
        k = int(pos[-1])
        s2 = -2.0 * math.log(min(float(bell[k]), 1.0 - 1e-12)) / max(ell[k] * (ell[k] + 1.0), 1.0)
        return cls(0.0, tuple(float(v) for v in ell), tuple(float(v) for v in bell),
                   None if path is None else os.fspath(path), max(s2, 0.0))

    @property
    def is_table(self) -> bool:
        return len(self.ell) > 0

    def __call__(self, ell: np.ndarray) -> np.ndarray:
        """B_ell at the given multipoles (any shape), dimensionless, in [0, 1]."""
        ell = np.asarray(ell, dtype=float)
        if not self.is_table:
            return gaussian_bell(ell, self.fwhm_arcmin)
        e = np.asarray(self.ell)
        b = np.asarray(self.bell)
        out = np.interp(ell, e, b)
        beyond = ell > e[-1]
        if np.any(beyond):  # the Gaussian through the last tabulated value
            tail = b[-1] * np.exp(-0.5 * (ell * (ell + 1.0) - e[-1] * (e[-1] + 1.0)) * self._tail_sigma2)
            out = np.where(beyond, tail, out)
        return out

    def fwhm_equivalent_arcmin(self) -> float:
        """FWHM of the Gaussian with the same B_ell at the ell where B_ell = 0.5 (the FWHM itself if Gaussian)."""
        if not self.is_table:
            return self.fwhm_arcmin
        ell = np.linspace(0, 40000, 40001)
        b = self(ell)
        below = np.nonzero(b <= 0.5)[0]
        if below.size == 0:
            return 0.0
        l_half = float(ell[below[0]])
        sig = math.sqrt(2.0 * math.log(2.0) / (l_half * (l_half + 1.0)))
        return sig / FWHM_TO_SIGMA / ARCMIN_RAD

    def to_dict(self) -> dict:
        if self.is_table:
            return {"path": self.path, "fwhm_equivalent_arcmin": round(self.fwhm_equivalent_arcmin(), 4)}
        return {"fwhm_arcmin": self.fwhm_arcmin}


def read_beam_file(path: str | os.PathLike) -> Beam:
    """A beam transfer function from a text file of columns ``ell B_ell [...]`` (``#`` comments allowed).

    One-line :class:`InputError` naming the file for: a missing file, fewer than two columns, text that is not
    numbers, fewer than two rows, ell not increasing, negative or NaN values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "beam file not found")
    import warnings

    try:  # the fast path for well-formed files; the line-by-line reader below names the bad line otherwise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(path, comments="#", usecols=(0, 1), ndmin=2, delimiter=None)
        if arr.shape[0] >= 2:
            return Beam.from_table(arr[:, 0], arr[:, 1], path)
    except (ValueError, IndexError):
        pass
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.replace(",", " ").split()
            if len(parts) < 2:
                raise InputError(path, f"line {n}: {len(parts)} column(s); a beam file needs two: ell B_ell")
            try:
                rows.append((float(parts[0]), float(parts[1])))
            except ValueError:
                raise InputError(path, f"line {n}: {text[:40]!r} is not two numbers (ell B_ell)") from None
    if not rows:
        raise InputError(path, "beam file holds no rows of ell B_ell")
    arr = np.asarray(rows)
    return Beam.from_table(arr[:, 0], arr[:, 1], path)


def parse_beam(text: str, base: str | os.PathLike | None = None) -> Beam:
    """A beam from a command-line or preset value: a number (Gaussian FWHM in arcmin) or a beam file path
    (relative paths against ``base``)."""
    try:
        return Beam.gaussian(float(text), what=None)
    except ValueError:
        pass
    p = Path(text)
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    return read_beam_file(p)


def write_beam_file(path: str | os.PathLike, beam: Beam, ell_max: int = 30000, header: str = "") -> None:
    """Write ``ell B_ell`` for ell = 0 .. ell_max (the format ACT and SO ship), atomically."""
    from szviewer.atomic import write_text

    ell = np.arange(ell_max + 1, dtype=float)
    b = beam(ell)
    lines = [f"# {line}" for line in header.splitlines() if line.strip()]
    lines.append("# ell  B_ell")
    lines += [f"{int(e):d} {v:.8e}" for e, v in zip(ell, b, strict=True)]
    write_text(path, "\n".join(lines) + "\n")
