"""A synthetic millimetre sky like Sehgal et al. (2010), offline and seeded (SCIENCE.md section 6).

Components, kept separately per tile, in uK_CMB at 90/148/219 GHz:

- ``cmb``: lensed CMB, Gaussian, from the CAMB table in ``resources/`` (same in every band);
- ``tsz``: halos from the Tinker 2008 mass function with Arnaud 2010 pressure profiles (lognormal
  scatter in Y), stored as a Compton-y map times the tSZ spectrum;
- ``ksz``: -tau v_r / c of the same halos (isothermal, Arnaud 2005 M-T) plus a Gaussian background;
- ``ir``: dusty galaxies (discrete above 0.3 mJy, some inside massive halos) plus the Poisson power
  of fainter ones and the clustered CIB as a Gaussian field with the dusty spectrum;
- ``radio``: radio galaxies (discrete above 0.05 mJy, some at the centres of massive halos) plus
  their faint Poisson power;
- ``dust``: Galactic dust, C_ell ~ ell^-2.42, amplitude rising toward the Galactic plane.

Everything is seen through an instrument (``resources/instruments/*.toml``, :mod:`szviewer.sky.instruments`):
its bands' effective frequencies set the spectra, its beams are applied to every component, its pixel size is
the tiles', and its noise (white, atmospheric 1/f correlated between bands, inhomogeneous depth) is realised
once per tile from the sky's seed and added to the sum of the components to make the tile's observed map
(:mod:`szviewer.sky.tiledsky`), which every consumer reads. The default instrument, ``spt3g-paper``, is the
paper's: white 2.8/2.6/6.6 uK-arcmin at 90/148/219 GHz, no beam, 0.25' pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack

from szviewer.sky import painting, pressure, sources, spectra
from szviewer.sky.bands import H_PLANCK, K_BOLTZMANN, db_dt_jy_sr_per_uk, tsz_uk_per_y
from szviewer.sky.beams import Beam
from szviewer.sky.halos import HaloSettings, draw_halos, region_solid_angle_sr, uniform_positions
from szviewer.sky.instrument_presets import load_instrument
from szviewer.sky.instruments import Instrument
from szviewer.sky.tiles import Footprint, Tile, make_tiles
from szviewer.sky.tilestore import TileWriter

COMPONENTS = ("cmb", "tsz", "ksz", "ir", "radio", "dust")


@dataclass
class SimulationSettings:
    """Everything that defines a synthetic sky; the defaults follow SCIENCE.md section 6."""

    seed: int = 0
    area_deg2: float = 100.0
    octant: bool = False
    #: The instrument: a preset name (``resources/instruments/NAME.toml``), a path to a TOML file of the same
    #: form, or an :class:`~szviewer.sky.instruments.Instrument`; it sets the bands, their effective
    #: frequencies, the beams, the noise and the pixel size.
    instrument: Instrument | str = "spt3g-paper"
    tile_deg: float = 10.0
    margin_arcmin: float = 15.0
    #: Gaussian beam FWHM per band [arcmin] replacing the instrument's (``--beam-fwhm``); empty = the instrument's.
    beam_fwhm_arcmin: dict[int, float] = field(default_factory=dict)
    m200c_min_msun: float = 2e13
    #: Tinker 2008 predicts 3.49 halos per deg^2 with M_vir >= 2e14 Msun and z >= 0.25 (SCIENCE.md measured
    #: 3.5), 20% above the 2.90 of Sehgal's octant, whose virial masses come from FoF groups. We scale the
    #: truth catalogue's M_vir (and R_vir as M^1/3) by this factor, which brings the expected density to
    #: 2.90; the SZ signals are computed from M500 and are not affected.
    m_vir_calibration: float = 0.93
    halo_margin_deg: float = 0.5
    tsz_scatter_ln: float = 0.2
    tsz_truncate_r500: float = 5.0
    ksz_velocity_sigma_km_s: float = 300.0
    #: Gaussian kSZ background, flat D_ell [uK^2]. SCIENCE.md's recipe gives 2.0 for the background; the
    #: painted halos add about 0.2 at ell = 3000, so 1.85 keeps the total near Sehgal's 2.05 [unverified].
    ksz_background_d3000: float = 1.85
    #: Clustered CIB at 150 GHz, D_3000 [uK^2]. SCIENCE.md quotes 5.9 for the real sky; with it the
    #: sub-2 mJy source power at 148 GHz would be 14 uK^2, far above the 8.8 that the paper measured on
    #: Sehgal's maps, so we keep 2.0 (see sources.DUSTY_AMPLITUDE_DEX).
    cib_clustered_d3000_150: float = 2.0
    cib_clustered_slope: float = 0.8
    #: Galactic dust at 148 GHz, D_ell at ell = 3000 [uK^2] at |b| = 60 deg, C_ell ~ ell^-2.42;
    #: amplitude scales as 1/sin|b| (capped at |b| = 5 deg). [unverified] level for Sehgal's octant.
    dust_d3000_148: float = 0.3
    #: Dust in uK_CMB per uK_CMB at 148 GHz, per band (SCIENCE.md's rounded values); other bands take the modified
    #: black body (beta 1.53, T 19.6 K), which gives 0.361 and 2.954 at 90 and 219 GHz.
    dust_ratio: dict[int, float] = field(default_factory=lambda: {90: 0.36, 148: 1.0, 219: 2.95})
    radio_in_halo_prob: float = 0.3
    ir_members_per_2e14: float = 1.0
    in_halo_min_mvir: float = 1e14

    def __post_init__(self):
        if not isinstance(self.instrument, Instrument):
            self.instrument = load_instrument(self.instrument)
        unknown = [b for b in self.beam_fwhm_arcmin if b not in self.instrument.band_ids]
        if unknown:
            from szviewer.errors import InputError

            raise InputError(None, f"--beam-fwhm for band(s) {unknown}: the instrument {self.instrument.name!r} has "
                                   f"bands {list(self.instrument.band_ids)}")

    @property
    def bands(self) -> tuple[int, ...]:
        return self.instrument.band_ids

    @property
    def freqs_ghz(self) -> tuple[float, ...]:
        return self.instrument.freqs_ghz

    @property
    def pixel_arcmin(self) -> float:
        return self.instrument.pixel_arcmin

    @property
    def noise_uk_arcmin(self) -> dict[int, float]:
        return self.instrument.white_uk_arcmin

    def beams(self) -> list[Beam]:
        """Each band's beam: the ``beam_fwhm_arcmin`` override where given, else the instrument's."""
        return [Beam.gaussian(self.beam_fwhm_arcmin[b.band]) if b.band in self.beam_fwhm_arcmin else b.beam
                for b in self.instrument.bands]

    def dust_ratios(self) -> np.ndarray:
        return np.array([self.dust_ratio.get(int(b), dust_ratio_mbb(f)) for b, f in zip(self.bands, self.freqs_ghz,
                                                                                      strict=True)])

    def footprint(self) -> Footprint:
        return Footprint.octant() if self.octant else Footprint.square(self.area_deg2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["instrument"] = self.instrument.to_dict()
        d["beam_fwhm_arcmin"] = {str(k): v for k, v in self.beam_fwhm_arcmin.items()}
        d["dust_ratio"] = {str(k): v for k, v in self.dust_ratio.items()}
        # what the instrument implies, for readers of the manifest
        d["bands"] = list(self.bands)
        d["freqs_ghz"] = list(self.freqs_ghz)
        d["pixel_arcmin"] = self.pixel_arcmin
        d["noise_uk_arcmin"] = {str(k): v for k, v in self.noise_uk_arcmin.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimulationSettings:
        d = dict(d)
        for key in ("bands", "freqs_ghz", "pixel_arcmin", "noise_uk_arcmin"):
            d.pop(key, None)
        for key in ("beam_fwhm_arcmin", "dust_ratio"):
            d[key] = {int(k): float(v) for k, v in d.get(key, {}).items()}
        inst = d.get("instrument", "spt3g-paper")
        d["instrument"] = Instrument.from_dict(inst) if isinstance(inst, dict) else inst
        return cls(**d)


def dust_ratio_mbb(freq_ghz: float, beta: float = 1.53, t_dust_k: float = 19.6, ref_ghz: float = 148.0) -> float:
    """Galactic dust in uK_CMB relative to ``ref_ghz``: a modified black body nu^beta B_nu(T) over dB/dT."""
    def mbb_uk(nu):
        x = H_PLANCK * nu * 1e9 / (K_BOLTZMANN * t_dust_k)
        return (nu * 1e9) ** (3 + beta) / math.expm1(x) / float(db_dt_jy_sr_per_uk(nu))
    return mbb_uk(float(freq_ghz)) / mbb_uk(ref_ghz)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream for each (purpose, tile, component) so tiles can be made in any order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)))


# ----------------------------------------------------------------------------------------------- catalogs

def make_catalogs(settings: SimulationSettings) -> tuple[Table, Table]:
    """Truth halos and point sources over the footprint plus a margin (so edges are painted whole).

    Halos: z, ra, dec, m200c, m_vir, r_vir, m500, r500, theta500_arcmin, y0 (central y, with scatter),
    y_int_arcmin2 (Y inside 5 R500), v_r_km_s, in_footprint, halo_id. Sources: ra, dec, flux_<band> [mJy],
    population, host_halo.
    """
    fp = settings.footprint()
    region = fp.expanded(settings.halo_margin_deg)
    rng = _rng(settings.seed, 0, 0)
    halos = draw_halos(rng, region.box, HaloSettings(m200c_min_msun=settings.m200c_min_msun))
    n = len(halos)
    halos["m_vir"] *= settings.m_vir_calibration
    halos["r_vir"] *= settings.m_vir_calibration ** (1 / 3)
    z = halos["z"].data
    m500 = halos["m500"].data
    r500 = halos["r500"].data
    scatter = np.exp(settings.tsz_scatter_ln * rng.standard_normal(n))
    x_tab, i_tab = pressure.projected_table(pressure.ArnaudProfile(truncate_r500=settings.tsz_truncate_r500))
    amp = pressure.y_central_scale(m500, r500, z) * scatter
    halos["halo_id"] = np.arange(n, dtype=np.int64)
    halos["theta500_arcmin"] = pressure.theta500_arcmin(r500, z) * u.arcmin
    halos["y0"] = amp * i_tab[0]
    halos["y_int_arcmin2"] = pressure.y_cylinder_arcmin2(m500, r500, z, settings.tsz_truncate_r500) * scatter
    halos["y_int_arcmin2"].unit = u.arcmin**2
    halos["v_r_km_s"] = rng.normal(0.0, settings.ksz_velocity_sigma_km_s, n) * u.km / u.s
    halos["in_footprint"] = fp.contains(halos["ra"].data, halos["dec"].data)
    halos.meta.update({"FOOTPRNT": " ".join(f"{v:.6f}" for v in fp.box), "SEED": settings.seed,
                       "PROFILE": "Arnaud et al. 2010 GNFW, truncated at 5 R500, lognormal scatter"})
    srcs = _make_sources(settings, halos, region)
    return halos, srcs


def _make_sources(settings: SimulationSettings, halos: Table, region: Footprint) -> Table:
    rng = _rng(settings.seed, 0, 1)
    bands, freqs = settings.bands, settings.freqs_ghz
    omega = region_solid_angle_sr(*region.box)
    parts = []
    for pop in (sources.RADIO, sources.DUSTY):
        nsrc = rng.poisson(sources.mean_density_per_sr(pop) * omega)
        ra, dec = uniform_positions(rng, nsrc, region.box)
        s_ref = sources.draw_fluxes(rng, pop, nsrc)
        index = rng.normal(pop.index_mean, pop.index_sigma, nsrc)
        parts.append(sources.source_table(ra, dec, sources.band_fluxes_mjy(pop, s_ref, index, freqs),
                                          pop.name, bands=bands))
    # sources inside massive halos (paper Fig. 2): radio AGN at the centre, dusty members within R_vir / 2
    host = np.nonzero(halos["m_vir"].data >= settings.in_halo_min_mvir)[0]
    if host.size:
        hr = halos[host]
        has_radio = rng.random(host.size) < settings.radio_in_halo_prob
        k = int(has_radio.sum())
        s_ref = sources.draw_fluxes(rng, sources.RADIO, k, s_min_jy=5e-4)
        index = rng.normal(sources.RADIO.index_mean, sources.RADIO.index_sigma, k)
        parts.append(sources.source_table(hr["ra"].data[has_radio], hr["dec"].data[has_radio],
                                          sources.band_fluxes_mjy(sources.RADIO, s_ref, index, freqs),
                                          "radio", host_halo=host[has_radio], bands=bands))
        n_mem = rng.poisson(settings.ir_members_per_2e14 * hr["m_vir"].data / 2e14)
        owner = np.repeat(np.arange(host.size), n_mem)
        if owner.size:
            da = pressure.astropy_cosmology().angular_diameter_distance(hr["z"].data[owner]).to_value(u.Mpc)
            rad_deg = np.rad2deg(0.5 * hr["r_vir"].data[owner] / da)
            r = rad_deg * np.sqrt(rng.random(owner.size))
            phi = rng.uniform(0, 2 * np.pi, owner.size)
            dec = hr["dec"].data[owner] + r * np.sin(phi)
            ra = hr["ra"].data[owner] + r * np.cos(phi) / np.cos(np.deg2rad(hr["dec"].data[owner]))
            s_ref = sources.draw_fluxes(rng, sources.DUSTY, owner.size)
            index = rng.normal(sources.DUSTY.index_mean, sources.DUSTY.index_sigma, owner.size)
            parts.append(sources.source_table(ra % 360, dec, sources.band_fluxes_mjy(sources.DUSTY, s_ref, index,
                                                                                     freqs),
                                              "ir", host_halo=host[owner], bands=bands))
    t = vstack(parts, metadata_conflicts="silent")
    t.meta = {"POPS": "radio (148 GHz counts, S ~ nu^-0.6), ir (143 GHz dusty counts, S ~ nu^3.45)"}
    return t


# ----------------------------------------------------------------------------------------------- one tile

def _sed_ratio_uk(index: float, nu_ref: float, bands) -> np.ndarray:
    """uK_CMB in each band per uK_CMB at ``nu_ref`` for a source spectrum S ~ nu^index."""
    nu = np.asarray(bands, dtype=float)
    return (nu / nu_ref) ** index * db_dt_jy_sr_per_uk(nu_ref) / db_dt_jy_sr_per_uk(nu)


def _galactic_dust_factor(ra: float, dec: float) -> float:
    from astropy.coordinates import SkyCoord

    b = abs(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").galactic.b.deg)
    return math.sin(math.radians(60.0)) / math.sin(math.radians(max(b, 5.0)))


def simulate_tile(settings: SimulationSettings, tile: Tile, halos: Table, srcs: Table,
                  beams: bool = True) -> TileWriter:
    """All components of one tile (noise excluded), as terms of a :class:`TileWriter`, seen through the
    instrument's beams (``beams=False``: the sky itself; :func:`apply_instrument_beams` adds them later)."""
    bands = settings.bands
    freqs = np.asarray(settings.freqs_ghz, dtype=float)
    shape = tile.shape
    pix = settings.pixel_arcmin
    w = TileWriter(tile, bands)
    seed = settings.seed

    def field_(comp_id: int, cl_of_ell):
        return spectra.gaussian_field(_rng(seed, 1, tile.index, comp_id), shape, pix, cl_of_ell)

    # CMB
    w.add("cmb", field_(0, lambda ell: spectra.dl_to_cl(ell, spectra.cmb_lensed_dl(ell))))

    # halos: tSZ (Compton y) and kSZ, painted within 5 R500
    x, y = tile.world_to_pix(halos["ra"].data, halos["dec"].data)
    th = halos["theta500_arcmin"].data
    rad = settings.tsz_truncate_r500 * th / pix
    inside = np.isfinite(x) & (x > -rad) & (x < tile.nx + rad) & (y > -rad) & (y < tile.ny + rad)
    hs = halos[inside]
    x_tab, i_tab = pressure.projected_table(pressure.ArnaudProfile(truncate_r500=settings.tsz_truncate_r500))
    amp_y = hs["y0"].data / i_tab[0]
    m500 = hs["m500"].data
    amp_k = amp_y * pressure.ksz_uk_per_y(m500, hs["z"].data, hs["v_r_km_s"].data)
    ymap, kmap = painting.paint_radial(shape, x[inside], y[inside], rad[inside], x_tab, i_tab,
                                       th[inside] / pix, [amp_y, amp_k])
    w.add("tsz", ymap.astype(np.float32), band_scale=tsz_uk_per_y(freqs))
    kbg = settings.ksz_background_d3000
    w.add("ksz", (kmap + field_(1, lambda ell: spectra.dl_to_cl(ell, np.full_like(ell, kbg)))).astype(np.float32))

    # point sources: discrete ones as delta functions of dT = S / (Omega_pix dB/dT)
    omega_pix = (pix * np.pi / 180 / 60) ** 2
    sx, sy = tile.world_to_pix(srcs["ra"].data, srcs["dec"].data)
    on = np.isfinite(sx) & (sx > -1) & (sx < tile.nx) & (sy > -1) & (sy < tile.ny)
    flux = np.column_stack([srcs[f"flux_{b}"].data * 1e-3 for b in bands])  # mJy -> Jy
    to_uk = 1.0 / (omega_pix * db_dt_jy_sr_per_uk(freqs))
    pops = srcs["population"]
    for comp_id, pop in ((2, sources.DUSTY), (3, sources.RADIO)):
        sel = on & (pops == pop.name)
        w.add(pop.name, painting.paint_points(shape, sx[sel], sy[sel], flux[sel] * to_uk[None, :]))
        # faint Poisson part (and, for dusty galaxies, the clustered CIB) as one Gaussian template at 148 GHz
        cl_faint = sources.faint_poisson_cl_uk2(pop, 148.0)
        if pop is sources.DUSTY:
            d0, slope = settings.cib_clustered_d3000_150, settings.cib_clustered_slope

            def cl_fn(ell, cl_faint=cl_faint, d0=d0, slope=slope):
                return cl_faint + spectra.dl_to_cl(ell, d0 * (np.maximum(ell, 1) / 3000.0) ** slope)
        else:
            def cl_fn(ell, cl_faint=cl_faint):
                return np.full_like(ell, cl_faint)
        w.add(pop.name, field_(comp_id, cl_fn), band_scale=_sed_ratio_uk(pop.index_mean, 148.0, freqs))

    # Galactic dust
    amp = settings.dust_d3000_148 * _galactic_dust_factor(tile.ra0, tile.dec0)

    def cl_dust(ell):
        ell = np.maximum(ell, 30.0)
        return spectra.dl_to_cl(ell, amp * (ell / 3000.0) ** (2 - 2.42))
    w.add("dust", field_(4, cl_dust), band_scale=settings.dust_ratios())
    if beams:
        apply_instrument_beams(w, settings)
    return w


