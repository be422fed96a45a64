"""Websky's lensed CMB: its alms synthesised once as a HEALPix map at the maps' Nside, and that cache checked.

:func:`synthesise_cmb` (``healpy.alm2map``, lmax at most 3 Nside - 1) writes the map the Websky sky reads as its
``cmb`` component (:func:`szviewer.sky.websky.open_websky_dir`); :func:`cmb_cache_matches` says whether an
earlier one can be reused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from szviewer.errors import InputError
from szviewer.progress import CancelFn, ProgressFn, check_cancel
from szviewer.sky.healpix_files import NO_UNIT, parse_unit, write_healpix_map


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
