"""The matched-filtered view of a cutout (paper Sec. 2.1): the S/N map of the multi-frequency matched filter at
one core radius, so a person sees the cluster the MF sees rather than the CMB.

A cutout (8' x 8') is small next to the CMB's scales and the filter is applied by FFT, which treats the map as
periodic; the cutout is therefore mirrored into a (2 npix)^2 periodic map first (no edge jumps), filtered with
the analytic noise model of :func:`szviewer.mf.filter.model_filter_bank` (lensed CMB, kSZ, point sources,
instrument noise) and cropped back.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from szviewer.mf.settings import MFSettings


def mirror_periodic(images: np.ndarray) -> np.ndarray:
    """(nband, ny, nx) -> (nband, 2 ny, 2 nx): the images and their mirror images, periodic without jumps."""
    a = np.asarray(images, dtype=np.float32)
    top = np.concatenate([a, a[:, :, ::-1]], axis=2)
    return np.concatenate([top, top[:, ::-1, :]], axis=1)


def nearest_scale(theta_c_arcmin: float, grid: tuple[float, ...]) -> int:
    """Index of the filter scale of ``grid`` nearest to ``theta_c_arcmin`` (in log)."""
    g = np.log(np.asarray(grid, dtype=float))
    return int(np.argmin(np.abs(g - np.log(max(float(theta_c_arcmin), 1e-3)))))


def filtered_cutout(images: np.ndarray, pixel_arcmin: float, theta_c_arcmin: float,
                    settings: MFSettings | None = None, noise_uk_arcmin=None) -> tuple[np.ndarray, float]:
    """The MF S/N map (ny, nx) float32 of a cutout ``images`` (nband, ny, nx) [uK_CMB] at the filter scale
    nearest ``theta_c_arcmin`` [arcmin]; returns ``(snr_map, theta_c_used_arcmin)``.

    A cluster of core radius theta_c in the cutout gives a positive S/N peak at its position (the filter's
    template is the tSZ decrement at the settings' bands). ``settings`` default: the paper's MF
    (:class:`MFSettings`, analytic noise model); ``noise_uk_arcmin``: the instrument's white-noise depths.
    """
    from szviewer.mf.filter import model_filter_bank

    settings = settings or MFSettings()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[0] != settings.nband:
        raise ValueError(f"cutout of shape {images.shape}: expected ({settings.nband}, ny, nx) for the bands "
                         f"{settings.bands_ghz}")
    k = nearest_scale(theta_c_arcmin, settings.theta_c_arcmin)
    theta = float(settings.theta_c_arcmin[k])
    one = replace(settings, theta_c_arcmin=(theta,), noise_mode="model")
    big = mirror_periodic(images)
    nz = None if noise_uk_arcmin is None else tuple(float(v) for v in noise_uk_arcmin)
    bank = model_filter_bank(big.shape[1:], float(pixel_arcmin), one, nz)
    _, _, snr = bank.apply(big)
    ny, nx = images.shape[1:]
    return np.ascontiguousarray(snr[0, :ny, :nx]), theta