def apply_instrument_beams(w: TileWriter, settings: SimulationSettings) -> None:
    """Convolve a tile's components with the instrument's beams (nothing for a beamless instrument)."""
    beams = settings.beams()
    if any(b.is_table or b.fwhm_arcmin > 0 for b in beams):
        _apply_beams(w, beams, settings.pixel_arcmin)


def _apply_beams(w: TileWriter, beams: list[Beam], pixel_arcmin: float) -> None:
    """Convolve every component with each band's beam (B_ell); terms become per-band maps."""
    ell = spectra.ell_grid(*w.tile.shape, pixel_arcmin)
    nb = len(beams)
    bell = [None if not (b.is_table or b.fwhm_arcmin > 0) else b(ell) for b in beams]
    for name, terms in list(w.terms.items()):
        full = np.zeros((nb,) + w.tile.shape, dtype=np.float32)
        for data, scale in terms:
            for b in range(nb):
                full[b] += np.float32(scale[b]) * data[min(b, data.shape[0] - 1)]
        for b in range(nb):
            if bell[b] is not None:
                full[b] = np.fft.irfft2(np.fft.rfft2(full[b]) * bell[b], s=w.tile.shape)
        w.terms[name] = [(full, np.ones(nb))]


def tile_noise(settings: SimulationSettings, tile: Tile, hits: np.ndarray | None = None) -> np.ndarray:
    """The instrument noise of a tile, (nband, ny, nx) float32 uK: realised once from the sky's seed (stream
    (seed, 2, tile)) with the sky's depth pattern ``hits`` (:func:`tile_hits`; None = uniform). Added to the sum of
    the tile's components it makes the tile's observed map."""
    from szviewer.sky.noise_maps import realise_noise

    return realise_noise(settings.instrument, tile.shape, settings.pixel_arcmin, _rng(settings.seed, 2, tile.index),
                         hits)


