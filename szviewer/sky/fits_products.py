"""What is given per band beside a flat-sky FITS map: its band id and its beam (a FWHM, a beam file or a Beam).

Used by :func:`szviewer.sky.fits_maps.open_fits_maps` to read its arguments and by the import to describe them.
"""

from __future__ import annotations

import os
from pathlib import Path

from szviewer.errors import InputError
from szviewer.sky.beams import Beam, parse_beam, read_beam_file


def beam_label(beam: Beam | None) -> str:
    """One phrase for a beam: "1.4' FWHM Gaussian", "table b150.txt (FWHM-equivalent 1.38')", "none"."""
    if beam is None:
        return "none"
    if beam.is_table:
        name = Path(beam.path).name if beam.path else "B_ell table"
        return f"table {name} (FWHM-equivalent {beam.fwhm_equivalent_arcmin():.3g}')"
    return f"{beam.fwhm_arcmin:g}' FWHM Gaussian" if beam.fwhm_arcmin > 0 else "none (FWHM 0)"


def spec_text(spec) -> str | None:
    """What was given for a beam, as text (a FWHM in arcmin or a beam-file path)."""
    if spec is None:
        return None
    if isinstance(spec, Beam):
        return spec.path or f"{spec.fwhm_arcmin:g}"
    return str(spec)


def parse_band(key, what) -> int:
    """A band id: a positive integer in GHz (InputError naming ``what`` otherwise)."""
    try:
        band = int(str(key).strip())
    except (TypeError, ValueError):
        band = 0
    if band <= 0:
        raise InputError(what, f"band {key!r}: expected a positive integer id in GHz, e.g. 90 or 150")
    return band


def beam_of(band: int, spec) -> tuple[Beam, object]:
    """(Beam, spec to re-open it) from a Beam, a FWHM in arcmin (number or text) or a beam-file path."""
    if isinstance(spec, Beam):
        return spec, spec
    text = str(spec).strip()
    try:
        fwhm = float(text)
    except ValueError:
        path = Path(os.path.expanduser(text)).resolve()
        return read_beam_file(path), str(path)
    try:
        return parse_beam(text), fwhm
    except InputError as exc:
        raise InputError(exc.path, f"band {band} GHz: {exc.problem}") from None
