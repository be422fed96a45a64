"""The Sehgal et al. (2010) cosmology, as astropy and colossus objects (SCIENCE.md section 1)."""

from __future__ import annotations

from functools import lru_cache

from astropy.cosmology import FlatLambdaCDM

H = 0.71
OMEGA_M = 0.264
OMEGA_B = 0.044
SIGMA_8 = 0.80
N_S = 0.96
T_CMB_K = 2.726
H70 = H / 0.70


@lru_cache(maxsize=1)
def astropy_cosmology() -> FlatLambdaCDM:
    """Distances and volumes (astropy). Massless neutrinos, as in the simulation."""
    return FlatLambdaCDM(H0=100 * H, Om0=OMEGA_M, Ob0=OMEGA_B, Tcmb0=T_CMB_K, name="Sehgal2010")


@lru_cache(maxsize=1)
def colossus_cosmology():
    """The same cosmology set in colossus (mass function, mass definitions); no cache on disk."""
    from colossus.cosmology import cosmology

    params = {"flat": True, "H0": 100 * H, "Om0": OMEGA_M, "Ob0": OMEGA_B, "sigma8": SIGMA_8,
              "ns": N_S, "Tcmb0": T_CMB_K, "relspecies": False}
    return cosmology.setCosmology("sehgal2010", params=params, persistence="")
