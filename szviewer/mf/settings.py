"""Typed settings of the multi-frequency matched filter, with the DeepSZ paper's values as defaults.

References: DeepSZ paper (Lin et al. 2021) section 2.1; Melin, Bartlett & Delabrouille 2006 (A&A 459, 341);
SPT practice (Vanderlinde et al. 2010, Bleem et al. 2015, Huang et al. 2019); iterative data noise after szifi
(Zubeldia et al. 2023) and nemo's ACT DR6 two-pass search (Hilton et al. 2021, 2025). Units are given in every
field name or docstring: angles in arcmin (or deg where named), temperatures in uK_CMB, fluxes in mJy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from szviewer.sky.bands import BANDS_GHZ

NoiseMode = Literal["model", "data"]
PositionMode = Literal["peak", "centroid"]

#: SPT's 12 core radii, 0.25' to 3.0' in 0.25' steps (paper section 2.1).
DEFAULT_THETA_C_ARCMIN: tuple[float, ...] = tuple(0.25 * (i + 1) for i in range(12))
#: The paper's point-source D_3000 [uK^2] at its three bands (section 2.1).
PAPER_PS_DL3000_UK2: dict[int, float] = {90: 2.7, 148: 8.8, 219: 71.0}


@dataclass(frozen=True)
class MFSettings:
    """Everything that defines a matched-filter run.

    Bands: ``bands_ghz`` are the effective frequencies [GHz] of the maps' bands, any number >= 1 (they set the
    tSZ spectrum). Beams per band: ``beam_fwhm_arcmin`` (Gaussian FWHM, 0 = none) unless ``beam_tables`` holds a
    B_ell table for that band (``(ell, B_ell)`` pair of tuples, or ``()`` to use the FWHM); see
    :mod:`szviewer.sky.beams`.

    Signal (paper 2.1): projected isothermal beta model ``y0 (1 + theta^2/theta_c^2)^((1 - 3 beta)/2)``,
    beta = 1, one filter per core radius in ``theta_c_arcmin``, truncated at ``truncate_theta_c`` core radii.

    Noise (paper 2.1), used when ``noise_mode == 'model'``: lensed CMB (if ``include_cmb``) + kSZ
    (flat D_ell = ``ksz_dl_uk2``) fully correlated across bands; point sources flat in C_ell with
    D_3000 = ``ps_dl3000_uk2`` per band (empty: the paper's values at 90/148/219 GHz, and at other frequencies a
    radio + dusty spectral law fitted to them, :func:`szviewer.mf.noise.point_source_dl3000`) and a cross-band
    correlation coefficient ``ps_correlation``; SZ background flat in D_ell with D_3000 = ``szbg_dl3000_uk2_90``
    at 90 GHz scaled by the tSZ spectrum (fully correlated); instrument noise at the depth given to the run, white
    plus, where ``noise_ell_knee`` gives a knee per band, atmospheric 1/f ``(ell/ell_knee)^alpha`` correlated
    between bands by ``noise_atm_correlation`` and anisotropic by ``noise_anisotropy`` (the instrument model of
    :mod:`szviewer.sky.instruments`).

    With ``noise_mode == 'data'`` the noise is the smoothed 2-D auto- and cross-power of the tile itself
    (as ACT's nemo does), smoothed with a Gaussian of ``data_noise_smooth_ell`` in ell but at least
    ``data_noise_min_smooth_pix`` Fourier pixels, after whitening by smooth ring models in a basis aligned with the
    CMB (``data_noise_whiten``; :func:`szviewer.mf.noise.data_noise_power`), so that steep 1/f is not blurred.
    Clusters would sit in their own noise estimate and lower their
    own S/N, so the estimate is iterated (szifi's iterative MMF, Zubeldia et al. 2023; nemo's DR6 two-pass run):
    candidates above ``data_noise_clean_snr`` are fitted (y0, theta_c, position), their templates subtracted from
    the maps, the noise re-estimated and the maps filtered again, until the set of those candidates is stable
    (same objects, S/N changed by less than ``data_noise_tolerance``) or after ``data_noise_iterations``
    re-estimates. ``data_noise_clean_snr = 0`` disables the iteration (one pass).

    Inhomogeneous depth (``use_ivar`` and an inverse-variance map given to the run): the maps are weighted by
    sqrt(relative hits) before filtering, which makes the instrument noise stationary, and each S/N map is
    normalised locally: its variance is ``a + b h(x)`` in relative hits h (analytic from the model noise, or
    fitted to the S/N map away from candidates in data mode, like nemo's noise bins).

    Positions (``position``): 'peak' (default) is the sub-pixel vertex of a quadratic fitted to the 3 x 3 pixels
    around the peak of the winning scale, with an error from the filter's expected curvature; 'centroid' is the
    paper's S/N-weighted mean of the group's pixels (optionally of only its core, ``centroid_core_frac``).

    Checks: after filtering, the robust rms of each S/N map away from candidates is measured; where it departs from
    1 by more than ``rms_warn_frac`` the run says so (catalogue metadata, product summary).

    Selection function: injections have their own settings (:class:`szviewer.mf.selection_plan.InjectionSettings`).

    Tiling: maps are cut in tiles whose owned interior is ``tile_deg`` on a side, padded by
    ``tile_margin_arcmin`` on each side (overlap with the neighbours), apodised over ``apod_arcmin`` at the
    tile edges and around NaN holes (no detection inside that apodisation).
    """

    theta_c_arcmin: tuple[float, ...] = DEFAULT_THETA_C_ARCMIN
    beta: float = 1.0
    truncate_theta_c: float = 5.0
    snr_threshold: float = 3.0
    position: PositionMode = "peak"
    centroid_core_frac: float = 0.0  # position 'centroid': 0 = paper (whole group); 0.5 = core only
    bands_ghz: tuple[float, ...] = BANDS_GHZ
    beam_fwhm_arcmin: tuple[float, ...] = (0.0, 0.0, 0.0)  # paper: no beam applied
    beam_tables: tuple = ()
    pixel_window: bool = True
    noise_mode: NoiseMode = "model"
    include_cmb: bool = True
    ksz_dl_uk2: float = 2.0
    ps_dl3000_uk2: tuple[float, ...] = ()
    ps_correlation: float = 1.0
    szbg_dl3000_uk2_90: float = 3.6
    noise_ell_knee: tuple[float, ...] = ()
    noise_alpha_knee: tuple[float, ...] = ()
    noise_atm_correlation: float = 0.0
    noise_anisotropy: float = 1.0
    data_noise_smooth_ell: float = 300.0
    data_noise_min_smooth_pix: float = 3.0
    data_noise_whiten: bool = True
    data_noise_clean_snr: float = 5.0
    data_noise_iterations: int = 4
    data_noise_tolerance: float = 0.01
    use_ivar: bool = True
    rms_warn_frac: float = 0.10
    tile_deg: float = 4.0
    tile_margin_arcmin: float = 24.0
    apod_arcmin: float = 8.0
    point_source_flux_cut_mjy: float = 2.0
    find_point_sources: bool = False  # also find sources in the maps (beam-scale filter) and subtract them
    point_source_snr: float = 5.0
    source_flag_radius_arcmin: float = 2.0
    source_flag_flux_mjy: float = 2.0
    fft_workers: int = 2

    def __post_init__(self) -> None:
        # normalise sequences to tuples so the dataclass stays hashable and serialisable
        for name in ("theta_c_arcmin", "bands_ghz", "beam_fwhm_arcmin", "ps_dl3000_uk2", "noise_ell_knee",
                     "noise_alpha_knee"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "beam_tables", tuple(
            () if not t else (tuple(float(v) for v in t[0]), tuple(float(v) for v in t[1]))
            for t in self.beam_tables))
        nb = len(self.bands_ghz)
        if nb == 0:
            raise ValueError("bands_ghz is empty")
        if min(self.bands_ghz) <= 0:
            raise ValueError("bands_ghz must be positive frequencies [GHz]")
        if len(self.beam_fwhm_arcmin) != nb:
            raise ValueError(f"beam_fwhm_arcmin has {len(self.beam_fwhm_arcmin)} entries for {nb} bands")
        if self.beam_tables and len(self.beam_tables) != nb:
            raise ValueError(f"beam_tables has {len(self.beam_tables)} entries for {nb} bands")
        if self.ps_dl3000_uk2 and len(self.ps_dl3000_uk2) != nb:
            raise ValueError(f"ps_dl3000_uk2 has {len(self.ps_dl3000_uk2)} entries for {nb} bands")
        for name in ("noise_ell_knee", "noise_alpha_knee"):
            if getattr(self, name) and len(getattr(self, name)) != nb:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {nb} bands")
        if len(self.noise_ell_knee) != len(self.noise_alpha_knee):
            raise ValueError("noise_ell_knee and noise_alpha_knee go together (one entry per band each)")
        if not 0.0 <= self.centroid_core_frac < 1.0:
            raise ValueError("centroid_core_frac must lie in [0, 1)")
        if self.position not in ("peak", "centroid"):
            raise ValueError(f"position must be 'peak' or 'centroid', not {self.position!r}")
        if not self.snr_threshold > 0:
            raise ValueError("snr_threshold must be positive")
        if not self.theta_c_arcmin or min(self.theta_c_arcmin) <= 0:
            raise ValueError("theta_c_arcmin must be a non-empty list of positive core radii [arcmin]")
        if list(self.theta_c_arcmin) != sorted(set(self.theta_c_arcmin)):
            raise ValueError("theta_c_arcmin must be increasing, without repeats")
        if self.beta <= 1.0 / 3.0:
            raise ValueError("beta must exceed 1/3 for a decreasing projected profile")
        if self.truncate_theta_c <= 0:
            raise ValueError("truncate_theta_c must be positive")
        if self.noise_mode not in ("model", "data"):
            raise ValueError(f"noise_mode must be 'model' or 'data', not {self.noise_mode!r}")
        if not -1.0 <= self.ps_correlation <= 1.0:
            raise ValueError("ps_correlation must lie in [-1, 1]")
        if not 0.0 <= self.noise_atm_correlation <= 1.0:
            raise ValueError("noise_atm_correlation must lie in [0, 1]")
        if self.noise_anisotropy <= 0:
            raise ValueError("noise_anisotropy must be > 0 (1 = isotropic)")
        if min(self.beam_fwhm_arcmin) < 0:
            raise ValueError("beam FWHM must be >= 0 arcmin")
        if self.data_noise_iterations < 0 or self.data_noise_clean_snr < 0 or self.data_noise_tolerance <= 0:
            raise ValueError("need data_noise_iterations >= 0, data_noise_clean_snr >= 0, data_noise_tolerance > 0")
        if self.tile_deg <= 0 or self.apod_arcmin < 0 or self.tile_margin_arcmin < self.apod_arcmin:
            raise ValueError("need tile_deg > 0 and tile_margin_arcmin >= apod_arcmin >= 0")

    @property
    def nband(self) -> int:
        return len(self.bands_ghz)

    def beam(self, i: int):
        """The beam of band index ``i`` as a :class:`szviewer.sky.beams.Beam` (table if given, else Gaussian)."""
        from szviewer.sky.beams import Beam

        if self.beam_tables and self.beam_tables[i]:
            return Beam.from_table(*self.beam_tables[i])
        return Beam.gaussian(self.beam_fwhm_arcmin[i])

    def beam_fwhm_equivalent(self) -> tuple[float, ...]:
        """Per band the beam's FWHM [arcmin] (a table's FWHM-equivalent)."""
        return tuple(self.beam(i).fwhm_equivalent_arcmin() for i in range(self.nband))

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists); ``compact`` replaces B_ell tables by their
        FWHM-equivalent (for catalogue headers)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "beam_tables":
                if compact:
                    v = [None if not t else {"fwhm_equivalent_arcmin": round(self.beam(i).fwhm_equivalent_arcmin(), 4),
                                             "rows": len(t[0])} for i, t in enumerate(v)]
                else:
                    v = [[list(t[0]), list(t[1])] if t else [] for t in v]
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MFSettings:
        """Inverse of :meth:`to_dict` (not compact); unknown keys raise ``TypeError``."""
        return cls(**d)

    def replace(self, **changes: Any) -> MFSettings:
        return dataclasses.replace(self, **changes)


def resample_beam_table(beam, ell_max: float | None = None, step: float = 20.0) -> tuple:
    """A compact ``(ell, B_ell)`` table of a :class:`~szviewer.sky.beams.Beam` for :attr:`MFSettings.beam_tables`:
    every ``step`` in ell up to where B_ell < 1e-6 (or ``ell_max``); linear interpolation of a smooth beam on this
    grid is accurate to ~1e-4."""
    import numpy as np

    top = float(ell_max) if ell_max is not None else float(max(beam.ell[-1] if beam.is_table else 0.0, 1000.0))
    ell = np.arange(0.0, top + step, step)
    b = beam(ell)
    small = np.nonzero(b < 1e-6)[0]
    if small.size:
        ell, b = ell[:small[0] + 1], b[:small[0] + 1]
    return (tuple(float(v) for v in ell), tuple(float(v) for v in b))
