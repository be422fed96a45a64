"""The matched filter on per-band FITS maps outside a workspace (``szviewer mf --map ... --out CATALOG``), and
:class:`MFOptions`, the per-band choices of an MF run that become its :class:`~szviewer.mf.settings.MFSettings`
once the maps' bands are known (on maps or on a workspace).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from szviewer.errors import InputError, OutputExistsError
from szviewer.progress import CancelFn, ProgressFn

#: The paper's white-noise depths [uK-arcmin] at its three bands: model noise on maps of these bands.
PAPER_DEPTH_UK_ARCMIN: dict[int, float] = {90: 2.8, 148: 2.6, 219: 6.6}

#: Catalogue formats by the file's ending.
CATALOG_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits"}


@dataclass(frozen=True)
class MFOptions:
    """What a person chooses for an MF run, per band id where it is per band.

    ``noise_mode`` None: the maps' own noise ('data') on maps, the paper's model on a workspace;
    ``find_point_sources`` None: on with maps (a workspace subtracts its source catalogue);
    ``beam_fwhm_arcmin``: Gaussian beams by band id (a band not named: the workspace's or the maps' beam, else none);
    ``noise_uk_arcmin``: white depths by band id for model noise on maps (default :data:`PAPER_DEPTH_UK_ARCMIN`).
    """

    snr_threshold: float = 3.0
    noise_mode: str | None = None
    find_point_sources: bool | None = None
    beam_fwhm_arcmin: Mapping[int, float] = field(default_factory=dict)
    noise_uk_arcmin: Mapping[int, float] = field(default_factory=dict)

    def settings(self, bands, freqs: Mapping[int, float] | None = None, on_maps: bool = False):
        """The :class:`~szviewer.mf.settings.MFSettings` for maps of band ids ``bands`` (effective frequencies
        ``freqs``, default the ids)."""
        from szviewer.mf.settings import MFSettings

        bands = tuple(int(b) for b in bands)
        unknown = sorted(set(self.beam_fwhm_arcmin) - set(bands))
        if unknown:
            raise InputError(None, f"--beam-fwhm for band(s) {unknown}: the maps have bands {list(bands)}")
        kw = {"noise_mode": self.noise_mode or ("data" if on_maps else "model"), "snr_threshold": self.snr_threshold,
              "find_point_sources": on_maps if self.find_point_sources is None else self.find_point_sources,
              "bands_ghz": tuple(float((freqs or {}).get(b, b)) for b in bands),
              "beam_fwhm_arcmin": tuple(self.beam_fwhm_arcmin.get(b, 0.0) for b in bands)}
        try:
            return MFSettings(**kw)
        except ValueError as exc:
            raise InputError(None, str(exc)) from None


def fits_safe_meta(meta: dict) -> dict:
    """Table metadata a FITS header can hold: short keys, scalars (everything else as JSON strings)."""
    keys = {"mf_settings": "MFSET", "snr_rms": "SNRRMS", "snr_rms_median": "RMSMED", "snr_rms_ok": "RMSOK",
            "warning": "MFWARN", "noise_iterations": "NITER", "noise_uk_arcmin": "DEPTHS", "pixel_arcmin": "PIXARCM",
            "depth_weighted": "IVARWT", "method": "METHOD", "n_tiles": "NTILES"}
    out = {}
    for k, v in meta.items():
        if k not in keys or v is None:
            continue
        out[keys[k]] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
    return out


def run_mf_on_maps(maps: Mapping[int, str], out: str | os.PathLike, options: MFOptions | None = None,
                   ivar: Mapping[int, str] | None = None, beams: Mapping[int, str] | None = None,
                   freqs: Mapping[int, float] | None = None, mask: str | None = None, overwrite: bool = False,
                   progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> dict:
    """Filter the FITS maps ``maps`` (band id -> file, uK_CMB) and write the candidate catalogue ``out`` (.ecsv or
    .fits; refused if it exists unless ``overwrite``).

    ``ivar``, ``beams`` (FWHM or ``ell B_ell`` file), ``freqs`` and ``mask`` as ``szviewer import --fits`` takes
    them (:func:`szviewer.sky.fits_maps.open_fits_maps`); the maps' beams are used unless ``options`` gives some.
    Returns {'candidates', 'out', 'snr_threshold', 'noise_mode', 'snr_rms_median', 'warning'}.
    """
    from szviewer.atomic import atomic_path
    from szviewer.jobs.mf_inputs import BandStack, beam_settings
    from szviewer.mf.runner import run_mf
    from szviewer.sky.fits_maps import open_fits_maps

    options = options or MFOptions()
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    fmt = CATALOG_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(None, f"{out}: catalog must end in .ecsv or .fits")
    sky = open_fits_maps(dict(maps), ivar=dict(ivar or {}), mask=mask, beams=dict(beams or {}),
                         freqs=dict(freqs or {}))
    settings = options.settings(sky.bands, sky.freqs_ghz, on_maps=True)
    if not any(settings.beam_fwhm_arcmin) and any(sky.beams.get(b) is not None for b in sky.bands):
        settings = settings.replace(**beam_settings([sky.beams.get(b) for b in sky.bands]))
    depth_given = dict(options.noise_uk_arcmin)
    ivars = [sky.ivar(b) for b in sky.bands]
    weights = BandStack(ivars) if all(v is not None for v in ivars) else None
    noise = None
    if depth_given or settings.noise_mode == "model":
        missing = [b for b in sky.bands if b not in depth_given and b not in PAPER_DEPTH_UK_ARCMIN]
        if missing:
            raise InputError(None, f"--noise model needs the white depth of band(s) {missing}: give "
                                   "--noise-uk-arcmin BAND=DEPTH, or use --noise data (the default with --map)")
        noise = [depth_given.get(b, PAPER_DEPTH_UK_ARCMIN.get(b)) for b in sky.bands]
    band_maps = sky.band_maps()
    for b, m in zip(sky.bands, band_maps, strict=True):
        if not np.isfinite(m).any():
            raise InputError(sky.files[b], f"every pixel of band {b} is NaN; there is nothing to filter")
    masked = None if sky.mask_file is None and weights is None else ~sky.usable
    tiles = None if progress is None else (lambda d, t: progress(d, t, "tiles"))
    try:
        cat = run_mf(band_maps, sky.wcs, float(np.mean(sky.pixel_arcmin)), settings, noise_uk_arcmin=noise,
                     progress=tiles, cancel=cancelled, mask=masked, ivar=weights)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    check = {k: cat.meta.get(k) for k in ("snr_rms_median", "warning")}
    if fmt == "fits":
        cat.meta = fits_safe_meta(dict(cat.meta))
    with atomic_path(out) as tmp:
        cat.write(tmp, format=fmt)
    return {"candidates": len(cat), "out": str(out), "snr_threshold": settings.snr_threshold,
            "noise_mode": settings.noise_mode, **check}
