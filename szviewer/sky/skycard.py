"""The sky card: power of each component at ell = 3000 and the density of label-qualifying halos,
beside the values of Sehgal et al. (2010) quoted in SCIENCE.md, so a user sees at once whether a
synthetic sky is like the one DeepSZ was trained on.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from szviewer.sky import painting, spectra
from szviewer.sky.bands import db_dt_jy_sr_per_uk
from szviewer.sky.tilestore import TileWriter

ELL_BIN = (2800.0, 3200.0)

#: Sehgal et al. 2010 references (SCIENCE.md sections 3 and 6). 'target' rows are held to 20%.
REFERENCE = {
    "cmb": {"value": {90: 30.0, 148: 30.0, 219: 30.0}, "target": True,
            "note": "lensed CMB D_3000 (SCIENCE.md; the shipped CAMB table gives 26.2)"},
    "tsz": {"value": {90: 19.6, 148: 7.3}, "target": True, "note": "Sehgal maps"},
    "ksz": {"value": {90: 2.05, 148: 2.05, 219: 2.05}, "target": True,
            "note": "Sehgal kSZ template [unverified, from memory]"},
    "sources_lt_2mjy": {"value": {90: 2.7, 148: 8.8, 219: 71.0}, "target": False,
                        "note": "paper's MF model of Sehgal's sources (section 2.1)"},
    "dust": {"value": {}, "target": False, "note": "no reference [unverified]"},
}
#: Sehgal's octant: 14,989 positive cutouts over 5,157 deg^2 (paper section 1.2).
POSITIVE_DENSITY_REF = 14989 / 5157.0


def _d3000(m: np.ndarray, pixel_arcmin: float) -> float:
    return float(spectra.binned_dl(m, pixel_arcmin, np.array(ELL_BIN))[0])


def measure_tile(writer: TileWriter, srcs: Table, pixel_arcmin: float) -> dict[str, dict[int, float]]:
    """D_3000 [uK^2] of each component in each band, measured on one simulated tile.

    Band-independent templates are measured once and scaled. For sources, those brighter than 2 mJy at
    148 GHz are left out, as the paper's matched filter subtracts them and its model describes the rest.
    """
    bands = writer.bands
    out: dict[str, dict[int, float]] = {}
    for name in ("cmb", "tsz", "ksz", "dust"):
        terms = writer.terms.get(name, [])
        if len(terms) == 1 and terms[0][0].shape[0] == 1:
            base = _d3000(terms[0][0][0], pixel_arcmin)
            out[name] = {b: base * float(terms[0][1][k]) ** 2 for k, b in enumerate(bands)}
        else:
            out[name] = {b: _d3000(_band(terms, k), pixel_arcmin) for k, b in enumerate(bands)}
    # sources fainter than 2 mJy at 148 GHz: faint templates + repainted faint discrete sources
    tile = writer.tile
    faint = srcs[np.asarray(srcs["flux_148"]) < 2.0]
    x, y = tile.world_to_pix(np.asarray(faint["ra"]), np.asarray(faint["dec"]))
    omega_pix = (pixel_arcmin * np.pi / 180 / 60) ** 2
    flux = np.column_stack([np.asarray(faint[f"flux_{b}"]) * 1e-3 for b in bands])
    to_uk = 1.0 / (omega_pix * db_dt_jy_sr_per_uk(np.asarray(bands, dtype=float)))
    ok = np.isfinite(x)
    pts = painting.paint_points(tile.shape, x[ok], y[ok], flux[ok] * to_uk)
    tot = {}
    for k, b in enumerate(bands):
        m = pts[k].astype(np.float64)
        for name in ("ir", "radio"):
            for data, scale in writer.terms.get(name, []):
                if data.shape[0] == 1:
                    m = m + float(scale[k]) * data[0]
        tot[b] = _d3000(m, pixel_arcmin)
    out["sources_lt_2mjy"] = tot
    return out


def _band(terms, k: int) -> np.ndarray:
    return sum(float(s[k]) * d[min(k, d.shape[0] - 1)] for d, s in terms)


def make_card(per_tile: list[dict], halos: Table, area_deg2: float, bands, m_vir_calibration: float = 1.0) -> dict:
    """Average the tiles' measurements and count positive halos in the footprint."""
    comps = {}
    for name, ref in REFERENCE.items():
        rows = []
        for b in bands:
            vals = [t[name][b] for t in per_tile if name in t]
            meas = float(np.mean(vals)) if vals else float("nan")
            r = ref["value"].get(b)
            rows.append({"band": int(b), "d3000_uk2": round(meas, 3), "sehgal": r,
                         "ratio": None if not r else round(meas / r, 3),
                         "within_20pct": None if (not r or not ref["target"]) else bool(abs(meas / r - 1) <= 0.2)})
        comps[name] = {"note": ref["note"], "held_to_20pct": ref["target"], "bands": rows}
    inside = np.asarray(halos["in_footprint"]) if "in_footprint" in halos.colnames else np.ones(len(halos), bool)
    q = inside & (np.asarray(halos["m_vir"]) >= 2e14) & (np.asarray(halos["z"]) >= 0.25)
    dens = float(q.sum()) / area_deg2
    from szviewer.sky.halos import expected_positive_density_per_deg2

    model = expected_positive_density_per_deg2(m_vir_min=2e14 / m_vir_calibration)
    return {
        "ell_bin": list(ELL_BIN),
        "tiles_measured": len(per_tile),
        "components": comps,
        "positive_halos": {"count": int(q.sum()), "area_deg2": round(area_deg2, 3),
                           "per_deg2": round(dens, 3), "sehgal_per_deg2": round(POSITIVE_DENSITY_REF, 3),
                           "poisson_error_per_deg2": round(float(np.sqrt(max(q.sum(), 1))) / area_deg2, 3),
                           "model_expectation_per_deg2": round(model, 3),
                           "ratio": round(dens / POSITIVE_DENSITY_REF, 3),
                           "within_20pct": bool(abs(dens / POSITIVE_DENSITY_REF - 1) <= 0.2)},
        "halos_total": len(halos),
        "halo_mass_range_msun": [float(np.min(halos["m_vir"])) if len(halos) else None,
                                 float(np.max(halos["m_vir"])) if len(halos) else None],
    }


