"""Evaluation engine (paper section 3): F1 curves, ensembles, Table 1, science plots, catalogs and reports.

Modules, one job each, all functions over numpy arrays and free of Qt:

- :mod:`.policy`: the one evaluation policy (method registry, threshold search) every front end uses.
- :mod:`.objects`, :mod:`.matching`, :mod:`.learned`, :mod:`.mass`: object catalogues (MF + CNN candidates),
  one-to-one matching to halos, object-level metrics, the learned ensemble, Arnaud M500 estimates.
- :mod:`.curves`: exact F1 / purity / completeness vs threshold, ``counts_at`` for sliders, ROC and AUC.
- :mod:`.ensembles`: rank percentiles, EnsemblePROD, EnsembleAND / OR grids over threshold pairs.
- :mod:`.table1`: thresholds chosen on validation, applied to test, as the paper's Table 1.
- :mod:`.science`: completeness and true-positive fractions vs halo properties, score vs offset.
- :mod:`.export`: candidate catalogs (ECSV, FITS, CSV, VOTable) and DS9 regions, written atomically.
- :mod:`.figures` and :mod:`.report`: PNG figures and a self-contained HTML report.

NaN scores (e.g. no matched-filter detection) are treated as -inf everywhere: never positive.
"""

from .curves import BestF1, Counts, F1Curve, RocCurve, best_threshold, confusion, f1_curve, roc_curve
from .ensembles import (
    TwoScoreGrid,
    and_grid,
    and_predict,
    or_grid,
    or_predict,
    prod_score,
    quantile_thresholds,
    rank_percentile,
    two_score_grid,
)
from .table1 import METHODS, Table1Row, format_table1, table1

__all__ = [
    "BestF1",
    "Counts",
    "F1Curve",
    "RocCurve",
    "best_threshold",
    "confusion",
    "f1_curve",
    "roc_curve",
    "TwoScoreGrid",
    "and_grid",
    "and_predict",
    "or_grid",
    "or_predict",
    "prod_score",
    "quantile_thresholds",
    "rank_percentile",
    "two_score_grid",
    "METHODS",
    "Table1Row",
    "format_table1",
    "table1",
]
