"""The inspector's description of a cutout, as HTML (no widgets)."""

from __future__ import annotations

import html

import numpy as np

from szviewer.gui.common import OUTCOME_TEXT_RGB, fmt
from szviewer.gui.scores import METHODS


def info_html(s, row: int, label: str) -> str:
    """The inspector's text about a cutout of the state ``s``: position, truth, halo, scores, MF detections,
    decisions (HTML)."""
    c = s.data.columns
    sc = s.data.scores
    a = []
    a.append(f"<b>cutout {int(c['id'][row])}</b> &nbsp; RA {c['ra'][row]:.4f}°, Dec {c['dec'][row]:.4f}° "
             f"&nbsp; split <b>{c['split'][row]}</b> &nbsp; truth: <b>{label}</b>")
    if c["label"][row] or (("n_halos" in c) and c["n_halos"][row] > 0):
        props = []
        for key, name, scale, unit in (("m_vir", "M_vir", 1e14, "×10¹⁴ M☉"), ("z", "z", 1, ""),
                                       ("m500", "M500", 1e14, "×10¹⁴ M☉"),
                                       ("theta500_arcmin", "θ500", 1, "′"), ("y0", "y0", 1, ""),
                                       ("offset_arcmin", "offset", 1, "′ from centre"),
                                       ("halo_id", "halo", 1, ""), ("n_halos", "halos in cell", 1, "")):
            if key in c:
                v = c[key][row]
                if isinstance(v, (np.floating, float)):
                    v = v / scale
                props.append(f"{name} <b>{fmt(v)}</b>{unit}")
        a.append("halo: " + ", ".join(props))
    scores = []
    if "mf_snr" in sc:
        scores.append(f"MF S/N <b>{fmt(sc['mf_snr'][row])}</b>")
    if "cnn_prob" in sc:
        scores.append(f"CNN p <b>{fmt(sc['cnn_prob'][row])}</b>")
    if s.has_method("PROD"):
        scores.append(f"rank product <b>{fmt(s.score('PROD')[row])}</b>")
    missing = [msg for m in ("MF", "CNN") if (msg := s.missing_message(m))]
    a.append("scores: " + (", ".join(scores) if scores else "<i>none</i>")
             + ("".join(f"<br><i>{html.escape(m)}</i>" for m in missing)))
    dets = sorted(s.detections_near(row), key=lambda e: -e["snr"])
    if dets:
        more = f" (+{len(dets) - 3} weaker)" if len(dets) > 3 else ""
        a.append("MF detections in the cutout: " + "; ".join(
            f"S/N {e['snr']:.1f}, θc {e['theta_c_arcmin']:.2g}′ at ({e['dx_arcmin']:+.1f}′ E, "
            f"{e['dy_arcmin']:+.1f}′ N)" for e in dets[:3]) + more)
    decisions = []
    for m in METHODS:
        o = s.outcome_of(m, row)
        if o is None:
            continue
        dec = "positive" if o in ("TP", "FP") else "negative"
        decisions.append(f"<span style='color: rgb{OUTCOME_TEXT_RGB[o]}'>{m}: {dec} ({o})</span>")
    if decisions:
        a.append("decisions: " + " &nbsp; ".join(decisions))
    return "<br>".join(a)

