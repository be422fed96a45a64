"""Instrument presets as data files: loading, today's default, bad files, beams, serialisation, noise model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from szviewer.errors import InputError
from szviewer.sky.bands import BANDS_GHZ, NOISE_UK_ARCMIN
from szviewer.sky.beams import gaussian_bell
from szviewer.sky.instrument_presets import instrument_names, load_instrument, parse_instrument
from szviewer.sky.instruments import Instrument, anisotropy_weight
from szviewer.sky.spectra import ARCMIN_RAD, ell_grid

PRESETS = ["act-dr6", "cmbs4-wide", "so-lat", "spt3g", "spt3g-paper"]

BASE = """\
name = "test-survey"
pixel_arcmin = 0.5

[[bands]]
band = 90
freq_ghz = 97.8
white_uk_arcmin = 15.0
fwhm_arcmin = 2.0
ell_knee = 2000.0
alpha_knee = -3.5

[[bands]]
band = 150
freq_ghz = 149.6
white_uk_arcmin = 14.0
fwhm_arcmin = 1.4

[[bands]]
band = 220
freq_ghz = 216.5
white_uk_arcmin = 50.0
fwhm_arcmin = 1.0

[atmosphere]
correlation = 0.9
anisotropy = 1.0

[depth]
pattern = "smooth"
contrast = 3.0
scale_deg = 2.0

