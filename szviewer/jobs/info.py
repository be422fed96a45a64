"""What a workspace holds, as text (``szviewer info``, the demo's report): products, staleness, what is missing.

Also the one-line forms of job summaries that the CLI and the demo print.
"""

from __future__ import annotations

import os

from szviewer.workspace import Workspace


def summary_line(summary: dict) -> str:
    """A job summary's scalar entries as 'key value, ...'."""
    return ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (dict, list)))


def fits_sky_lines(summary: dict, hints: bool = False) -> list[str]:
    """Per band of a fits sky summary: map, frequency, beam, ivar and depth; then the mask's usable fraction.
    ``hints``: say which ``szviewer import`` flag records what is missing."""
    lines = []
    for b, e in sorted(summary.get("bands", {}).items(), key=lambda item: int(item[0])):
        freq = f"freq {e['freq_ghz']:g} GHz" + ("" if e.get("freq_given") else
                                                 " (the band id" + (f": pass --freq {b}=GHz)" if hints else ")"))
        beam = f"beam {e['beam']}" if e.get("beam") else (
            "no beam recorded" + (f" (pass --beam {b}=FWHM_or_file)" if hints else ""))
        ivar = "no ivar map"
        if e.get("ivar"):
            d = e.get("depth_uk_arcmin")
            ivar = f"ivar {e['ivar']}" + (f", depth {d['median']:.3g} uK-arcmin (5-95%: {d['p5']:.3g}-{d['p95']:.3g})"
                                          if d else "")
        lines.append(f"  {b + ' GHz':<8} map {e.get('map', '?')}; {freq}; {beam}; {ivar}")
    mask = summary.get("mask")
    if mask:
        lines.append(f"  mask     {mask['file']}: {100 * mask['usable_fraction']:.1f}% of pixels usable "
                     f"(mean {mask['mean']:.3f})")
    if "usable_fraction" in summary:
        lines.append(f"  usable   {100 * summary['usable_fraction']:.1f}% of pixels (finite in every map, "
                     "ivar > 0, mask > 0)")
    return lines


def describe_workspace(ws: Workspace) -> str:
    """The workspace's manifest as text: kind, bands, footprint; each product (ok, STALE, FILES MISSING) with its
    summary; how to refresh what is stale and make what is missing."""
    m = ws.manifest
    lines = [f"workspace {ws.root}  (schema {m['schema_version']}, made by szviewer {m['szviewer_version']})",
             f"  kind: {ws.kind}; bands {', '.join(str(b) for b in ws.bands)} GHz; pixels {ws.pixel_arcmin}'"]
    g = ws.geometry
    if "footprint" in g:
        f = g["footprint"]
        lines.append(f"  footprint: RA {f[0]:.3f}-{f[1]:.3f}, Dec {f[2]:.3f}-{f[3]:.3f} deg "
                     f"({g.get('area_deg2', float('nan')):.1f} deg^2, {g['type']})")
    lines.append("  products:")
    stale_lines = []
    for name, p in ws.products.items():
        why = ws.stale(name)
        ok = "FILES MISSING" if not ws.has(name) else "STALE" if why else "ok"
        summ = ", ".join(f"{k} {v}" for k, v in p.get("summary", {}).items()
                         if not isinstance(v, (list, dict)) and k != "warning")
        lines.append(f"    {name:<10} {ok:<5} {p.get('created', '?')}  {summ}")
        if why:
            stale_lines.append(f"    {name:<10} {'; '.join(why)}: refresh with `{ws.refresh_command(name)}`")
        if name == "cutouts":
            for s, c in p["summary"].get("splits", {}).items():
                lines.append(f"               {s:<5} {c['cutouts']:>8} cutouts, {c['positives']:>6} positive")
        if name == "mf_injection":
            from szviewer.jobs.selection import selection_summary_line

            lines.append("               " + selection_summary_line(p.get("summary", {})))
        warning = p.get("summary", {}).get("warning")
        if warning:
            lines.append(f"               WARNING: {warning}")
        if name == "sky" and ws.kind == "fits":
            lines += ["             " + line for line in fits_sky_lines(p.get("summary", {}))]
    if stale_lines:
        lines.append("  stale (made from inputs that have changed since):")
        lines += stale_lines
    missing = ws.missing()
    if missing:
        lines.append("  still missing:")
        lines += [f"    {name:<10} make it with: {how}" for name, how in missing]
    elif not stale_lines:
        lines.append("  complete: every step has run")
    return "\n".join(lines)


def clean_leftovers(ws: Workspace) -> int:
    """Remove the leftovers of killed runs in the workspace and beside it (its own hidden partial folders);
    returns how many went."""
    from szviewer.workspace import locks

    gone = locks.leftovers(ws.root) + [p for p in locks.leftovers(ws.root.parent, recursive=False)
                                       if p.name.startswith(f".{ws.root.name}.")]
    return locks.remove(gone)


def workspace_info(path: str | os.PathLike, clean: bool = False) -> dict:
    """``szviewer info``: ``{"removed": leftovers removed (None without clean), "text": describe_workspace}``."""
    ws = Workspace(path)
    removed = clean_leftovers(ws) if clean else None
    return {"removed": removed, "text": describe_workspace(ws)}
