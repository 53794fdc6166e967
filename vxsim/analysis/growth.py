"""Per-layer growth rates of squared gradient norms: the empirical log chi1.

For one grid point and sample, y_l = log |g^l|^2 (relative) is fitted by a
straight line in l over the layers after a transient, counted from where the
signal enters (the input for JVP tangents, the output for VJP gradients). The
growth rate is the slope in the direction the signal travels, so both modes
estimate log chi1: positive explodes, negative vanishes.

* quenched: the mean over samples of each sample's slope (the typical value,
  E[log |g|^2]); standard error = std / sqrt(S);
* annealed: the slope of log mean_s exp(y_s) (log E[|g|^2], what mean-field
  theory predicts); standard error by the jackknife over samples.

The growth law, declared by each architecture (``Architecture.growth_law``),
says what y is fitted against: ``exponential`` (plain MLP and RNNs,
|g^l|^2 ~ exp(rate * l): y linear in l) or ``power`` (residual networks, whose
mean-field gradients grow polynomially, |g^l|^2 ~ l^rate (Yang & Schoenholz
2017): y linear in log l). Either way the rate is positive where gradients grow
in the direction the signal travels. The fits themselves are ``vxsim.fits``.
"""

import numpy as np

from ..fits import (  # noqa: F401  (analysis's names for the fit primitives)
    DIRECTION,
    fit_abscissa,
    fit_window,
    growth_rates,
    quiet,
    slopes,
)
from . import jacobian_spectrum

MODE_VARIABLE = {"jvp": "log_tangent_norm", "vjp": "log_grad_norm"}


def summarise(data, coords, config):
    """Growth-rate summary for the store: rates per (mode, width, grid point)."""
    modes = list(config.modes)
    dims = ("mode", "width") + config.grid_dims
    law = config.arch.growth_law  # declared by the architecture (vxsim.models)
    out = {name: [] for name in ("quenched", "quenched_se", "annealed", "annealed_se")}
    for mode in modes:
        y = data[MODE_VARIABLE[mode]]  # (W, A, Sw, Sb, ..., S, R)
        rates = growth_rates(y, coords["layer"], config.depth, config.transient, mode, law)
        for key in out:
            out[key].append(rates[key])
    per = "per layer" if law == "exponential" else "per unit of log layer (power-law exponent)"
    desc = {
        "quenched": f"growth rate {per} of log squared gradient norm, mean over samples of log",
        "quenched_se": "standard error of growth_rate_quenched",
        "annealed": f"growth rate {per} of log of the sample mean of squared gradient norm",
        "annealed_se": "jackknife standard error of growth_rate_annealed",
    }
    summary = {
        f"growth_rate_{key}": (dims, np.stack(values), desc[key]) for key, values in out.items()
    }
    summary.update(jacobian_spectrum.summarise(data, config))  # measure.spectrum's statistics
    return {"mode": modes, "growth_law": law, "vars": summary}
