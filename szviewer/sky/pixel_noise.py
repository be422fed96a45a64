"""White instrument noise indexed by map pixel, for skies whose maps szviewer does not copy (HEALPix).

A HEALPix sky (Sehgal) is read where it lies; its instrument noise is a map too, but one that is never
stored: the noise of HEALPix pixel ``p`` (NESTED index) in band ``b`` is element ``p mod 4096`` of the
standard normals drawn by ``numpy.random.default_rng([seed, b, p // 4096])``, times the per-pixel sigma.
So every cutout that samples pixel ``p`` sees the same noise value (overlapping cutouts agree), whatever
order they are read in, and a block of 4,096 pixels (a 64 x 64 patch of the NESTED hierarchy, 27' on a side
at Nside 8192) costs one short draw.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK_BITS = 12  # 4096 pixels per block


def healpix_sigma_uk(depth_uk_arcmin: float, nside: int) -> float:
    """Per-pixel white-noise sigma [uK] of a HEALPix map of the given depth [uK-arcmin]: depth / pixel side."""
    side_arcmin = math.sqrt(4 * math.pi / (12 * nside * nside)) * 180 / math.pi * 60
    return depth_uk_arcmin / side_arcmin


def pixel_normals(seed: int, band_index: int, nest_pix: np.ndarray) -> np.ndarray:
    """Standard normal deviates (float32, shape of ``nest_pix``) of the given NESTED pixel indices."""
    nest_pix = np.asarray(nest_pix, dtype=np.int64)
    flat = nest_pix.ravel()
    out = np.empty(flat.size, dtype=np.float32)
    if flat.size == 0:
        return out.reshape(nest_pix.shape)
    block = flat >> BLOCK_BITS
    within = flat & ((1 << BLOCK_BITS) - 1)
    order = np.argsort(block, kind="stable")
    sb = block[order]
    starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
    stops = np.r_[starts[1:], sb.size]
    for a, b in zip(starts, stops, strict=True):
        rng = np.random.default_rng([int(seed), int(band_index), int(sb[a])])
        vals = rng.standard_normal(1 << BLOCK_BITS, dtype=np.float32)
        idx = order[a:b]
        out[idx] = vals[within[idx]]
    return out.reshape(nest_pix.shape)
