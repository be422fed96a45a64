"""Halo catalogues drawn from the Tinker et al. (2008) mass function (SCIENCE.md section 6).

Halos are Poisson draws in (z, ln M200c) over a region of the sky, uniform on the sphere, then
converted to M_vir (Bryan & Norman 1998 overdensity), M500c and their radii in proper Mpc with
the Duffy et al. (2008) concentration model (colossus), which reproduces the M_vir/M200c and
M500c/M200c ratios quoted in SCIENCE.md. Masses in Msun (no h).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy import units as u
from astropy.table import Table

from szviewer.sky.cosmology import H, astropy_cosmology, colossus_cosmology


@dataclass(frozen=True)
class HaloSettings:
    """What halos to draw. Defaults paint the tSZ background down to M200c = 2e13 Msun."""

    m200c_min_msun: float = 2e13
    m200c_max_msun: float = 5e15
    z_min: float = 0.005
    z_max: float = 3.0
    n_z: int = 300
    n_m: int = 200


@lru_cache(maxsize=4)
def expected_counts_per_sr(settings: HaloSettings = HaloSettings()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected halo counts per steradian in (z, ln M200c) bins.

    Returns ``(z_edges, lnm_edges, counts)`` with ``counts`` of shape (n_z, n_m): Tinker 2008
    dn/dlnM [comoving Mpc^-3] times dV/dz/dOmega [Mpc^3 / sr], integrated over each bin with the
    midpoint rule.
    """
    from colossus.lss import mass_function

    colossus_cosmology()
    z_edges = np.linspace(settings.z_min, settings.z_max, settings.n_z + 1)
    lnm_edges = np.linspace(np.log(settings.m200c_min_msun), np.log(settings.m200c_max_msun), settings.n_m + 1)
    zc = 0.5 * (z_edges[1:] + z_edges[:-1])
    mc = np.exp(0.5 * (lnm_edges[1:] + lnm_edges[:-1]))
    dvdz = astropy_cosmology().differential_comoving_volume(zc).to_value(u.Mpc**3 / u.sr)
    dn = np.array([mass_function.massFunction(mc * H, z, mdef="200c", model="tinker08", q_out="dndlnM")
                   for z in zc]) * H**3  # comoving Mpc^-3
    counts = dn * dvdz[:, None] * np.diff(z_edges)[:, None] * np.diff(lnm_edges)[None, :]
    return z_edges, lnm_edges, counts


