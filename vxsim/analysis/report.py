"""The ``analysis`` group of a finished results file: data beside theory.

* per point: bootstrap intervals of the growth rates; mean-field log chi1,
  q*, xi_c; the measured correlation depth scale;
* per (mode, width, activation, sigma_b2): the empirical critical sigma_w2
  (zero crossing of the quenched and of the annealed rate) with a bootstrap
  interval, beside the theory's critical sigma_w2 for the same axes.
"""

import numpy as np

from .. import activations, theory
from . import boundary, depth
from .growth import MODE_VARIABLE

ESTIMATORS = ("quenched", "annealed")


def theory_grid(config):
    """Mean-field log chi1, q*, xi_c per (activation, sigma_w2, sigma_b2); NaN where undefined.

    For homogeneous activations chi1 = sigma_w2 E[phi'(z)^2] holds at every q, so
    log chi1 is given even where q* is infinite.
    """
    out = {key: np.full(config.grid_shape, np.nan) for key in ("log_chi1", "q_star", "xi_c")}
    for a, (act, param) in enumerate(config.activation_specs):
        values = theory.grid(act, param, config.sigma_w2, config.sigma_b2, q0=config.q0)
        for key in out:
            out[key][a] = values[key]
    return out["log_chi1"], out["q_star"], out["xi_c"]


def theory_critical(config):
    """Critical sigma_w2 per (activation, sigma_b2) from mean-field theory (NaN if none)."""
    out = np.full((len(config.activations), len(config.sigma_b2)), np.nan)
    for a, (act, param) in enumerate(config.activation_specs):
        for j, sb2 in enumerate(config.sigma_b2):
            try:
                out[a, j] = theory.critical_sigma_w2(act, param, sb2, q0=config.q0)
            except theory.NoFixedPoint:
                pass
    return out


def analyse(data, coords, config, summary):
    """Content of the ``analysis`` group (see store.hdf5._write_group).

    ``summary`` is ``growth.summarise``'s output: its growth rates are the point
    estimates whose zero crossings give the critical sigma_w2.
    """
    modes = list(config.modes)
    layers = coords["layer"]
    counts = boundary.resample_counts(config.samples, seed=config.seed)
    point_dims = ("mode", "width", "activation", "sigma_w2", "sigma_b2")
    edge_dims = ("mode", "width", "activation", "sigma_b2")
    out = {}
    for kind in ESTIMATORS:
        for suffix in ("ci_low", "ci_high"):
            out[f"growth_rate_{kind}_{suffix}"] = []
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"critical_sigma_w2_{kind}{suffix}"] = []
    for m, mode in enumerate(modes):
        y = data[MODE_VARIABLE[mode]]  # (W, A, Sw, Sb, S, R)
        full = {kind: summary["vars"][f"growth_rate_{kind}"][1][m] for kind in ESTIMATORS}
        reps = boundary.bootstrap_rates(y, layers, config.depth, config.transient, mode, counts)
        for kind, rep in zip(ESTIMATORS, reps, strict=True):
            lo, hi = boundary.interval(rep)
            out[f"growth_rate_{kind}_ci_low"].append(lo)
            out[f"growth_rate_{kind}_ci_high"].append(hi)
            # crossings along sigma_w2 (axis 2 of W, A, Sw, Sb): move it last
            edge = boundary.zero_crossing(config.sigma_w2, np.moveaxis(full[kind], 2, -1))
            edge_reps = boundary.zero_crossing(config.sigma_w2, np.moveaxis(rep, 3, -1))
            e_lo, e_hi = boundary.interval(edge_reps)
            out[f"critical_sigma_w2_{kind}"].append(edge)
            out[f"critical_sigma_w2_{kind}_ci_low"].append(e_lo)
            out[f"critical_sigma_w2_{kind}_ci_high"].append(e_hi)
    variables = {}
    for name, values in out.items():
        dims = point_dims if name.startswith("growth_rate") else edge_dims
        variables[name] = (dims, np.stack(values), _describe(name))
    log_chi1, q_star, xi_c = theory_grid(config)
    grid_dims = ("activation", "sigma_w2", "sigma_b2")
    variables["theory_log_chi1"] = (grid_dims, log_chi1, "mean-field log chi1 (annealed rate)")
    variables["theory_q_star"] = (grid_dims, q_star, "mean-field fixed point q* (NaN: none)")
    variables["theory_xi_c"] = (grid_dims, xi_c, "mean-field correlation depth scale xi_c")
    variables["theory_critical_sigma_w2"] = (
        ("activation", "sigma_b2"),
        theory_critical(config),
        "mean-field critical sigma_w2 (chi1 = 1) for the same sigma_b2",
    )
    variables["xi_c_measured"] = (
        ("width",) + grid_dims,
        depth.correlation_depth_scale(data["corr"], layers, transient=1),
        "correlation depth scale fitted to |c^l - c_inf| ~ exp(-l / xi_c)",
    )
    return {
        "vars": variables,
        "attrs": {
            "confidence_level": boundary.LEVEL,
            "bootstrap_replicates": counts.shape[0],
            "bootstrap": "percentile bootstrap over Monte Carlo samples (whole samples)",
            "rate_model": "exponential: log |g^l|^2 linear in l",
            "activations": ", ".join(activations.label(a, p) for a, p in config.activation_specs),
        },
    }


def _describe(name):
    kind = "quenched" if "quenched" in name else "annealed"
    if name.startswith("growth_rate"):
        side = "lower" if name.endswith("low") else "upper"
        return f"{side} end of the bootstrap interval of growth_rate_{kind}"
    if name.endswith(("low", "high")):
        side = "lower" if name.endswith("low") else "upper"
        return f"{side} end of the bootstrap interval of critical_sigma_w2_{kind}"
    return f"sigma_w2 where growth_rate_{kind} crosses zero (linear between grid points)"
