"""The true halos and the matched filter's detections around the cutouts (pure numpy, no Qt)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def halo_positions(c: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec, row) [deg] of the labelled halos (positive cutouts) from the cutout table's columns ``c``:
    ``halo_dx_arcmin`` east and ``halo_dy_arcmin`` north of each cutout centre."""
    if "halo_dx_arcmin" not in c or "halo_dy_arcmin" not in c:
        empty = np.zeros(0)
        return empty, empty, empty.astype(np.int64)
    rows = np.flatnonzero(c["label"] & np.isfinite(c["halo_dx_arcmin"]))
    dec0 = c["dec"][rows]
    dec = dec0 + c["halo_dy_arcmin"][rows] / 60.0
    ra = c["ra"][rows] + c["halo_dx_arcmin"][rows] / 60.0 / np.cos(np.radians(dec0))
    return ra, dec, rows


def read_mf_catalog(ws) -> dict | None:
    """The MF candidate catalogue of a workspace as arrays (ra, dec [deg], snr, theta_c_arcmin), or None."""
    if ws is None or not ws.has("mf"):
        return None
    from astropy.table import Table

    for rel in ws.products["mf"].get("files", []):
        if not rel.lower().endswith((".fits", ".ecsv", ".fit")):
            continue
        try:
            t = Table.read(ws.path(rel))
        except Exception:  # not a table: some other MF product
            continue
        if {"ra", "dec", "snr"} <= set(t.colnames):
            n = len(t)
            theta = np.asarray(t["theta_c_arcmin"], float) if "theta_c_arcmin" in t.colnames else np.full(n, 1.0)
            return {"ra": np.asarray(t["ra"], float), "dec": np.asarray(t["dec"], float),
                    "snr": np.asarray(t["snr"], float), "theta_c_arcmin": theta}
    return None


def detections_near(cat: dict | None, ra0: float, dec0: float, half_arcmin: float = 4.0) -> list[dict]:
    """Detections of ``cat`` within a square of half-side ``half_arcmin`` around (ra0, dec0) [deg], with their
    offsets east (``dx_arcmin``) and north (``dy_arcmin``) of it."""
    if cat is None:
        return []
    dx = ((cat["ra"] - ra0 + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec0)) * 60.0
    dy = (cat["dec"] - dec0) * 60.0
    k = np.flatnonzero((np.abs(dx) <= half_arcmin) & (np.abs(dy) <= half_arcmin))
    return [{"dx_arcmin": float(dx[i]), "dy_arcmin": float(dy[i]), "snr": float(cat["snr"][i]),
             "theta_c_arcmin": float(cat["theta_c_arcmin"][i])} for i in k]


def object_results(ws) -> tuple[dict | None, str]:
    """The object-level results of the workspace's last evaluation (``szviewer evaluate`` or Jobs → Evaluate):
    ``(methods, note)``, methods being method -> {f1, purity, completeness, tp, fp, fn, thresholds} on the test
    region (thresholds chosen on val; :func:`szviewer.evaluate.objects.evaluate_objects`), or None with why."""
    import json

    if ws is None or not ws.has("evaluation"):
        return None, "no evaluation yet: Jobs → Evaluate (Table 1)"
    for rel in ws.products["evaluation"].get("files", []):
        if rel.endswith(".json"):
            try:
                doc = json.loads(Path(ws.path(rel)).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            methods = (doc.get("objects") or {}).get("methods") if isinstance(doc, dict) else None
            if not methods:
                return None, "the last evaluation has no object-level results (no candidate catalogues)"
            why = ws.stale("evaluation")
            return methods, ("stale: " + "; ".join(why)) if why else ""
    return None, "no evaluation file"