def region_solid_angle_sr(ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> float:
    """Solid angle of an RA/Dec box in steradians."""
    return np.deg2rad(ra_max - ra_min) * (np.sin(np.deg2rad(dec_max)) - np.sin(np.deg2rad(dec_min)))


def uniform_positions(rng: np.random.Generator, n: int, box: tuple[float, float, float, float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform on the sphere inside an RA/Dec box (deg); RA wrapped to [0, 360)."""
    ra_min, ra_max, dec_min, dec_max = box
    ra = rng.uniform(ra_min, ra_max, n) % 360.0
    s = rng.uniform(np.sin(np.deg2rad(dec_min)), np.sin(np.deg2rad(dec_max)), n)
    return ra, np.rad2deg(np.arcsin(s))


@lru_cache(maxsize=4)
def _conversion_tables(settings: HaloSettings = HaloSettings()):
    """Ratios M_vir/M200c, M500c/M200c and radii on a (z, log M) grid for interpolation."""
    from colossus.halo import mass_adv

    colossus_cosmology()
    zg = np.linspace(settings.z_min, settings.z_max, 40)
    lmg = np.linspace(np.log10(settings.m200c_min_msun) - 0.1, np.log10(settings.m200c_max_msun) + 0.1, 40)
    mh = 10**lmg * H  # Msun/h
    out = {k: np.empty((zg.size, lmg.size)) for k in ("lmvir", "lm500", "lrvir", "lr500")}
    for i, z in enumerate(zg):
        with warnings.catch_warnings():  # Duffy 2008 was fit to z <= 2; its extrapolation is smooth
            warnings.simplefilter("ignore", UserWarning)
            mv, rv, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200c", "vir", c_model="duffy08")
            m5, r5, _ = mass_adv.changeMassDefinitionCModel(mh, z, "200c", "500c", c_model="duffy08")
        out["lmvir"][i] = np.log10(mv / H)
        out["lm500"][i] = np.log10(m5 / H)
        out["lrvir"][i] = np.log10(rv / H / 1e3)  # physical kpc/h -> proper Mpc
        out["lr500"][i] = np.log10(r5 / H / 1e3)
    return zg, lmg, out


def convert_masses(z: np.ndarray, m200c: np.ndarray) -> dict[str, np.ndarray]:
    """M_vir, M500c [Msun] and R_vir, R500c [proper Mpc] of halos given z and M200c [Msun]."""
    from scipy.interpolate import RegularGridInterpolator

    zg, lmg, tabs = _conversion_tables()
    pts = np.column_stack([np.clip(z, zg[0], zg[-1]), np.clip(np.log10(m200c), lmg[0], lmg[-1])])
    res = {}
    for key, name in (("lmvir", "m_vir"), ("lm500", "m500"), ("lrvir", "r_vir"), ("lr500", "r500")):
        res[name] = 10 ** RegularGridInterpolator((zg, lmg), tabs[key])(pts)
    return res


def draw_halos(rng: np.random.Generator, box: tuple[float, float, float, float],
               settings: HaloSettings = HaloSettings()) -> Table:
    """Draw a halo catalogue in an RA/Dec box (deg): columns z, ra, dec, m200c, m_vir, r_vir, m500, r500.

    Poisson counts per (z, ln M) bin, values uniform within each bin; sorted by descending M_vir.
    """
    z_edges, lnm_edges, counts = expected_counts_per_sr(settings)
    omega = region_solid_angle_sr(*box)
    n = rng.poisson(counts * omega)
    iz, im = np.nonzero(n)
    reps = n[iz, im]
    iz = np.repeat(iz, reps)
    im = np.repeat(im, reps)
    total = iz.size
    z = z_edges[iz] + rng.random(total) * np.diff(z_edges)[iz]
    lnm = lnm_edges[im] + rng.random(total) * np.diff(lnm_edges)[im]
    m200c = np.exp(lnm)
    ra, dec = uniform_positions(rng, total, box)
    conv = convert_masses(z, m200c)
    t = Table()
    t["z"] = z
    t["ra"] = ra * u.deg
    t["dec"] = dec * u.deg
    t["m200c"] = m200c * u.Msun
    t["m_vir"] = conv["m_vir"] * u.Msun
    t["r_vir"] = conv["r_vir"] * u.Mpc
    t["m500"] = conv["m500"] * u.Msun
    t["r500"] = conv["r500"] * u.Mpc
    order = np.argsort(-t["m_vir"].value, kind="stable")
    t = t[order]
    t.meta["MASSFUNC"] = "Tinker et al. 2008 (colossus), M200c"
    t.meta["CONCMOD"] = "Duffy et al. 2008 (colossus)"
    return t


def expected_positive_density_per_deg2(m_vir_min: float = 2e14, z_min: float = 0.25) -> float:
    """Expected number of halos per deg^2 with M_vir >= ``m_vir_min`` and z >= ``z_min`` (labels' cut)."""
    z_edges, lnm_edges, counts = expected_counts_per_sr()
    zc = 0.5 * (z_edges[1:] + z_edges[:-1])
    mc = np.exp(0.5 * (lnm_edges[1:] + lnm_edges[:-1]))
    zz, mm = np.meshgrid(zc, mc, indexing="ij")
    mvir = convert_masses(zz.ravel(), mm.ravel())["m_vir"].reshape(zz.shape)
    sel = (mvir >= m_vir_min) & (zz >= z_min)
    return float(np.sum(counts[sel])) * (np.pi / 180) ** 2
