"""The true halos, the matched filter's detections around the cutouts and the object-level candidates counted at
the app's thresholds (pure numpy, no Qt)."""

from __future__ import annotations

import math

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


#: The products :func:`szviewer.jobs.catalogue.load_objects` reads (besides every score product).
OBJECT_INPUTS = ("sky", "cutouts", "halos", "sources", "mf", "cnn_dense", "cnn", "cnn_mass")


def object_inputs(ws) -> tuple:
    """What a workspace's object set is made from: its folder and the generation of each product it reads
    (:data:`OBJECT_INPUTS` and the score products), as this ``Workspace`` object's manifest records them. Two
    equal fingerprints, equal inputs: a product's generation grows with every rebuild."""
    if ws is None:
        return ()
    names = set(OBJECT_INPUTS) | set(ws.score_products())
    return str(ws.root), tuple(sorted((p, int(ws.products[p].get("generation", 0))) for p in names
                                      if p in ws.products))


def object_counter_missing(ws) -> str | None:
    """Why the workspace has no object set to count, from its manifest alone ('' without a workspace), or None
    where there is one to read (:func:`object_counter`)."""
    from szviewer.jobs.catalogue import has_candidates

    if ws is None:
        return ""
    if not ws.has("cutouts"):
        return "no cutouts yet"
    if not any(has_candidates(ws).values()):
        return "no candidate catalogue yet: run the matched filter (or the dense CNN)"
    if not ws.has("halos"):
        return "no true halos to count against"
    return None


def object_counter(ws, region: str = "test"):
    """The workspace's candidates on ``region`` prepared to count object-level TP / FP / FN at any thresholds
    (:class:`szviewer.evaluate.objects.ObjectCounter`, read once per workspace so a threshold drag only counts):
    ``(counter, note)`` (note: stale inputs), or ``(None, why)`` where there are no candidates or no truth.
    Reading the candidates takes seconds on a large sky: the app calls it off the GUI thread
    (:mod:`szviewer.gui.objectset`)."""
    from szviewer.errors import InputError
    from szviewer.evaluate.objects import ObjectCounter
    from szviewer.jobs.catalogue import load_objects

    why = object_counter_missing(ws)
    if why is not None:
        return None, why
    try:
        oset = load_objects(ws, allow_stale=True, learned=False)
    except (InputError, OSError, ValueError, KeyError) as exc:
        return None, f"cannot read the candidates: {exc}"
    if oset.halos is None:
        return None, "no true halos to count against"
    return ObjectCounter.of(oset.cands, oset.halos, region), "; ".join(oset.notes)


def policy_thresholds(method: str, value) -> dict[str, float]:
    """The app's threshold of ``method`` (a float; AND a pair (CNN, MF S/N)) as the policy's column -> value."""
    from szviewer.evaluate.policy import thresholds_from_values

    return thresholds_from_values(method, value if isinstance(value, (tuple, list)) else [value])
