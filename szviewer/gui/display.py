"""How cutouts are turned into pixels (pure numpy, no Qt): a stretch shared across cutouts, and RGB composites.

The stretch of a component level is measured once on a fixed sample of cutouts and then used for every
cutout, so two cutouts shown one after the other compare: per band (lo, hi) from the 0.5 and 99.5
percentiles (``percentile``) or the extremes (``minmax``) of the sample. ``linear`` maps lo..hi to 0..1;
``asinh`` then applies a symmetric arcsinh about the middle, which keeps the CMB's structure visible next to a
bright point source. The RGB composite puts 90, 148 and 219 GHz in red, green and blue with the same
per-band stretch: a tSZ decrement (negative at 90 and 148 GHz, nearly nothing at 219) shows as a blue spot.
"""

from __future__ import annotations

import numpy as np

SAMPLE = 128
PERCENTILES = (0.5, 99.5)
ASINH_SOFTENING = 8.0


def sample_rows(n: int, size: int = SAMPLE, seed: int = 12345) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def levels_of(images: np.ndarray, scaling: str = "percentile") -> np.ndarray:
    """Per-band (lo, hi) of ``images`` (n, nband, npix, npix): shape (nband, 2), float32, hi > lo."""
    nb = images.shape[1]
    flat = np.moveaxis(images, 1, 0).reshape(nb, -1)
    if scaling == "minmax":
        lo, hi = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
    elif scaling == "percentile":
        lo, hi = np.nanpercentile(flat, PERCENTILES, axis=1)
    else:
        raise ValueError(f"unknown scaling {scaling!r}; use 'percentile' or 'minmax'")
    hi = np.where(hi > lo, hi, lo + 1.0)
    return np.stack([lo, hi], axis=1).astype(np.float32)


def shared_levels(store, level: str, scaling: str = "percentile", size: int = SAMPLE) -> np.ndarray:
    """(nband, 2) levels of a component level, from a fixed sample of the store's cutouts."""
    rows = sample_rows(len(store), size)
    if rows.size == 0:
        return np.tile(np.array([[-1.0, 1.0]], np.float32), (len(store.bands), 1))
    return levels_of(store.images(rows, level), scaling)


def stretch(img: np.ndarray, lo: float, hi: float, mode: str = "linear") -> np.ndarray:
    """Map ``img`` to float32 0..1 (clipped) with a linear or asinh stretch between lo and hi."""
    t = (np.asarray(img, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    np.clip(t, 0.0, 1.0, out=t)
    if mode == "asinh":
        a = ASINH_SOFTENING
        t = (np.arcsinh(a * (2.0 * t - 1.0)) / np.arcsinh(a) * 0.5 + 0.5).astype(np.float32)
    elif mode != "linear":
        raise ValueError(f"unknown stretch {mode!r}; use 'linear' or 'asinh'")
    return t


def rgb_composite(images: np.ndarray, levels: np.ndarray, mode: str = "linear") -> np.ndarray:
    """(npix, npix, 3) uint8: bands 0, 1, 2 (90, 148, 219 GHz) as red, green, blue with the shared stretch."""
    chans = [stretch(images[b], levels[b, 0], levels[b, 1], mode) for b in range(3)]
    return np.ascontiguousarray((np.stack(chans, axis=-1) * 255.0 + 0.5).astype(np.uint8))
