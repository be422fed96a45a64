"""The injections of a selection-function run (:mod:`szviewer.mf.selection`): the run's settings, the injected
clusters' kinds and parameters (beta models of known y0 and theta_c; Arnaud et al. 2010 profiles of known M500 and
z), their positions on a randomly offset grid clear of real candidates, and the Compton-y map they paint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from szviewer.mf.profiles import beta_profile
from szviewer.mf.settings import MFSettings


@dataclass(frozen=True)
class InjectionSettings:
    """An injection run: ``n`` clusters with seed ``seed``; a fraction ``arnaud_frac`` Arnaud profiles
    (M500 log-uniform in ``m500_range_msun``, z uniform in ``z_range``), the rest beta models (theta_c uniform in
    ``theta_c_range_arcmin``, default the filter's range; y0 = S/N x sigma(theta_c) with the S/N log-uniform in
    ``snr_range``). Placement: ``spacing_arcmin`` apart, and outside ``avoid_arcmin`` + max(``avoid_core_radii``
    theta_c + the widest beam's FWHM, the radius of its group above threshold) of every real candidate of S/N >=
    ``avoid_snr`` (its filtered profile, and where groups would merge: a deep
    survey holds tens of real clusters per deg^2 (spt3g-paper depths, synthetic sky: 38 per deg^2 at S/N >= 5), so
    a fixed wide radius would leave no room); matching within ``match_arcmin``; candidates searched in
    ``patch_arcmin`` around each."""

    n: int = 1000
    seed: int = 0
    arnaud_frac: float = 0.3
    spacing_arcmin: float = 90.0
    avoid_arcmin: float = 2.0
    avoid_core_radii: float = 4.0
    avoid_snr: float = 5.0
    snr_range: tuple[float, float] = (1.5, 40.0)
    theta_c_range_arcmin: tuple[float, float] | None = None
    m500_range_msun: tuple[float, float] = (1e14, 1.2e15)
    z_range: tuple[float, float] = (0.1, 1.5)
    match_arcmin: float = 1.0
    patch_arcmin: float = 12.0

    def __post_init__(self) -> None:
        for name in ("snr_range", "m500_range_msun", "z_range", "theta_c_range_arcmin"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        if self.n < 1:
            raise ValueError("inject at least one cluster")
        if not 0.0 <= self.arnaud_frac <= 1.0:
            raise ValueError("arnaud_frac must lie in [0, 1]")
        if self.spacing_arcmin <= 2 * self.match_arcmin or self.patch_arcmin <= self.match_arcmin:
            raise ValueError("need spacing_arcmin > 2 match_arcmin and patch_arcmin > match_arcmin")
        for name in ("snr_range", "m500_range_msun", "z_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


INJECTION_DTYPE = np.dtype([
    ("x", "f8"), ("y", "f8"),                 # position in the map [pixel] (column, row)
    ("round", "i4"), ("kind", "U6"),          # injection round; 'beta' or 'arnaud'
    ("y0", "f8"),                             # central Compton y injected
    ("theta_c_arcmin", "f8"),                 # beta core radius (NaN for Arnaud)
    ("m500_msun", "f8"), ("z", "f8"),         # Arnaud mass and redshift (NaN for beta)
    ("theta500_arcmin", "f8"),                # Arnaud angular R500 (NaN for beta)
    ("snr_target", "f8"),                     # beta: the S/N asked for (y0 = snr_target x sigma)
])


def _r500_mpc(m500_msun: np.ndarray, z: np.ndarray) -> np.ndarray:
    """R500 [Mpc] of M500 [Msun] at z: M500 = (4 pi / 3) 500 rho_c(z) R500^3."""
    from astropy import units as u

    from szviewer.sky.cosmology import astropy_cosmology

    rho = astropy_cosmology().critical_density(np.asarray(z, dtype=float)).to_value(u.Msun / u.Mpc**3)
    return (3.0 * np.asarray(m500_msun, dtype=float) / (4.0 * np.pi * 500.0 * rho)) ** (1.0 / 3.0)


def arnaud_parameters(m500_msun, z) -> tuple[np.ndarray, np.ndarray]:
    """(central y0, theta500 [arcmin]) of Arnaud et al. 2010 clusters (no scatter), truncated at 5 R500."""
    from szviewer.sky import pressure

    m500 = np.asarray(m500_msun, dtype=float)
    z = np.asarray(z, dtype=float)
    r500 = _r500_mpc(m500, z)
    _, i_tab = pressure.projected_table(pressure.ArnaudProfile())
    return pressure.y_central_scale(m500, r500, z) * i_tab[0], pressure.theta500_arcmin(r500, z)


def draw_parameters(rng: np.random.Generator, n: int, inj: InjectionSettings,
                    settings: MFSettings) -> np.ndarray:
    """Kinds and parameters of ``n`` injections (positions and rounds left 0; y0 of beta clusters set later from
    the filter's noise at their position)."""
    out = np.zeros(n, dtype=INJECTION_DTYPE)
    arn = rng.random(n) < inj.arnaud_frac
    out["kind"] = np.where(arn, "arnaud", "beta")
    lo, hi = inj.theta_c_range_arcmin or (min(settings.theta_c_arcmin), max(settings.theta_c_arcmin))
    out["theta_c_arcmin"] = np.where(arn, np.nan, rng.uniform(lo, hi, n))
    out["snr_target"] = np.where(arn, np.nan, np.exp(rng.uniform(*np.log(inj.snr_range), n)))
    m = np.exp(rng.uniform(*np.log(inj.m500_range_msun), n))
    z = rng.uniform(*inj.z_range, n)
    out["m500_msun"] = np.where(arn, m, np.nan)
    out["z"] = np.where(arn, z, np.nan)
    out["y0"] = np.nan
    out["theta500_arcmin"] = np.nan
    if arn.any():
        y0, th = arnaud_parameters(m[arn], z[arn])
        out["y0"][arn] = y0
        out["theta500_arcmin"][arn] = th
    return out


def plan_positions(rng: np.random.Generator, n: int, map_shape: tuple[int, int], pixel_arcmin: float,
                   usable: Callable[[np.ndarray, np.ndarray], np.ndarray], avoid_xy: np.ndarray,
                   inj: InjectionSettings, avoid_radius_arcmin: np.ndarray | None = None,
                   max_empty_rounds: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, round) of ``n`` injection positions [map pixels]: per round a square grid of ``spacing_arcmin`` with a
    random offset, keeping the points where ``usable(x, y)`` and outside ``avoid_radius_arcmin`` (default
    ``avoid_arcmin``) of every ``avoid_xy`` (k, 2) point; rounds until ``n`` (the last round's points at random)."""
    from scipy.spatial import cKDTree

    ny, nx = map_shape
    step = inj.spacing_arcmin / pixel_arcmin
    avoid_xy = np.asarray(avoid_xy, dtype=float).reshape(-1, 2)
    radius = (np.full(len(avoid_xy), inj.avoid_arcmin) if avoid_radius_arcmin is None
              else np.asarray(avoid_radius_arcmin, dtype=float)) / pixel_arcmin
    tree = cKDTree(avoid_xy) if len(avoid_xy) else None
    rmax = float(radius.max()) if len(radius) else 0.0
    xs, ys, rs = [], [], []
    total, r, empty = 0, 0, 0
    while total < n:
        ox, oy = rng.uniform(0.0, step, 2)
        gy, gx = np.meshgrid(np.arange(oy, ny, step), np.arange(ox, nx, step), indexing="ij")
        gx, gy = gx.ravel(), gy.ravel()
        keep = usable(gx, gy)
        if tree is not None and keep.any():
            for i, hits in enumerate(tree.query_ball_point(np.c_[gx, gy], rmax)):
                if hits and keep[i]:
                    h = np.asarray(hits)
                    keep[i] = bool(np.all(np.hypot(*(avoid_xy[h] - (gx[i], gy[i])).T) > radius[h]))
        gx, gy = gx[keep], gy[keep]
        if not gx.size:
            empty += 1
            if empty >= max_empty_rounds:
                break
            continue
        if total + gx.size > n:
            pick = np.sort(rng.choice(gx.size, n - total, replace=False))
            gx, gy = gx[pick], gy[pick]
        xs.append(gx)
        ys.append(gy)
        rs.append(np.full(gx.size, r, dtype=np.int32))
        total += gx.size
        r += 1
    if not xs:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int32)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(rs)


def paint_y(shape: tuple[int, int], inj: np.ndarray, x: np.ndarray, y: np.ndarray, pixel_arcmin: float,
            settings: MFSettings) -> np.ndarray:
    """Compton-y map (ny, nx) float64 of injections at tile pixel positions (x, y): beta models truncated at the
    filter's ``truncate_theta_c`` core radii, Arnaud profiles at 5 R500, sampled at pixel centres (as the filter's
    templates are)."""
    from szviewer.sky import painting, pressure

    out = np.zeros(shape)
    beta = inj["kind"] == "beta"
    if beta.any():
        t = np.linspace(0.0, settings.truncate_theta_c, 2001)
        tab = beta_profile(t, 1.0, settings.beta, settings.truncate_theta_c + 1e-9)
        sc = inj["theta_c_arcmin"][beta] / pixel_arcmin
        out += painting.paint_radial(shape, x[beta], y[beta], settings.truncate_theta_c * sc, t, tab, sc,
                                     [inj["y0"][beta]])[0]
    arn = ~beta
    if arn.any():
        x_tab, i_tab = pressure.projected_table(pressure.ArnaudProfile())
        sc = inj["theta500_arcmin"][arn] / pixel_arcmin
        out += painting.paint_radial(shape, x[arn], y[arn], 5.0 * sc, x_tab, i_tab / i_tab[0], sc,
                                     [inj["y0"][arn]])[0]
    return out


__all__ = ["INJECTION_DTYPE", "InjectionSettings", "arnaud_parameters", "draw_parameters", "paint_y",
           "plan_positions"]
