"""A sky of HEALPix maps read where they lie, cut into flat cutouts (Sehgal, Websky, AGORA).

:class:`HealpixSky` is a sky made of HEALPix maps (:mod:`szviewer.sky.healpix_files`): for every (component, band)
a short recipe of :class:`~szviewer.sky.healpix_recipes.Part`s says which maps make it and with which factors to
uK_CMB at the band (:func:`szviewer.sky.healpix_recipes.band_parts`: a frequency-independent map, Compton-y times
the tSZ spectrum, or an intensity interpolated in log frequency between the maps that bracket the band). Its
``cut`` has the interface of :class:`szviewer.sky.sehgal.SehgalSky`: rows south to north, columns east to west
(RA decreasing), one ``healpy.vec2pix`` per batch per (Nside, ordering), each map gathered once per batch whatever
the number of bands it feeds. :func:`open_recorded` reopens a simulated sky an import recorded.
"""

from __future__ import annotations

import math
from pathlib import Path

import healpy as hp
import numpy as np

from szviewer.errors import InputError
from szviewer.sky.bands import BANDS_GHZ
from szviewer.sky.geometry import pixel_offsets, tangent_to_vec
from szviewer.sky.healpix_files import file_record
from szviewer.sky.healpix_recipes import MapSource, Part

#: Canonical components in the cumulative order of the paper's noise study, then the sum.
COMPONENT_ORDER: tuple[str, ...] = ("cmb", "tsz", "ksz", "ir", "radio", "dust", "skymap")
_BATCH = 2048  # centres per batch: ~50 MB of float64 vectors for 32 x 32 cutouts


def pixel_side_arcmin(nside: int) -> float:
    """Side of a HEALPix pixel (square root of its area) in arcmin: 0.43' at Nside 8192, 0.86' at 4096."""
    return math.degrees(math.sqrt(4 * math.pi / (12 * nside * nside))) * 60


def coarse_pixel_note(nside: int, pixel_arcmin: float) -> str | None:
    """The warning for maps coarser than the cutouts' pixels (the cutout builder's rule: side > 1.5 pixels)."""
    side = pixel_side_arcmin(nside)
    if side <= 1.5 * pixel_arcmin:
        return None
    return (f"the HEALPix maps (Nside {nside}, {side:.2f}' pixels) are coarser than the cutouts' {pixel_arcmin:g}' "
            f"pixels: each map pixel fills about {(side / pixel_arcmin) ** 2:.0f} cutout pixels")


def centres(ra_c, dec_c) -> tuple[np.ndarray, np.ndarray]:
    """Cutout centres as matching 1-D float arrays (ValueError for non-finite values or |Dec| > 90)."""
    ra = np.atleast_1d(np.asarray(ra_c, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_c, dtype=float))
    if ra.ndim != 1 or dec.ndim != 1:
        raise ValueError("ra_c and dec_c must be scalars or 1-D arrays")
    ra, dec = np.broadcast_arrays(ra, dec)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("cutout centres must be finite")
    if np.any(np.abs(dec) > 90.0):
        raise ValueError("cutout centre Dec outside [-90, 90] deg")
    return ra, dec


def resolve_components(available: tuple[str, ...], components, where) -> tuple[str, ...]:
    """``components`` (None: all ``available``; one name or several) as a tuple; ValueError naming ``where`` and
    what it has for a component it lacks."""
    if components is None:
        return tuple(available)
    comps = (components,) if isinstance(components, str) else tuple(components)
    missing = [c for c in comps if c not in available]
    if missing:
        raise ValueError(f"component(s) {missing} not available in {where}; available: {list(available)}")
    return comps