def tile_hits(settings: SimulationSettings, tile: Tile) -> np.ndarray | None:
    """Relative hits (ny, nx) of the instrument's depth pattern on the tile's pixels (None: uniform depth)."""
    from szviewer.sky.noise_maps import relative_hits

    inst = settings.instrument
    if inst.depth_pattern == "uniform":
        return None
    yy, xx = np.mgrid[0:tile.ny, 0:tile.nx]
    ra, dec = tile.pix_to_world(xx.ravel(), yy.ravel())
    return relative_hits(inst, np.asarray(ra).reshape(tile.shape), np.asarray(dec).reshape(tile.shape),
                         settings.seed).astype(np.float32)


def tiles_for(settings: SimulationSettings) -> list[Tile]:
    return make_tiles(settings.footprint(), settings.pixel_arcmin, settings.tile_deg, settings.margin_arcmin)


ProgressFn = Callable[[int, int, str], None]


def simulate_tiles(settings: SimulationSettings, halos: Table, srcs: Table, tiles: list[Tile],
                   write: Callable[[Tile, TileWriter], None], progress: ProgressFn | None = None,
                   cancelled: Callable[[], bool] | None = None) -> dict:
    """Simulate and hand each tile to ``write``, one at a time (so memory stays one tile deep), before the beams:
    ``write`` measures the sky itself, then calls :func:`apply_instrument_beams`."""
    times = []
    for k, tile in enumerate(tiles):
        if cancelled is not None and cancelled():
            from szviewer.errors import Cancelled

            raise Cancelled("simulation cancelled")
        t0 = time.perf_counter()
        writer = simulate_tile(settings, tile, halos, srcs, beams=False)
        write(tile, writer)
        times.append(time.perf_counter() - t0)
        if progress is not None:
            progress(k + 1, len(tiles), f"tile {tile.index}")
    return {"tile_seconds": times}
