"""Multi-frequency matched filter for SZ clusters (DeepSZ paper section 2.1; Melin et al. 2006).

Public entry points: :class:`MFSettings`, :func:`run_mf` (tiles, masking, sources, catalog),
:func:`matched_filter` (periodic maps to y0/S/N maps), :func:`find_candidates`, :class:`PointSources`.
"""

from szviewer.errors import Cancelled
from szviewer.mf.catalog import FLAG_NEAR_MASK, FLAG_NEAR_SOURCE, build_catalog, jname, pixel_to_radec
from szviewer.mf.filter import (
    MatchedFilterBank,
    build_filter_bank,
    data_filter_bank,
    matched_filter,
    model_filter_bank,
)
from szviewer.mf.noise import data_noise_power, draw_noise, model_noise_cl, model_noise_power
from szviewer.mf.peaks import CANDIDATE_DTYPE, PeakFinder, find_candidates
from szviewer.mf.profiles import beta_profile, paint_clusters, template_fourier
from szviewer.mf.runner import filter_tile, run_mf
from szviewer.mf.settings import MFSettings
from szviewer.mf.sources import PointSources, find_sources, near_sources, paint_sources, subtract_sources

__all__ = [
    "CANDIDATE_DTYPE", "FLAG_NEAR_MASK", "FLAG_NEAR_SOURCE", "Cancelled", "MFSettings", "MatchedFilterBank",
    "PeakFinder", "PointSources", "beta_profile", "build_catalog", "build_filter_bank", "data_filter_bank",
    "data_noise_power", "draw_noise", "filter_tile", "find_candidates", "find_sources", "jname",
    "matched_filter", "model_filter_bank", "model_noise_cl", "model_noise_power", "near_sources",
    "paint_clusters", "paint_sources", "pixel_to_radec", "run_mf", "subtract_sources", "template_fourier",
]
