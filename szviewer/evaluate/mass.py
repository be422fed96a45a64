"""M500 of a candidate from its MF fit (y0, theta_c) and a redshift, through the Arnaud et al. (2010) pressure profile.

The MF fits a beta = 1 model, y(theta) = y0 / (1 + (theta / theta_c)^2), whose Compton Y inside an aperture theta is
Y_beta(< theta) = pi y0 theta_c^2 ln(1 + (theta / theta_c)^2) [arcmin^2]. The Arnaud et al. (2010) universal
pressure profile gives, for a mass M500 at redshift z, Y_A(< theta500; M500, z) (:func:`szviewer.sky.pressure.
y_cylinder_arcmin2`, the same profile and cosmology the synthetic skies are painted with; R500 from the critical
density at z, theta500 = R500 / D_A). The estimate is the M500 where the two agree inside theta500(M500, z):
Y_beta grows only logarithmically with the aperture while Y_A grows as M500^(5/3), so the root is unique; it is
found by bisection in log M over [1e13, 1e16] Msun (NaN outside, or without y0, theta_c or z). Compare with the
truth by :func:`mass_scatter`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["r500_mpc", "y_beta_arcmin2", "m500_from_y0", "mass_scatter"]


def r500_mpc(m500_msun, z) -> np.ndarray:
    """R500c [proper Mpc]: the radius enclosing 500 times the critical density at z (project cosmology)."""
    from astropy import units as u

    from szviewer.sky.cosmology import astropy_cosmology

    rho = astropy_cosmology().critical_density(np.asarray(z, float)).to_value(u.Msun / u.Mpc**3)
    return (3 * np.asarray(m500_msun, float) / (4 * np.pi * 500 * rho)) ** (1 / 3)


def y_beta_arcmin2(y0, theta_c_arcmin, theta_arcmin) -> np.ndarray:
    """Compton Y [arcmin^2] of the beta = 1 model inside an aperture of radius ``theta_arcmin``."""
    tc = np.asarray(theta_c_arcmin, float)
    return np.pi * np.asarray(y0, float) * tc**2 * np.log1p((np.asarray(theta_arcmin, float) / tc) ** 2)


def m500_from_y0(y0, theta_c_arcmin, z, *, iterations: int = 50, bounds=(1e13, 1e16)) -> np.ndarray:
    """M500 [Msun] of each candidate (module docstring); NaN where y0, theta_c or z is missing or non-positive,
    or where no M500 in ``bounds`` matches."""
    from szviewer.sky.pressure import theta500_arcmin, y_cylinder_arcmin2

    y0 = np.asarray(y0, float)
    tc = np.asarray(theta_c_arcmin, float)
    z = np.asarray(z, float)
    ok = np.isfinite(y0) & np.isfinite(tc) & np.isfinite(z) & (y0 > 0) & (tc > 0) & (z > 0)
    out = np.full(y0.shape, np.nan)
    if not ok.any():
        return out
    y0, tc, z = y0[ok], tc[ok], z[ok]

    def f(lm):
        m = 10**lm
        r = r500_mpc(m, z)
        th = theta500_arcmin(r, z)
        return y_beta_arcmin2(y0, tc, th) - y_cylinder_arcmin2(m, r, z, radius_r500=1.0)

    lo = np.full(y0.size, np.log10(bounds[0]))
    hi = np.full(y0.size, np.log10(bounds[1]))
    f_lo, f_hi = f(lo), f(hi)
    valid = (f_lo > 0) & (f_hi < 0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        pos = f(mid) > 0
        lo = np.where(pos, mid, lo)
        hi = np.where(pos, hi, mid)
    res = np.where(valid, 10 ** (0.5 * (lo + hi)), np.nan)
    out[ok] = res
    return out


def mass_scatter(estimate, truth) -> dict:
    """Bias (median) and scatter (std and 1.4826 MAD) of log10(estimate / truth) [dex] over rows where both exist."""
    e = np.asarray(estimate, float)
    t = np.asarray(truth, float)
    ok = np.isfinite(e) & np.isfinite(t) & (e > 0) & (t > 0)
    if not ok.any():
        return {"n": 0, "bias_dex": None, "scatter_dex": None, "scatter_mad_dex": None}
    d = np.log10(e[ok] / t[ok])
    med = float(np.median(d))
    return {"n": int(ok.sum()), "bias_dex": med, "mean_dex": float(d.mean()), "scatter_dex": float(d.std()),
            "scatter_mad_dex": float(1.4826 * np.median(np.abs(d - med)))}
