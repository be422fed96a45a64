"""Where a cutout's pixels come from: windows of the sky's own maps, never copies (except HEALPix samples).

Three sources behind one interface, ``images(rows, components, noise)`` and ``component_images(rows)``:

- :class:`TileWindows` (a synthetic, tiled sky): the block of the owner tile at the (tile, y0, x0) the cutout
  table records. With noise and every component, it is the block of the tile's observed map (sky + the tile's
  one noise realisation); a component level is the sum of its components' blocks plus the noise, taken as
  observed - sum of all components, so every level and every consumer shares the observed map's noise.
- :class:`FitsWindows` (the user's flat FITS maps): blocks of the memory-mapped maps, which hold their own noise.
- :class:`HealpixSamples` (Sehgal HEALPix maps): the components sampled once at the cutout pixels and kept in the
  store (``/images``: a cache of the samples, cheaper than re-projecting), plus white noise indexed by the HEALPix
  pixel each cutout pixel samples (:mod:`szviewer.sky.pixel_noise`), so overlapping cutouts agree.
"""

from __future__ import annotations

import numpy as np

from szviewer.errors import InputError
from szviewer.sky.pixel_noise import healpix_sigma_uk, pixel_normals


class TileWindows:
    """Cutout pixels as windows of a :class:`~szviewer.sky.tiledsky.TiledSky` (no copies)."""

    def __init__(self, sky, tile: np.ndarray, y0: np.ndarray, x0: np.ndarray, npix: int,
                 components: tuple[str, ...]):
        self.sky = sky
        self.tile = np.asarray(tile, np.int64)
        self.y0 = np.asarray(y0, np.int64)
        self.x0 = np.asarray(x0, np.int64)
        self.npix = int(npix)
        self.components = tuple(components)

    def images(self, rows: np.ndarray, components: tuple[str, ...], noise: bool) -> np.ndarray:
        t, y, x = self.tile[rows], self.y0[rows], self.x0[rows]
        everything = set(components) == set(self.components)
        if noise and everything:
            return self.sky.windows(t, y, x, self.npix)
        sky = self.sky.windows(t, y, x, self.npix, tuple(c for c in self.components if c in components))
        if noise:  # the observed map's noise: observed - the sum of every component
            sky += self.sky.windows(t, y, x, self.npix) - self.sky.windows(t, y, x, self.npix, self.components)
        return sky

    def component_images(self, rows: np.ndarray) -> np.ndarray:
        t, y, x = self.tile[rows], self.y0[rows], self.x0[rows]
        return np.stack([self.sky.windows(t, y, x, self.npix, (c,)) for c in self.components], axis=1)


class FitsWindows:
    """Cutout pixels as blocks of the user's flat FITS maps (memory-mapped; their noise is in the maps)."""

    components = ("skymap",)

    def __init__(self, sky, ra: np.ndarray, dec: np.ndarray, npix: int, pixel_arcmin: float):
        self.sky = sky
        self.ra = np.asarray(ra, float)
        self.dec = np.asarray(dec, float)
        self.npix = int(npix)
        self.pixel_arcmin = float(pixel_arcmin)

    def images(self, rows: np.ndarray, components: tuple[str, ...], noise: bool) -> np.ndarray:
        return self.component_images(rows)[:, 0]

    def component_images(self, rows: np.ndarray) -> np.ndarray:
        cut = self.sky.cut(self.ra[rows], self.dec[rows], self.npix, self.pixel_arcmin, ("skymap",))
        return cut["skymap"][:, None]


class HealpixSamples:
    """Cached HEALPix samples (``/images`` of the store) plus white noise indexed by HEALPix pixel."""

    def __init__(self, images_dataset, path, components: tuple[str, ...], ra: np.ndarray, dec: np.ndarray,
                 npix: int, pixel_arcmin: float, nside: int, noise_seed: int, depth_uk_arcmin: list[float]):
        self._images = images_dataset
        self.path = path
        self.components = tuple(components)
        self.ra = np.asarray(ra, float)
        self.dec = np.asarray(dec, float)
        self.npix = int(npix)
        self.pixel_arcmin = float(pixel_arcmin)
        self.nside = int(nside)
        self.noise_seed = int(noise_seed)
        self.sigma = np.array([healpix_sigma_uk(d, self.nside) for d in depth_uk_arcmin], np.float32)

    def component_images(self, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.empty((0,) + self._images.shape[1:], np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)  # h5py wants increasing, unique indices
        try:
            data = self._images[uniq]
        except OSError as exc:
            raise InputError(self.path, f"damaged image data: {exc}") from None
        return data[inv]

    def images(self, rows: np.ndarray, components: tuple[str, ...], noise: bool) -> np.ndarray:
        comps = self.component_images(rows)
        idx = [self.components.index(c) for c in components]
        img = comps[:, idx].sum(axis=1)
        if noise:
            img += self.noise(rows)
        return img

    def noise(self, rows: np.ndarray) -> np.ndarray:
        """(n, nband, npix, npix) white noise of the HEALPix pixels these cutouts sample [uK]."""
        import healpy as hp

        from szviewer.sky.geometry import pixel_offsets, tangent_to_vec

        xi, eta = pixel_offsets(self.npix, self.pixel_arcmin)
        v = tangent_to_vec(self.ra[rows], self.dec[rows], xi, eta)
        pix = hp.vec2pix(self.nside, v[..., 0], v[..., 1], v[..., 2], nest=True)
        out = np.empty((rows.size, self.sigma.size, self.npix, self.npix), np.float32)
        for b, s in enumerate(self.sigma):
            out[:, b] = pixel_normals(self.noise_seed, b, pix) * s
        return out