def format_card(card: dict) -> str:
    """The sky card as a text table."""
    lines = [f"Sky card: D_ell at ell {card['ell_bin'][0]:.0f}-{card['ell_bin'][1]:.0f} [uK^2] "
             f"(measured on {card['tiles_measured']} tile(s)) beside Sehgal et al. 2010",
             f"{'component':<18}{'band':>6}{'this sky':>11}{'Sehgal':>9}{'ratio':>8}  check"]
    for name, c in card["components"].items():
        for r in c["bands"]:
            ref = "-" if r["sehgal"] is None else f"{r['sehgal']:.2f}"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
            chk = {True: "ok (<=20%)", False: "OFF by >20%", None: ""}[r["within_20pct"]]
            lines.append(f"{name:<18}{r['band']:>6}{r['d3000_uk2']:>11.2f}{ref:>9}{ratio:>8}  {chk}")
    p = card["positive_halos"]
    chk = "ok (<=20%)" if p["within_20pct"] else "OFF by >20%"
    lines.append(f"positive halos (M_vir >= 2e14 Msun, z >= 0.25): {p['count']} in {p['area_deg2']:.1f} deg^2 = "
                 f"{p['per_deg2']:.2f} +- {p['poisson_error_per_deg2']:.2f} (Poisson) per deg^2; "
                 f"Sehgal {p['sehgal_per_deg2']:.2f}; ratio {p['ratio']:.2f}  {chk}")
    lines.append(f"  (this generator's expectation: {p['model_expectation_per_deg2']:.2f} per deg^2; "
                 f"small areas scatter by the Poisson error)")
    return "\n".join(lines)


