"""Compute the lensed CMB TT spectrum shipped in ``resources/cmb_lensed_tt.txt``.

Run once (``python scripts/make_cmb_spectrum.py``); szviewer reads the table at run time and never
imports CAMB. Cosmology: the Sehgal et al. (2010) simulation parameters (SCIENCE.md section 1),
Omega_m 0.264, Omega_b 0.044, h 0.71, sigma_8 0.80, n_s 0.96, T_CMB 2.726 K. The paper's MF noise model
used WMAP7+SPT best-fit parameters; the two spectra differ by a few per cent, well inside the
matched filter's tolerance, so one table serves both the synthetic sky and the filter.
"""

from __future__ import annotations

import os
import sys
import tempfile

import camb
import numpy as np

LMAX = 12000
OUT = os.path.join(os.path.dirname(__file__), "..", "resources", "cmb_lensed_tt.txt")


def main() -> int:
    h = 0.71
    omega_b, omega_m = 0.044, 0.264
    pars = camb.CAMBparams()
    pars.set_cosmology(H0=100 * h, ombh2=omega_b * h**2, omch2=(omega_m - omega_b) * h**2,
                       TCMB=2.726, mnu=0.0, nnu=3.046, tau=0.087)
    pars.InitPower.set_params(ns=0.96, As=2.1e-9)
    pars.set_matter_power(redshifts=[0.0], kmax=2.0)
    pars.NonLinear = camb.model.NonLinear_both
    pars.set_for_lmax(LMAX, lens_potential_accuracy=2)
    results = camb.get_results(pars)
    # rescale A_s so that sigma_8 = 0.80 exactly, then recompute
    s8 = results.get_sigma8_0()
    pars.InitPower.set_params(ns=0.96, As=2.1e-9 * (0.80 / s8) ** 2)
    results = camb.get_results(pars)
    print(f"sigma_8 = {results.get_sigma8_0():.4f}", file=sys.stderr)
    cls = results.get_cmb_power_spectra(pars, CMB_unit="muK", raw_cl=False, lmax=LMAX)
    dl = cls["lensed_scalar"][:, 0]
    ell = np.arange(dl.size)
    header = (f"Lensed CMB TT from CAMB {camb.__version__} for the Sehgal et al. 2010 cosmology "
              "(Om 0.264, Ob 0.044, h 0.71, s8 0.80, ns 0.96, TCMB 2.726 K).\n"
              "Made by scripts/make_cmb_spectrum.py.\ncolumns: ell  D_ell = ell(ell+1)C_ell/2pi [uK^2]")
    out = os.path.abspath(OUT)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        np.savetxt(fh, np.column_stack([ell[2:], dl[2:]]), fmt=["%d", "%.6e"], header=header)
    os.replace(tmp, out)
    i3000 = 3000
    print(f"wrote {out}: D_3000 = {dl[i3000]:.2f} uK^2", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
