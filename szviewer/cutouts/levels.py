"""Cumulative component levels of the noise study (paper sections 1.2 and 3.3, Fig. 8).

Each level adds one component to the previous one; every level also has the instrument noise.
A store keeps the components separately, so any level is a sum read on demand.
"""

from __future__ import annotations

LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cmb_tsz", ("cmb", "tsz")),
    ("ksz", ("cmb", "tsz", "ksz")),
    ("ir", ("cmb", "tsz", "ksz", "ir")),
    ("radio", ("cmb", "tsz", "ksz", "ir", "radio")),
    ("all", ("cmb", "tsz", "ksz", "ir", "radio", "dust")),
)
LEVEL_LABELS = {"cmb_tsz": "CMB+tSZ", "ksz": "+kSZ", "ir": "+IR galaxies", "radio": "+radio galaxies",
                "all": "+galactic dust (all)"}


def available_levels(components) -> dict[str, tuple[str, ...]]:
    """Levels that can be made from the given components. 'all' is every component the sky has: a ``skymap``
    (everything summed), else those of the full level present (Websky has no radio or dust maps: its 'all' is
    cmb + tsz + ksz + ir)."""
    comps = set(components)
    out = {name: parts for name, parts in LEVELS if set(parts) <= comps}
    if "all" not in out:
        if "skymap" in comps:
            out["all"] = ("skymap",)
        elif present := tuple(c for c in dict(LEVELS)["all"] if c in comps):
            out["all"] = present
    return out


def components_for(levels: list[str], components) -> tuple[str, ...]:
    """Components to store so that each requested level can be read. 'all' in ``levels`` = every level."""
    avail = available_levels(components)
    want = list(avail) if "all" in levels and len(levels) == 1 else levels
    unknown = [lv for lv in want if lv not in avail]
    if unknown:
        raise ValueError(f"level(s) {', '.join(unknown)} not available from components {sorted(components)}; "
                         f"available: {', '.join(avail)}")
    needed: list[str] = []
    for lv in want:
        for c in avail[lv]:
            if c not in needed:
                needed.append(c)
    return tuple(needed)