[holes]
flux_mjy = 15.0
band = 150
radius_arcmin = 5.0
"""


def write(tmp_path, text: str, name: str = "survey.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_preset_loads_and_documents_its_numbers():
    assert instrument_names() == PRESETS
    for name in PRESETS:
        inst = load_instrument(name)
        assert inst.name == name and inst.bands and inst.pixel_arcmin > 0 and inst.references
        assert all(b.white_uk_arcmin > 0 and b.freq_ghz > 0 for b in inst.bands)
        text = inst.toml_text()
        assert text == open(inst.path, encoding="utf-8").read()
        # every number carries its source (or [unverified]) in a comment on its line
        for line in text.splitlines():
            if re.match(r"^\s*\w+\s*=\s*-?[0-9]", line):
                assert "#" in line, f"{name}: no source for {line!r}"


def test_spt3g_paper_is_todays_default():
    inst = load_instrument("spt3g-paper")
    assert inst.band_ids == BANDS_GHZ == (90, 148, 219)
    assert inst.freqs_ghz == (90.0, 148.0, 219.0)
    assert inst.white_uk_arcmin == NOISE_UK_ARCMIN == {90: 2.8, 148: 2.6, 219: 6.6}
    assert inst.pixel_arcmin == 0.25
    assert not inst.has_beams and not inst.has_one_over_f
    assert (inst.depth_pattern, inst.edge_apod_arcmin, inst.hole_flux_mjy) == ("uniform", 0.0, 0.0)
    # SCIENCE.md section 2: per 0.25' pixel sigma = 11.2, 10.4, 26.4 uK
    assert [round(b.white_sigma_uk(0.25), 6) for b in inst.bands] == [11.2, 10.4, 26.4]
    p = inst.noise_power((8, 8))
    assert np.allclose(p[0, 0], 11.2**2) and np.all(p[0, 1] == 0)


def test_shipped_instruments_have_the_published_bands():
    act = load_instrument("act-dr6")
    assert act.band_ids == (90, 150, 220) and act.freqs_ghz == (97.8, 149.6, 216.5)
    assert act.pixel_arcmin == 0.5 and act.depth_pattern == "smooth" and act.hole_flux_mjy == 15.0
    so = load_instrument("so-lat")
    assert so.band_ids == (93, 145, 225) and so.white_uk_arcmin == {93: 8.0, 145: 10.0, 225: 22.0}
    assert [b.beam.fwhm_arcmin for b in so.bands] == [2.2, 1.4, 1.0]
    assert all(b.alpha_knee == -3.5 for b in so.bands)
    spt = load_instrument("spt3g")
    assert spt.white_uk_arcmin == NOISE_UK_ARCMIN and spt.has_beams and spt.anisotropy > 1
    assert load_instrument("cmbs4-wide").band_ids == (95, 145, 220)


def test_a_user_written_file_loads_with_defaults(tmp_path):
    p = write(tmp_path, 'name = "mine"\npixel_arcmin = 1.0\n[[bands]]\nband = 150\nfreq_ghz = 148\n'
                        'white_uk_arcmin = 10\nfwhm_arcmin = 1.4\n')
    inst = load_instrument(p)
    assert inst.name == "mine" and inst.band_ids == (150,) and inst.freqs_ghz == (148.0,)
    assert inst.bands[0].ell_knee == 0.0 and inst.depth_pattern == "uniform" and inst.hole_flux_mjy == 0.0
    assert inst.path == str(p)
    full = load_instrument(write(tmp_path, BASE, "base.toml"))
    assert full.atmosphere_correlation == 0.9 and full.hole_band == 150 and full.depth_scale_deg == 2.0


def _mutate(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text
    return text.replace(old, new, count)


BAD = [
    ("missing field", lambda t: _mutate(t, "white_uk_arcmin = 50.0\n", ""),
     "field 'bands[2].white_uk_arcmin': missing"),
    ("misspelt key", lambda t: _mutate(t, "fwhm_arcmin = 1.4", "fwhm_arcmn = 1.4"),
     "unknown key 'bands[1].fwhm_arcmn'; did you mean 'fwhm_arcmin'?"),
    ("misspelt section key", lambda t: _mutate(t, "correlation = 0.9", "corelation = 0.9"),
     "unknown key 'atmosphere.corelation'; did you mean 'correlation'?"),
    ("misspelt top key", lambda t: _mutate(t, "pixel_arcmin = 0.5", "pixel_arcmin = 0.5\npixel_arcmn = 1"),
     "unknown key 'pixel_arcmn'; did you mean 'pixel_arcmin'?"),
    ("wrong type", lambda t: _mutate(t, "pixel_arcmin = 0.5", 'pixel_arcmin = "0.5"'),
     "field 'pixel_arcmin': expected a number, got str"),
    ("float band id", lambda t: _mutate(t, "band = 90", "band = 90.0"), "field 'bands[0].band': expected an integer"),
    ("negative depth", lambda t: _mutate(t, "white_uk_arcmin = 14.0", "white_uk_arcmin = -14.0"),
     "field 'bands[1].white_uk_arcmin': -14 must be > 0"),
    ("negative beam", lambda t: _mutate(t, "fwhm_arcmin = 1.0", "fwhm_arcmin = -1.0"),
     "field 'bands[2].fwhm_arcmin': -1 must be >= 0"),
    ("negative knee", lambda t: _mutate(t, "ell_knee = 2000.0", "ell_knee = -5.0"),
     "field 'bands[0].ell_knee': -5 must be >= 0"),
    ("rising 1/f", lambda t: _mutate(t, "alpha_knee = -3.5", "alpha_knee = 1.0"),
     "field 'bands[0].alpha_knee': 1 must be < 0 when ell_knee > 0"),
    ("knee without slope", lambda t: _mutate(t, "alpha_knee = -3.5\n", ""),
     "field 'bands[0].alpha_knee': missing (needed when ell_knee > 0)"),
    ("correlation > 1", lambda t: _mutate(t, "correlation = 0.9", "correlation = 1.5"),
     "field 'atmosphere.correlation': 1.5 must be in [0, 1]"),
    ("no bands", lambda t: t[:t.index("[[bands]]")] + t[t.index("[atmosphere]"):], "field 'bands': missing"),
    ("empty bands", lambda t: t[:t.index("[[bands]]")] + "bands = []\n" + t[t.index("[atmosphere]"):],
     "field 'bands': no bands"),
    ("duplicate band ids", lambda t: _mutate(t, "band = 220", "band = 90"),
     "field 'bands': band id 90 appears 2 times"),
    ("beam and fwhm", lambda t: _mutate(t, "fwhm_arcmin = 1.0", 'fwhm_arcmin = 1.0\nbeam_file = "b.txt"'),
     "field 'bands[2].beam_file': give fwhm_arcmin or beam_file, not both"),
    ("no beam", lambda t: _mutate(t, "fwhm_arcmin = 1.0\n", ""), "field 'bands[2].fwhm_arcmin': missing"),
    ("missing beam file", lambda t: _mutate(t, "fwhm_arcmin = 1.0", 'beam_file = "nowhere.txt"'),
     "field 'bands[2].beam_file'"),
    ("depth pattern", lambda t: _mutate(t, 'pattern = "smooth"', 'pattern = "smoth"'),
     "field 'depth.pattern': 'smoth' is not one of uniform, smooth; did you mean 'smooth'?"),
    ("smooth without scale", lambda t: _mutate(t, "scale_deg = 2.0\n", ""),
     "field 'depth.scale_deg': missing (needed for pattern 'smooth')"),
    ("hole band", lambda t: _mutate(t, "band = 150\nradius", "band = 148\nradius"),
     "field 'holes.band': 148 is not one of the bands [90, 150, 220]"),
    ("not toml", lambda t: t + "\n[[bands]\n", "not valid TOML"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_preset_files_name_the_file_and_the_field(tmp_path, case):
    _, mutate, expected = case
    p = write(tmp_path, mutate(BASE))
    with pytest.raises(InputError) as e:
        load_instrument(p)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": ") and expected in msg and "\n" not in msg


def test_bad_beam_files_are_reported_through_the_preset(tmp_path):
    (tmp_path / "one.txt").write_text("# ell only\n0\n1\n2\n")
    (tmp_path / "down.txt").write_text("0 1.0\n10 0.9\n5 0.8\n")
    for name, problem in (("one.txt", "a beam file needs two: ell B_ell"), ("down.txt", "ell is not increasing")):
        p = write(tmp_path, _mutate(BASE, "fwhm_arcmin = 1.4", f'beam_file = "{name}"'))
        with pytest.raises(InputError) as e:
            load_instrument(p)
        msg = str(e.value)
        assert msg.startswith(str(p)) and "field 'bands[1].beam_file'" in msg and name in msg and problem in msg


def test_unknown_preset_lists_the_known_ones(tmp_path):
    with pytest.raises(InputError) as e:
        load_instrument("act-dr7")
    msg = str(e.value)
    assert "unknown instrument preset" in msg and "did you mean 'act-dr6'" in msg
    assert all(n in msg for n in PRESETS)
    with pytest.raises(InputError, match="instrument file not found"):
        load_instrument(tmp_path / "absent.toml")


def test_beam_file_preset_with_a_real_two_column_table(tmp_path):
    ell = np.arange(0, 20001, 10.0)
    b = gaussian_bell(ell, 1.4) * 0.37  # unnormalised, as ACT ships (2 pi B_0 = beam solid angle)
    rows = "\n".join(f"{e:.0f} {v:.10e} 0.001" for e, v in zip(ell, b, strict=True))
    (tmp_path / "beams").mkdir()
    (tmp_path / "beams" / "f150.txt").write_text("# ell B_ell dB_ell\n" + rows + "\n")
    p = write(tmp_path, _mutate(BASE, "fwhm_arcmin = 1.4", 'beam_file = "beams/f150.txt"'))
    inst = load_instrument(p)
    beam = inst.band(150).beam
    assert beam.is_table and inst.has_beams
    test_ell = np.array([0.0, 1234.0, 5000.0, 9000.0])
    assert np.allclose(beam(test_ell), gaussian_bell(test_ell, 1.4), rtol=1e-4, atol=1e-6)
    assert abs(beam.fwhm_equivalent_arcmin() - 1.4) < 0.01
    # the JSON round trip carries the table itself (a workspace stays valid if the beam file moves)
    again = Instrument.from_dict(json.loads(json.dumps(inst.to_dict())))
    assert again == inst and np.array_equal(again.band(150).beam(test_ell), beam(test_ell))


@pytest.mark.parametrize("name", PRESETS)
def test_json_round_trip_and_generated_toml(name):
    inst = load_instrument(name)
    again = Instrument.from_dict(json.loads(json.dumps(inst.to_dict())))
    assert again == inst
    # without its file, toml_text() is generated, and it parses back to the same instrument
    text = again.toml_text()
    assert text != inst.toml_text()
    back = parse_instrument(text)
    assert back.to_dict() | {"path": None} == inst.to_dict() | {"path": None}


def test_noise_model_white_plus_correlated_one_over_f(tmp_path):
    text = _mutate(BASE, "fwhm_arcmin = 1.4", "fwhm_arcmin = 1.4\nell_knee = 3000.0\nalpha_knee = -3.0")
    inst = load_instrument(write(tmp_path, text))
    b90 = inst.band(90)
    ell = np.array([0.0, 1000.0, 2000.0, 8000.0])
    nw = (15.0 * ARCMIN_RAD) ** 2
    expect = nw * (1 + np.r_[0.0, (ell[1:] / 2000.0) ** -3.5])
    assert np.allclose(b90.noise_cl(ell), expect)
    assert b90.noise_cl(np.array([2000.0]))[0] == pytest.approx(2 * nw)  # 1/f equals white at the knee
    assert np.allclose(inst.band(220).noise_cl(ell), (50.0 * ARCMIN_RAD) ** 2)  # no 1/f
    shape = (64, 96)
    p = inst.noise_power(shape)
    assert p.shape == (3, 3, 64, 49) and p.dtype == np.float64
    omega = (0.5 * ARCMIN_RAD) ** 2
    ells = ell_grid(*shape, 0.5)
    assert np.allclose(p[0, 0], b90.noise_cl(ells) / omega, rtol=1e-5)
    assert np.allclose(p[2, 2], (50.0 / 0.5) ** 2)
    red0 = p[0, 0] - (15.0 / 0.5) ** 2
    red1 = p[1, 1] - (14.0 / 0.5) ** 2
    assert np.allclose(p[0, 1], 0.9 * np.sqrt(red0 * red1), rtol=1e-5) and np.all(p[0, 2] == 0)
    assert p[0, 0, 0, 0] == pytest.approx((15.0 / 0.5) ** 2)  # the map mean: no 1/f power


def test_anisotropy_weight_keeps_the_ring_mean_and_has_ratio_a():
    shape = (512, 512)
    g = anisotropy_weight(shape, 10.0)
    ky = np.fft.fftfreq(512)[:, None] * np.ones((1, 257))
    kx = np.fft.rfftfreq(512)[None, :] * np.ones((512, 1))
    k = np.hypot(kx, ky)
    ring = (k > 0.2) & (k < 0.22)
    w = np.where(kx == 0, 1.0, 2.0)  # the rfft half plane counts the other columns twice
    assert np.sum(g[ring] * w[ring]) / np.sum(w[ring]) == pytest.approx(1.0, abs=0.01)
    assert g[10, 0] / g[0, 10] == pytest.approx(10.0, rel=1e-5)  # l_x = 0 (stripes along RA) vs l_y = 0
    assert math.isclose(float(anisotropy_weight(shape, 1.0).max()), 1.0)
