"""Instruments: the bands, beams and noise of a survey, read from a preset TOML file a person can read and write.

An :class:`Instrument` is what ``szviewer simulate --instrument NAME`` observes the synthetic sky through: per band
an effective frequency, a beam (Gaussian FWHM or a B_ell table, see :mod:`szviewer.sky.beams`), a white depth and
an atmospheric 1/f knee; one atmosphere shared by all bands; a hit-count pattern; a footprint with apodised edges
and holes around bright sources; a pixel size. The shipped presets live in ``resources/instruments/`` (their
README explains every field); a user passes their own file by path
(:mod:`szviewer.sky.instrument_presets` reads and checks those files).

The noise model of one band at unit relative hits (white level N_w = (depth [uK rad])^2; the form of the SO
forecasts, Ade et al. 2019 sec. 2.2, and of the CMB-S4 LAT noise models) is::

    N_ell = N_w (1 + (ell / ell_knee)^alpha_knee)        [uK^2 sr]

The 1/f part is correlated between bands with coefficient ``atmosphere_correlation`` r: its cross-spectrum is
``r sqrt(R_a R_b)`` with ``R = N_w (ell/ell_knee)^alpha`` (as the SO V3 noise calculator does within a dichroic
tube, with r = 0.9). The white part is independent between bands.

``anisotropy`` A redistributes the 1/f power of each multipole in angle, toward scan-direction stripes. Columns of a
tile run along RA (the scan direction of SPT; ACT and SO cross-link, A = 1), so a stripe along RA is a mode with
l_x = 0. With phi the angle of the mode (l_x, l_y) from the l_y axis, the 1/f power is multiplied by
``g(phi) = exp(kappa cos 2 phi) / I0(kappa)``, kappa = ln(A) / 2: at a fixed |ell| the modes with l_x = 0 carry A
times the 1/f power of the modes with l_y = 0, and the azimuthal mean of g is exactly 1, so the isotropic N_ell
(and the measured white level and ell_knee) do not depend on A. A = 1 is isotropic.

The map mean is not observed: the 1/f part is given no power at ell = 0 (the white part keeps its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from szviewer.sky.beams import Beam
from szviewer.sky.spectra import ARCMIN_RAD

DEPTH_PATTERNS = ("uniform", "smooth")


@dataclass(frozen=True)
class BandSpec:
    """One band: nominal id [GHz], effective frequency [GHz], white depth [uK-arcmin], beam, 1/f knee and slope."""

    band: int
    freq_ghz: float
    white_uk_arcmin: float
    beam: Beam
    ell_knee: float = 0.0
    alpha_knee: float = 0.0

    @property
    def has_one_over_f(self) -> bool:
        return self.ell_knee > 0

    def white_sigma_uk(self, pixel_arcmin: float) -> float:
        """Per-pixel standard deviation of the white part at unit hits [uK]: depth [uK-arcmin] / pixel [arcmin]."""
        return self.white_uk_arcmin / float(pixel_arcmin)

    def white_cl(self) -> float:
        """White level N_w [uK^2 sr] = (depth [uK-arcmin] x 1 arcmin in rad)^2."""
        return (self.white_uk_arcmin * ARCMIN_RAD) ** 2

    def one_over_f_ratio(self, ell) -> np.ndarray:
        """(ell / ell_knee)^alpha_knee, the 1/f power in units of the white level; 0 at ell = 0 and without 1/f."""
        ell = np.asarray(ell, dtype=float)
        if not self.has_one_over_f:
            return np.zeros_like(ell)
        with np.errstate(divide="ignore"):
            return np.where(ell > 0, (np.maximum(ell, 1e-30) / self.ell_knee) ** self.alpha_knee, 0.0)

    def noise_cl(self, ell) -> np.ndarray:
        """Auto noise spectrum N_ell [uK^2 sr] at unit hits: N_w (1 + (ell/ell_knee)^alpha); N_w at ell = 0."""
        return self.white_cl() * (1.0 + self.one_over_f_ratio(ell))


@dataclass(frozen=True)
class Instrument:
    """A survey instrument (see the module docstring and ``resources/instruments/README.md``)."""

    name: str
    description: str
    pixel_arcmin: float
    bands: tuple[BandSpec, ...]
    atmosphere_correlation: float = 0.0
    anisotropy: float = 1.0
    depth_pattern: str = "uniform"
    depth_contrast: float = 1.0
    depth_scale_deg: float = 0.0
    edge_apod_arcmin: float = 0.0
    hole_flux_mjy: float = 0.0
    hole_band: int = 0
    hole_radius_arcmin: float = 0.0
    hole_apod_arcmin: float = 0.0
    references: tuple[str, ...] = ()
    path: str | None = None
    _text: str | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ views
    @property
    def band_ids(self) -> tuple[int, ...]:
        return tuple(b.band for b in self.bands)

    @property
    def freqs_ghz(self) -> tuple[float, ...]:
        return tuple(b.freq_ghz for b in self.bands)

    @property
    def white_uk_arcmin(self) -> dict[int, float]:
        return {b.band: b.white_uk_arcmin for b in self.bands}

    @property
    def has_beams(self) -> bool:
        return any(b.beam.is_table or b.beam.fwhm_arcmin > 0 for b in self.bands)

    @property
    def has_one_over_f(self) -> bool:
        return any(b.has_one_over_f for b in self.bands)

    def band(self, band_id: int) -> BandSpec:
        for b in self.bands:
            if b.band == int(band_id):
                return b
        raise KeyError(f"instrument {self.name!r} has no band {band_id} (bands {list(self.band_ids)})")

    # ------------------------------------------------------------------ noise covariance
    def noise_power(self, shape: tuple[int, int], pixel_arcmin: float | None = None) -> np.ndarray:
        """Stationary noise covariance at unit relative hits, (nb, nb, ny, nx // 2 + 1) float64, uK^2 per pixel.

        Same convention as ``szviewer.mf.noise``: ``P_ij(k) = <M_i(k) M_j(k)^*> / N_pix`` for the unnormalised
        rfft2 ``M`` of the maps, so a white map of per-pixel sigma s has P = s^2 and a C_ell [uK^2 sr] gives
        P = C_ell / Omega_pix. White on the diagonal; the 1/f part (anisotropic if ``anisotropy`` != 1) with
        cross terms ``r sqrt(R_i R_j)``.
        """
        pix = self.pixel_arcmin if pixel_arcmin is None else float(pixel_arcmin)
        ny, nx = shape
        nb = len(self.bands)
        out = np.zeros((nb, nb, ny, nx // 2 + 1))
        red = one_over_f_amplitudes(self, shape, pix)  # sqrt of the 1/f power per band, or None
        for i, b in enumerate(self.bands):
            out[i, i] = b.white_sigma_uk(pix) ** 2
        if red is None:
            return out
        r = self.atmosphere_correlation
        for i in range(nb):
            if red[i] is None:
                continue
            out[i, i] += red[i].astype(np.float64) ** 2
            for j in range(i + 1, nb):
                if red[j] is not None and r > 0:
                    cross = r * red[i].astype(np.float64) * red[j]
                    out[i, j] = cross
                    out[j, i] = cross
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """A JSON-ready dict (beam tables inline), the inverse of :meth:`from_dict`."""
        return {
            "name": self.name, "description": self.description, "pixel_arcmin": self.pixel_arcmin,
            "bands": [_band_to_dict(b) for b in self.bands],
            "atmosphere_correlation": self.atmosphere_correlation, "anisotropy": self.anisotropy,
            "depth_pattern": self.depth_pattern, "depth_contrast": self.depth_contrast,
            "depth_scale_deg": self.depth_scale_deg, "edge_apod_arcmin": self.edge_apod_arcmin,
            "hole_flux_mjy": self.hole_flux_mjy, "hole_band": self.hole_band,
            "hole_radius_arcmin": self.hole_radius_arcmin, "hole_apod_arcmin": self.hole_apod_arcmin,
            "references": list(self.references), "path": self.path,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Instrument:
        d = dict(d)
        d["bands"] = tuple(_band_from_dict(b) for b in d["bands"])
        d["references"] = tuple(d.get("references", ()))
        for key in ("pixel_arcmin", "atmosphere_correlation", "anisotropy", "depth_contrast", "depth_scale_deg",
                    "edge_apod_arcmin", "hole_flux_mjy", "hole_radius_arcmin", "hole_apod_arcmin"):
            d[key] = float(d[key])
        d["hole_band"] = int(d["hole_band"])
        return cls(**d)

    def toml_text(self) -> str:
        """A readable TOML description: the original file's text when loaded from a file, else generated."""
        return self._text if self._text is not None else _to_toml(self)


# ---------------------------------------------------------------------------------------------- 1/f amplitudes

def _log_anisotropy(shape: tuple[int, int], anisotropy: float) -> np.ndarray | float:
    """ln g(phi) = kappa cos 2 phi - ln I0(kappa), kappa = ln(A)/2, on the rfft2 grid (0.0 when A = 1).

    phi is the angle of the mode from the l_y axis (l_x = 0: a stripe along RA, the scan direction).
    """
    if anisotropy == 1.0:
        return 0.0
    from scipy.special import i0e

    ny, nx = shape
    ky2 = (np.fft.fftfreq(ny).astype(np.float32) ** 2)[:, None]
    kx2 = (np.fft.rfftfreq(nx).astype(np.float32) ** 2)[None, :]
    k2 = ky2 + kx2
    k2[0, 0] = 1.0
    cos2 = (ky2 - kx2) / k2
    cos2[0, 0] = 0.0
    kappa = 0.5 * math.log(anisotropy)
    ak = abs(kappa)
    return np.float32(kappa) * cos2 - np.float32(ak + math.log(i0e(ak)))  # ln I0(k) = |k| + ln i0e(|k|)


def anisotropy_weight(shape: tuple[int, int], anisotropy: float) -> np.ndarray:
    """g(phi) = exp(kappa cos 2 phi) / I0(kappa) on the rfft2 grid (see the module docstring), float32."""
    return np.exp(np.broadcast_to(_log_anisotropy(shape, anisotropy), (shape[0], shape[1] // 2 + 1)),
                  dtype=np.float32)


def one_over_f_amplitudes(inst: Instrument, shape: tuple[int, int], pixel_arcmin: float) -> list | None:
    """Per band, sqrt of the 1/f power [uK, per-pixel units] on the rfft2 grid (float32), or None for a band
    without 1/f; None overall for a white-only instrument. Zero at ell = 0.

    amp_b = sigma_b (ell / ell_knee)^(alpha/2) sqrt(g), computed as one exp of a sum of logs per band.
    """
    if not inst.has_one_over_f:
        return None
    ny, nx = shape
    d = pixel_arcmin * ARCMIN_RAD
    ly2 = ((np.fft.fftfreq(ny, d=d) * 2 * np.pi) ** 2).astype(np.float32)[:, None]
    lx2 = ((np.fft.rfftfreq(nx, d=d) * 2 * np.pi) ** 2).astype(np.float32)[None, :]
    ln_ell = ly2 + lx2
    ln_ell[0, 0] = 1.0  # the DC amplitude is set to 0 below
    np.log(ln_ell, out=ln_ell)
    ln_ell *= np.float32(0.5)
    half_ln_g = np.float32(0.5) * _log_anisotropy(shape, inst.anisotropy)
    out = []
    for b in inst.bands:
        if not b.has_one_over_f:
            out.append(None)
            continue
        half_alpha = np.float32(0.5 * b.alpha_knee)
        const = np.float32(math.log(b.white_sigma_uk(pixel_arcmin)) - 0.5 * b.alpha_knee * math.log(b.ell_knee))
        amp = half_alpha * ln_ell
        amp += half_ln_g
        amp += const
        np.exp(amp, out=amp)
        amp[0, 0] = 0.0
        out.append(amp)
    return out


# ---------------------------------------------------------------------------------------------- dict / TOML out

def _band_to_dict(b: BandSpec) -> dict:
    d = {"band": b.band, "freq_ghz": b.freq_ghz, "white_uk_arcmin": b.white_uk_arcmin,
         "ell_knee": b.ell_knee, "alpha_knee": b.alpha_knee}
    if b.beam.is_table:
        d["beam"] = {"ell": list(b.beam.ell), "bell": list(b.beam.bell), "path": b.beam.path}
    else:
        d["beam"] = {"fwhm_arcmin": b.beam.fwhm_arcmin}
    return d


def _band_from_dict(d: dict) -> BandSpec:
    beam_d = d["beam"]
    if "ell" in beam_d:
        beam = Beam.from_table(beam_d["ell"], beam_d["bell"], beam_d.get("path"))
    else:
        beam = Beam.gaussian(beam_d["fwhm_arcmin"])
    return BandSpec(band=int(d["band"]), freq_ghz=float(d["freq_ghz"]), white_uk_arcmin=float(d["white_uk_arcmin"]),
                    beam=beam, ell_knee=float(d["ell_knee"]), alpha_knee=float(d["alpha_knee"]))


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _to_toml(inst: Instrument) -> str:
    lines = [f"name = {_q(inst.name)}", f"description = {_q(inst.description)}",
             f"pixel_arcmin = {inst.pixel_arcmin!r}",
             "references = [" + ", ".join(_q(r) for r in inst.references) + "]", ""]
    for b in inst.bands:
        lines += ["[[bands]]", f"band = {b.band}", f"freq_ghz = {b.freq_ghz!r}",
                  f"white_uk_arcmin = {b.white_uk_arcmin!r}"]
        if b.beam.is_table:
            lines.append(f"beam_file = {_q(b.beam.path or '')}  # B_ell table ({len(b.beam.ell)} rows)")
        else:
            lines.append(f"fwhm_arcmin = {b.beam.fwhm_arcmin!r}")
        lines += [f"ell_knee = {b.ell_knee!r}", f"alpha_knee = {b.alpha_knee!r}", ""]
    lines += ["[atmosphere]", f"correlation = {inst.atmosphere_correlation!r}", f"anisotropy = {inst.anisotropy!r}",
              "", "[depth]", f"pattern = {_q(inst.depth_pattern)}", f"contrast = {inst.depth_contrast!r}",
              f"scale_deg = {inst.depth_scale_deg!r}", "", "[footprint]",
              f"edge_apod_arcmin = {inst.edge_apod_arcmin!r}", "", "[holes]", f"flux_mjy = {inst.hole_flux_mjy!r}"]
    if inst.hole_flux_mjy > 0:
        lines += [f"band = {inst.hole_band}", f"radius_arcmin = {inst.hole_radius_arcmin!r}",
                  f"apod_arcmin = {inst.hole_apod_arcmin!r}"]
    return "\n".join(lines) + "\n"
