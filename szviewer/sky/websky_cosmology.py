"""Websky's cosmology and halo masses: distances, redshifts, and M200m converted to other mass definitions.

Cosmology (Websky): Omega_m 0.31, Omega_b 0.049, h 0.68, n_s 0.965, sigma_8 0.81, flat, matter + Lambda (no
radiation term in the distances). Halo masses: M200m from the Lagrangian radius (the catalogue's own), then
M_vir (Bryan & Norman 1998), M500c and M200c through colossus with the Duffy et al. (2008) concentrations (the
same model the synthetic sky uses; Duffy 2008 was fit to z <= 2 and is extrapolated beyond).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from functools import lru_cache

import numpy as np

OMEGA_M = 0.31
OMEGA_B = 0.049
H = 0.68
N_S = 0.965
SIGMA_8 = 0.81
#: Mean matter density [Msun / Mpc^3]: 2.775e11 h^2 Omega_m (Websky's rho_mean).
RHO_MEAN = 2.775e11 * OMEGA_M * H**2
CONCENTRATION_MODEL = "duffy08"


@lru_cache(maxsize=1)
def astropy_cosmology():
    """Websky's cosmology for distances (astropy): flat, matter + Lambda."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=100 * H, Om0=OMEGA_M, Ob0=OMEGA_B, name="Websky")


@contextlib.contextmanager
def colossus_cosmology():
    """Websky's cosmology as colossus's current one for the duration (the previous one is restored; nothing is
    written to ~/.colossus)."""
    from colossus.cosmology import cosmology

    try:
        previous = cosmology.getCurrent()
    except Exception:  # colossus raises a bare Exception when none is set
        previous = None
    params = {"flat": True, "H0": 100 * H, "Om0": OMEGA_M, "Ob0": OMEGA_B, "sigma8": SIGMA_8, "ns": N_S,
              "relspecies": False}
    cosmo = cosmology.setCosmology("websky", params=params, persistence="")
    try:
        yield cosmo
    finally:
        if previous is not None:
            cosmology.setCurrent(previous)


@lru_cache(maxsize=4)
def _chi_table(z_max: float) -> tuple[np.ndarray, np.ndarray]:
    z = np.expm1(np.linspace(0.0, math.log1p(z_max), 8192))
    return astropy_cosmology().comoving_distance(z).value, z


def redshift_of_distance(chi_mpc: np.ndarray) -> np.ndarray:
    """Redshift of comoving distances [Mpc] in Websky's cosmology (astropy's distances, inverted by linear
    interpolation on 8,192 points uniform in ln(1 + z): error below 1e-6 in z)."""
    chi = np.asarray(chi_mpc, dtype=float)
    z_max = 10.0
    top = float(np.max(chi)) if chi.size else 0.0
    while _chi_table(z_max)[0][-1] < top and z_max < 1e4:
        z_max *= 4
    d, z = _chi_table(z_max)
    if top > d[-1]:
        raise ValueError(f"comoving distance {top:.6g} Mpc is beyond z = {z_max:g} (the horizon is at "
                         f"{d[-1]:.6g} Mpc)")
    return np.interp(chi, d, z)


def m200m_of_rth(rth_mpc) -> np.ndarray:
    """M200m [Msun] of Lagrangian radii [Mpc]: (4 pi / 3) rho_mean R_TH^3 (Websky's definition)."""
    return (4.0 * np.pi / 3.0) * RHO_MEAN * np.asarray(rth_mpc, dtype=np.float64) ** 3


def rth_of_m200m(m_msun: float) -> float:
    """The Lagrangian radius [Mpc] of a halo of M200m = ``m_msun``."""
    return (m_msun / ((4.0 * np.pi / 3.0) * RHO_MEAN)) ** (1.0 / 3.0)


@lru_cache(maxsize=8)
def _mass_tables(z0: float, z1: float, lm0: float, lm1: float):
    """log10 of M_vir, M500c, M200c [Msun] and R_vir, R500c [proper Mpc] on a (z, log10 M200m) grid."""
    from colossus.halo import mass_adv

    zg = np.linspace(z0, z1, max(2, int(math.ceil((z1 - z0) / 0.05)) + 1))
    lmg = np.linspace(lm0, lm1, max(2, int(math.ceil((lm1 - lm0) / 0.05)) + 1))
    mh = 10**lmg * H  # Msun/h
    keys = ("lmvir", "lrvir", "lm500", "lr500", "lm200c")
    out = {k: np.empty((zg.size, lmg.size)) for k in keys}
    with colossus_cosmology(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Duffy 2008 beyond its fitted z range: smooth
        for i, z in enumerate(zg):
            mv, rv, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200m", "vir", c_model=CONCENTRATION_MODEL)
            m5, r5, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200m", "500c", c_model=CONCENTRATION_MODEL)
            m2, _, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200m", "200c", c_model=CONCENTRATION_MODEL)
            out["lmvir"][i] = np.log10(mv / H)
            out["lrvir"][i] = np.log10(rv / H / 1e3)  # physical kpc/h -> proper Mpc
            out["lm500"][i] = np.log10(m5 / H)
            out["lr500"][i] = np.log10(r5 / H / 1e3)
            out["lm200c"][i] = np.log10(m2 / H)
    return zg, lmg, out


def convert_m200m(z: np.ndarray, m200m: np.ndarray) -> dict[str, np.ndarray]:
    """M_vir, M500c, M200c [Msun] and R_vir, R500c [proper Mpc] of halos of M200m [Msun] at redshift z (colossus,
    Duffy 2008 concentrations, NFW; bilinear in (z, log10 M) on a 0.05 x 0.05 grid: error ~1e-4)."""
    z = np.asarray(z, dtype=float)
    m = np.asarray(m200m, dtype=float)
    names = (("lmvir", "m_vir"), ("lrvir", "r_vir"), ("lm500", "m500"), ("lr500", "r500"), ("lm200c", "m200c"))
    if z.size == 0:
        return {name: np.empty(0) for _, name in names}
    lm = np.log10(m)
    z = np.minimum(z, 20.0)  # beyond any halo catalogue (Websky stops at z = 4.6); keeps the grid small
    z0 = max(0.0, math.floor(float(z.min()) / 0.05) * 0.05 - 0.05)
    z1 = math.ceil(float(z.max()) / 0.05) * 0.05 + 0.05
    lm0 = math.floor(float(lm.min()) / 0.05) * 0.05 - 0.05
    lm1 = math.ceil(float(lm.max()) / 0.05) * 0.05 + 0.05
    zg, lmg, tabs = _mass_tables(round(z0, 4), round(z1, 4), round(lm0, 4), round(lm1, 4))
    # one set of bilinear weights on the uniform grid for all five tables
    fz = np.clip((z - zg[0]) / (zg[1] - zg[0]), 0, zg.size - 1 - 1e-9)
    fm = np.clip((lm - lmg[0]) / (lmg[1] - lmg[0]), 0, lmg.size - 1 - 1e-9)
    iz, im = fz.astype(np.int64), fm.astype(np.int64)
    wz, wm = fz - iz, fm - im
    res = {}
    for key, name in names:
        t = tabs[key]
        v = ((1 - wz) * ((1 - wm) * t[iz, im] + wm * t[iz, im + 1])
             + wz * ((1 - wm) * t[iz + 1, im] + wm * t[iz + 1, im + 1]))
        res[name] = 10**v
    return res
