"""Typed settings of the multi-frequency matched filter, with the DeepSZ paper's values as defaults.

References: DeepSZ paper (Lin et al. 2021) section 2.1; Melin, Bartlett & Delabrouille 2006 (A&A 459, 341);
SPT practice (Vanderlinde et al. 2010, Bleem et al. 2015, Huang et al. 2019). Units are given in every
field name or docstring: angles in arcmin (or deg where named), temperatures in uK_CMB, fluxes in mJy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from szviewer.sky.bands import BANDS_GHZ

NoiseMode = Literal["model", "data"]

#: SPT's 12 core radii, 0.25' to 3.0' in 0.25' steps (paper section 2.1).
DEFAULT_THETA_C_ARCMIN: tuple[float, ...] = tuple(0.25 * (i + 1) for i in range(12))


@dataclass(frozen=True)
class MFSettings:
    """Everything that defines a matched-filter run.

    Signal (paper 2.1): projected isothermal beta model ``y0 (1 + theta^2/theta_c^2)^((1 - 3 beta)/2)``,
    beta = 1, one filter per core radius in ``theta_c_arcmin``, truncated at ``truncate_theta_c`` core radii.

    Noise (paper 2.1), used when ``noise_mode == 'model'``: lensed CMB (if ``include_cmb``) + kSZ
    (flat D_ell = ``ksz_dl_uk2``) fully correlated across bands; point sources flat in C_ell with
    D_3000 = ``ps_dl3000_uk2`` per band and a cross-band correlation coefficient ``ps_correlation``;
    SZ background flat in D_ell with D_3000 = ``szbg_dl3000_uk2_90`` at 90 GHz scaled by the tSZ spectrum
    (fully correlated); white instrument noise at the depth given to the run.
    With ``noise_mode == 'data'`` the noise is the smoothed 2-D auto- and cross-power of the tile itself
    (as ACT's nemo does), smoothed with a Gaussian of ``data_noise_smooth_ell`` in ell but at least
    ``data_noise_min_smooth_pix`` Fourier pixels, after subtracting the candidates above
    ``data_noise_clean_snr`` found in a first pass (0 disables that cleaning).

    Tiling: maps are cut in tiles whose owned interior is ``tile_deg`` on a side, padded by
    ``tile_margin_arcmin`` on each side (overlap with the neighbours), apodised over ``apod_arcmin`` at the
    tile edges and around NaN holes (no detection inside that apodisation).
    """

    theta_c_arcmin: tuple[float, ...] = DEFAULT_THETA_C_ARCMIN
    beta: float = 1.0
    truncate_theta_c: float = 5.0
    snr_threshold: float = 3.0
    centroid_core_frac: float = 0.0  # 0: paper (whole group); 0.5: core only, better for big bright clusters
    bands_ghz: tuple[int, ...] = BANDS_GHZ
    beam_fwhm_arcmin: tuple[float, ...] = (0.0, 0.0, 0.0)  # paper: no beam applied
    pixel_window: bool = True
    noise_mode: NoiseMode = "model"
    include_cmb: bool = True
    ksz_dl_uk2: float = 2.0
    ps_dl3000_uk2: tuple[float, ...] = (2.7, 8.8, 71.0)
    ps_correlation: float = 1.0
    szbg_dl3000_uk2_90: float = 3.6
    data_noise_smooth_ell: float = 300.0
    data_noise_min_smooth_pix: float = 3.0
    data_noise_clean_snr: float = 5.0
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
        for name in ("theta_c_arcmin", "bands_ghz", "beam_fwhm_arcmin", "ps_dl3000_uk2"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        nb = len(self.bands_ghz)
        if nb == 0:
            raise ValueError("bands_ghz is empty")
        if len(self.beam_fwhm_arcmin) != nb:
            raise ValueError(f"beam_fwhm_arcmin has {len(self.beam_fwhm_arcmin)} entries for {nb} bands")
        if len(self.ps_dl3000_uk2) != nb:
            raise ValueError(f"ps_dl3000_uk2 has {len(self.ps_dl3000_uk2)} entries for {nb} bands")
        if not 0.0 <= self.centroid_core_frac < 1.0:
            raise ValueError("centroid_core_frac must lie in [0, 1)")
        if not self.snr_threshold > 0:
            raise ValueError("snr_threshold must be positive")
        if not self.theta_c_arcmin or min(self.theta_c_arcmin) <= 0:
            raise ValueError("theta_c_arcmin must be a non-empty list of positive core radii [arcmin]")
        if self.beta <= 1.0 / 3.0:
            raise ValueError("beta must exceed 1/3 for a decreasing projected profile")
        if self.truncate_theta_c <= 0:
            raise ValueError("truncate_theta_c must be positive")
        if self.noise_mode not in ("model", "data"):
            raise ValueError(f"noise_mode must be 'model' or 'data', not {self.noise_mode!r}")
        if not -1.0 <= self.ps_correlation <= 1.0:
            raise ValueError("ps_correlation must lie in [-1, 1]")
        if min(self.beam_fwhm_arcmin) < 0:
            raise ValueError("beam FWHM must be >= 0 arcmin")
        if self.tile_deg <= 0 or self.apod_arcmin < 0 or self.tile_margin_arcmin < self.apod_arcmin:
            raise ValueError("need tile_deg > 0 and tile_margin_arcmin >= apod_arcmin >= 0")

    @property
    def nband(self) -> int:
        return len(self.bands_ghz)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MFSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        return cls(**d)

    def replace(self, **changes: Any) -> MFSettings:
        return dataclasses.replace(self, **changes)