class HealpixSky:
    """A simulated sky of HEALPix maps, memory-mapped, cut into flat cutouts on request.

    ``recipes[component][band]`` lists the :class:`Part`s that make that image from ``sources``. Attributes as
    :class:`~szviewer.sky.sehgal.SehgalSky`: ``directory``, ``bands``, ``components`` (in
    :data:`COMPONENT_ORDER`), ``nside`` (the finest of the maps; the per-pixel noise uses it), ``files``
    (file name -> Path of every map read), plus ``simulation`` (e.g. 'websky') and ``settings`` (how it was
    opened, JSON-able; :func:`open_recorded` reopens it from :meth:`describe`).
    """

    def __init__(self, directory, simulation: str, sources: list[MapSource],
                 recipes: dict[str, dict[int, list[Part]]], bands=BANDS_GHZ, settings: dict | None = None,
                 reopen=None):
        self.directory = Path(directory)
        self.simulation = simulation
        self.sources = sources
        self.recipes = recipes
        self.bands: tuple[int, ...] = tuple(int(b) for b in bands)
        self.components: tuple[str, ...] = tuple(c for c in COMPONENT_ORDER if c in recipes)
        self.nside: int = max(s.file.nside for s in sources)
        self.files: dict[str, Path] = {s.path.name: s.path for s in sources}
        self.settings = dict(settings or {})
        self._reopen = reopen

    def __repr__(self) -> str:
        return (f"HealpixSky({self.simulation}, {str(self.directory)!r}, nside={self.nside}, "
                f"components={self.components}, bands={self.bands})")

    def __reduce__(self):
        if self._reopen is None:
            raise TypeError("this HealpixSky was built without a way to reopen it")
        return self._reopen

    def close(self) -> None:
        """Drop the memory maps (they are also released when the object is garbage-collected)."""
        self.sources = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def nsides(self) -> dict[str, int]:
        """Nside of each map file."""
        return {s.path.name: s.file.nside for s in self.sources}

    def coarse_notes(self, pixel_arcmin: float = 0.25) -> list[str]:
        """One warning per Nside of the maps whose pixels are coarser than the cutouts' (see
        :func:`coarse_pixel_note`), naming the components that use them."""
        notes = []
        for nside in sorted({s.file.nside for s in self.sources}):
            note = coarse_pixel_note(nside, pixel_arcmin)
            if note is None:
                continue
            comps = [c for c in self.components
                     if any(self.sources[i].file.nside == nside for parts in self.recipes[c].values()
                            for p in parts for i in p.sources())]
            notes.append(f"{', '.join(comps)}: {note}")
        return notes

    def describe(self) -> dict:
        """JSON-able provenance: simulation, directory, Nside, bands, components, every map file (name, path,
        size, mtime, Nside, ordering, unit, quantity, frequency), the recipe of each (component, band) and the
        settings it was opened with."""
        files = []
        for s in self.sources:
            rec = file_record(s.path)
            rec.update({"nside": s.file.nside, "ordering": s.file.ordering, "unit": s.unit, "quantity": s.quantity,
                        "to_quantity": s.to_base, "freq_ghz": s.freq_ghz})
            files.append(rec)
        recipes = {c: {str(b): [p.note for p in self.recipes[c][b]] for b in self.bands} for c in self.components}
        return {"kind": f"{self.simulation}_healpix", "simulation": self.simulation,
                "directory": str(self.directory.resolve()), "nside": self.nside, "bands_ghz": list(self.bands),
                "components": list(self.components), "files": files, "recipes": recipes, "settings": self.settings}

    def _resolve_components(self, components) -> tuple[str, ...]:
        return resolve_components(self.components, components, self.directory)

    def pixel_indices(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25, nest: bool = False,
                      nside: int | None = None) -> np.ndarray:
        """HEALPix pixel (at ``nside``, default the sky's) of every cutout pixel, (N, npix, npix) int64; rows
        south to north, columns east to west."""
        ra, dec = centres(ra_c, dec_c)
        xi, eta = pixel_offsets(npix, pixel_arcmin)
        v = tangent_to_vec(ra, dec, xi, eta)
        return hp.vec2pix(nside or self.nside, v[..., 0], v[..., 1], v[..., 2], nest=nest)

    def cut(self, ra_c, dec_c, npix: int = 32, pixel_arcmin: float = 0.25,
            components=None) -> dict[str, np.ndarray]:
        """Flat gnomonic cutouts centred at (``ra_c``, ``dec_c``) degrees: ``{component: (N, nband, npix, npix)
        float32 uK_CMB}``, rows south -> north, columns east -> west, each pixel the HEALPix pixel holding its
        centre. NaN or UNSEEN values -> :class:`InputError` naming the file."""
        ra, dec = centres(ra_c, dec_c)
        comps = self._resolve_components(components)
        n = ra.size
        npix = int(npix)
        out = {c: np.empty((n, len(self.bands), npix, npix), dtype=np.float32) for c in comps}
        if n == 0:
            return out
        need = sorted({i for c in comps for b in self.bands for p in self.recipes[c][b] for i in p.sources()})
        xi, eta = pixel_offsets(npix, pixel_arcmin)
        for s in range(0, n, _BATCH):
            e = min(n, s + _BATCH)
            v = tangent_to_vec(ra[s:e], dec[s:e], xi, eta)
            pix: dict[tuple[int, bool], np.ndarray] = {}
            raw: dict[int, np.ndarray] = {}
            for i in need:
                f = self.sources[i].file
                key = (f.nside, f.nest)
                if key not in pix:
                    pix[key] = hp.vec2pix(f.nside, v[..., 0], v[..., 1], v[..., 2], nest=f.nest)
                buf = np.empty(pix[key].shape, np.float32)
                f.gather(pix[key], buf)
                raw[i] = buf
            del v
            logs: dict = {}
            for c in comps:
                for ib, band in enumerate(self.bands):
                    dst = out[c][s:e, ib]
                    for k, part in enumerate(self.recipes[c][band]):
                        part.evaluate(raw, dst, add=k > 0, logs=logs)
        return out


def open_recorded(provenance: dict, root) -> HealpixSky:
    """Reopen a simulated HEALPix sky from the provenance its import recorded (:meth:`HealpixSky.describe`);
    ``root``: the workspace folder, against which cached files (the Websky CMB) are resolved."""
    kind = provenance.get("kind")
    if kind == "websky_healpix":
        from szviewer.sky.websky import reopen_websky

        return reopen_websky(provenance, root)
    if kind == "agora_healpix":
        from szviewer.sky.agora import reopen_agora

        return reopen_agora(provenance, root)
    raise InputError(Path(root) / "workspace.json", f"sky provenance of kind {kind!r} is not a simulated "
                                                    "HEALPix sky (websky_healpix or agora_healpix)")


#: Workspace sky provenance kinds :func:`open_recorded` reopens.
RECORDED_KINDS = ("websky_healpix", "agora_healpix")
