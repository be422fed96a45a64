"""Peak finding across scales (szviewer.mf.peaks): groups, S/N-weighted centroids, merging across scales."""

from __future__ import annotations

import numpy as np
import pytest

from szviewer.mf.peaks import PeakFinder, find_candidates


def blob(shape, x, y, amp, width):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return amp * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / width**2)


def test_single_symmetric_group_centroid_and_values():
    shape = (64, 64)
    snr = blob(shape, 20.3, 30.7, 10.0, 2.0)
    cands = find_candidates(snr[None], [2e-6], [1.0], threshold=3.0)
    assert len(cands) == 1
    c = cands[0]
    # S/N-weighted mean of the pixels above threshold: close to the true centre for a symmetric blob
    assert c["x"] == pytest.approx(20.3, abs=0.1)
    assert c["y"] == pytest.approx(30.7, abs=0.1)
    assert (c["x_peak"], c["y_peak"]) == (20, 31)
    assert c["snr"] == pytest.approx(snr[31, 20])
    assert c["y0"] == pytest.approx(snr[31, 20] * 2e-6)
    assert c["y0_err"] == 2e-6
    assert c["theta_c_arcmin"] == 1.0
    # exactly the S/N-weighted mean of the group (paper section 2.1)
    yy, xx = np.nonzero(snr > 3.0)
    w = snr[yy, xx]
    assert c["x"] == pytest.approx(np.sum(w * xx) / np.sum(w), rel=1e-12)
    assert c["npix"] == len(w)


def test_overlapping_groups_across_scales_keep_the_highest():
    shape = (80, 80)
    small = blob(shape, 40, 40, 6.0, 1.5)    # scale 0: weaker
    large = blob(shape, 41, 40, 9.0, 4.0)    # scale 1: same cluster, stronger
    far = blob(shape, 10, 10, 5.0, 1.5)      # scale 0 only: another candidate
    snr = np.stack([small + far, large])
    cands = find_candidates(snr, [1e-6, 3e-6], [0.5, 2.0], threshold=3.0)
    assert len(cands) == 2
    best = cands[np.argmax(cands["snr"])]
    assert best["theta_c_arcmin"] == 2.0 and best["snr"] == pytest.approx(9.0, rel=1e-3)
    assert best["y0"] == pytest.approx(9.0 * 3e-6, rel=1e-3)
    other = cands[np.argmin(cands["snr"])]
    assert other["theta_c_arcmin"] == 0.5 and other["x"] == pytest.approx(10, abs=0.05)
    # sorted by decreasing S/N
    assert cands["snr"][0] >= cands["snr"][1]


def test_separate_groups_stay_separate_and_threshold_applies():
    shape = (64, 64)
    snr = blob(shape, 15, 15, 5.0, 1.5) + blob(shape, 45, 45, 8.0, 1.5) + blob(shape, 15, 45, 2.9, 1.5)
    cands = find_candidates(snr[None], [1.0], [1.0], threshold=3.0)
    assert sorted(np.round(cands["snr"], 3)) == [5.0, 8.0]  # the 2.9 one is below threshold


def test_diagonal_pixels_are_connected():
    snr = np.zeros((10, 10))
    snr[3, 3] = 5.0
    snr[4, 4] = 4.0  # touches only at a corner: 8-connectivity makes it one group
    cands = find_candidates(snr[None], [1.0], [1.0], threshold=3.0)
    assert len(cands) == 1 and cands[0]["npix"] == 2


def test_detection_mask_excludes_and_flags():
    shape = (64, 64)
    snr = blob(shape, 10, 32, 8.0, 2.0) + blob(shape, 40, 32, 8.0, 2.0)
    detect = np.ones(shape, dtype=bool)
    detect[:, :20] = False  # first blob excluded; its pixels are never used
    cands = find_candidates(snr[None], [1.0], [1.0], threshold=3.0, detect=detect)
    assert len(cands) == 1 and cands[0]["x_peak"] == 40
    assert not cands[0]["touches_mask"]
    # a group cut by the mask edge is flagged
    detect[:, :39] = False
    cands = find_candidates(snr[None], [1.0], [1.0], threshold=3.0, detect=detect)
    assert len(cands) == 1 and cands[0]["touches_mask"]


def test_core_centroid_ignores_asymmetric_wings():
    shape = (64, 64)
    snr = blob(shape, 30, 30, 20.0, 2.0)
    snr[30, 33:45] = np.maximum(snr[30, 33:45], 4.0)  # a noise tail attached to the group
    whole = find_candidates(snr[None], [1.0], [1.0], threshold=3.0)[0]
    core = find_candidates(snr[None], [1.0], [1.0], threshold=3.0, centroid_core_frac=0.5)[0]
    assert whole["x"] > 30.3  # pulled toward the tail
    assert core["x"] == pytest.approx(30.0, abs=0.01)


def test_no_groups_and_validation():
    finder = PeakFinder((8, 8), 3.0, [1.0])
    assert finder.add(0, np.zeros((8, 8)), 1.0) == 0
    assert len(finder.candidates()) == 0
    with pytest.raises(ValueError):
        PeakFinder((8, 8), 0.0, [1.0])
    with pytest.raises(ValueError):
        finder.add(0, np.zeros((4, 4)), 1.0)
