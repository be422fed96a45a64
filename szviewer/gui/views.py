"""The inspector's filtered views of a cutout (pure numpy, no Qt): the MF S/N map at the candidate's scale
(:mod:`szviewer.mf.views`) and a Compton-y map, the ILC of the bands with the CMB nulled (:mod:`szviewer.sky.ilc`),
smoothed to 1' FWHM for the eye (the 0.25' pixels of the y map are noise dominated)."""

from __future__ import annotations

import numpy as np

#: FWHM [arcmin] of the Gaussian the y map is smoothed with for display.
Y_SMOOTH_FWHM_ARCMIN = 1.0


def filtered_views(state, row: int, imgs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(MF S/N map, Compton-y map, theta_c [arcmin]) of the cutout ``row`` whose images are ``imgs``.

    The MF runs at the scale of the strongest MF detection in the cutout (1' without one), with the
    workspace's bands and white-noise depths; a map that cannot be made (too few bands) is None."""
    from scipy.ndimage import gaussian_filter

    from szviewer.mf.settings import MFSettings
    from szviewer.mf.views import filtered_cutout
    from szviewer.sky.ilc import y_map

    bands = tuple(float(b) for b in state.store.bands)
    pix = float(state.store.pixel_arcmin)
    dets = sorted(state.detections_near(row), key=lambda e: -e["snr"])
    theta = dets[0]["theta_c_arcmin"] if dets else 1.0
    noise = None
    ws = state.workspace
    if ws is not None:
        nz = ws.products.get("sky", {}).get("settings", {}).get("noise_uk_arcmin")
        if isinstance(nz, dict) and len(nz) == len(bands):
            noise = [float(nz[k]) for k in sorted(nz, key=float)]
    try:
        settings = MFSettings(bands_ghz=bands, beam_fwhm_arcmin=(0.0,) * len(bands))
        snr, theta = filtered_cutout(imgs, pix, theta, settings, noise_uk_arcmin=noise)
    except ValueError:
        snr = None
    try:
        y = y_map(imgs, bands) if len(bands) >= 2 else None
    except (ValueError, np.linalg.LinAlgError):
        y = None
    if y is not None:
        y = gaussian_filter(y, Y_SMOOTH_FWHM_ARCMIN / pix / 2.3548, mode="reflect").astype(np.float32)
    return snr, y, theta
