"""Observing bands, CMB units and the thermal SZ spectrum (SCIENCE.md sections 1 and 3).

All map values in szviewer are CMB thermodynamic temperature fluctuations in uK (uK_CMB).
"""

from __future__ import annotations

import numpy as np

#: The three DeepSZ bands in GHz (paper section 1.1).
BANDS_GHZ: tuple[int, ...] = (90, 148, 219)

T_CMB_K = 2.726  # Sehgal et al. 2010
H_PLANCK = 6.62607015e-34  # J s
K_BOLTZMANN = 1.380649e-23  # J / K
C_LIGHT = 2.99792458e8  # m / s

#: White noise of the paper (SPT-3G full survey), uK-arcmin (paper section 1.1).
NOISE_UK_ARCMIN: dict[int, float] = {90: 2.8, 148: 2.6, 219: 6.6}


def band_label(band_ghz: int) -> str:
    """File-name form of a band, as in Sehgal's maps: 90 -> '090'."""
    return f"{int(band_ghz):03d}"


def x_of(nu_ghz: float | np.ndarray) -> float | np.ndarray:
    """Dimensionless frequency x = h nu / (k T_CMB)."""
    return H_PLANCK * np.asarray(nu_ghz, dtype=float) * 1e9 / (K_BOLTZMANN * T_CMB_K)


def tsz_f(nu_ghz: float | np.ndarray) -> float | np.ndarray:
    """Non-relativistic tSZ spectral function f(x) = x coth(x/2) - 4 (negative below 217 GHz)."""
    x = x_of(nu_ghz)
    return x / np.tanh(x / 2.0) - 4.0


def tsz_uk_per_y(nu_ghz: float | np.ndarray) -> float | np.ndarray:
    """uK_CMB per unit Compton-y: T_CMB f(x) (about -4.36e6 at 90 GHz, -2.67e6 at 148 GHz)."""
    return T_CMB_K * 1e6 * tsz_f(nu_ghz)


def db_dt_jy_sr_per_uk(nu_ghz: float | np.ndarray) -> float | np.ndarray:
    """dB_nu/dT at T_CMB in Jy/sr per uK_CMB (202.7, 393.4, 483.8 at 90/148/219 GHz)."""
    nu = np.asarray(nu_ghz, dtype=float) * 1e9
    x = x_of(nu_ghz)
    b = 2 * H_PLANCK * nu**3 / C_LIGHT**2 / np.expm1(x)  # W m^-2 Hz^-1 sr^-1
    dbdt = b * x * np.exp(x) / np.expm1(x) / T_CMB_K  # per K
    return dbdt * 1e26 * 1e-6  # Jy/sr per uK


def jy_sr_to_uk(nu_ghz: float) -> float:
    """Multiply a map in Jy/sr by this to get uK_CMB (SCIENCE.md: dT = I / CFAC * T_CMB)."""
    return 1.0 / float(db_dt_jy_sr_per_uk(nu_ghz))


def noise_sigma_uk(band_ghz: int, pixel_arcmin: float, uk_arcmin: float | None = None) -> float:
    """White-noise standard deviation per pixel: depth [uK-arcmin] / pixel side [arcmin]."""
    depth = NOISE_UK_ARCMIN[int(band_ghz)] if uk_arcmin is None else uk_arcmin
    return depth / pixel_arcmin
