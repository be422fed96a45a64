"""Run every benchmark and print one table: ``python benchmarks/run.py [name ...]``.

Each ``bench_*.py`` module has ``run() -> list[dict]`` with rows of name, seconds, throughput, unit and
optionally target and ratio_to_ref (a ratio to a reference run in the same process).
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _target(r: dict) -> str:
    if r.get("target"):
        return str(r["target"])
    if r.get("target_s"):
        return f"<={r['target_s']:g}s"
    return ""


def print_table(rows: list[dict], title: str = "") -> None:
    if title:
        print(f"\n== {title}")
    print(f"{'benchmark':<66}{'seconds':>10}{'throughput':>14}  {'unit':<18}{'target':>9}{'x ref':>9}")
    for r in rows:
        sec = r.get("seconds", float("nan"))
        sec_s = "-" if sec is None or (isinstance(sec, float) and math.isnan(sec)) else f"{sec:.4g}"
        thr = r.get("throughput", r.get("value"))
        thr_s = "-" if thr is None else f"{thr:.4g}"
        ratio = r.get("ratio_to_ref", r.get("ratio"))
        ratio_s = "" if ratio is None else f"{ratio:.3g}"
        note = r.get("note", "")
        print(f"{r['name'][:65]:<66}{sec_s:>10}{thr_s:>14}  {r.get('unit', ''):<18}{_target(r):>9}"
              f"{ratio_s:>9}  {note}".rstrip())


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    for name in names:
        mod = importlib.import_module(f"bench_{name}")
        print_table(mod.run(), name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
