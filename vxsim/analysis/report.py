"""The ``analysis`` group of a finished results file: data beside theory.

* per point: bootstrap intervals of the growth rates; mean-field log chi1,
  q*, xi_c; the measured correlation depth scale;
* per (mode, width, activation, sigma_b2): the empirical critical sigma_w2
  (zero crossing of the quenched and of the annealed rate) with a bootstrap
  interval, beside the theory's critical sigma_w2 for the same axes.
"""

import numpy as np

from .. import activations
from ..theory.architectures import predict
from . import boundary, depth
from .growth import MODE_VARIABLE

ESTIMATORS = ("quenched", "annealed")


def analyse(data, coords, config, summary):
    """Content of the ``analysis`` group (see store.schema.write_group).

    ``summary`` is ``growth.summarise``'s output: its growth rates are the point
    estimates whose zero crossings give the critical sigma_w2.
    """
    modes = list(config.modes)
    layers = coords["layer"]
    law = config.arch.growth_law
    counts = boundary.resample_counts(config.samples, seed=config.seed)
    grid_dims = config.grid_dims
    point_dims = ("mode", "width") + grid_dims
    edge_dims = ("mode", "width", "activation", "sigma_b2") + grid_dims[3:]
    out = {}
    for kind in ESTIMATORS:
        for suffix in ("ci_low", "ci_high"):
            out[f"growth_rate_{kind}_{suffix}"] = []
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"critical_sigma_w2_{kind}{suffix}"] = []
    for m, mode in enumerate(modes):
        y = data[MODE_VARIABLE[mode]]  # (W, A, Sw, Sb, ..., S, R)
        full = {kind: summary["vars"][f"growth_rate_{kind}"][1][m] for kind in ESTIMATORS}
        reps = boundary.bootstrap_rates(
            y, layers, config.depth, config.transient, mode, counts, law
        )
        for kind, rep in zip(ESTIMATORS, reps, strict=True):
            lo, hi = boundary.interval(rep)
            out[f"growth_rate_{kind}_ci_low"].append(lo)
            out[f"growth_rate_{kind}_ci_high"].append(hi)
            # crossings along sigma_w2 (axis 2 of W, A, Sw, Sb, ...): move it last
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
    variables.update(predict(config))
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
            "rate_model": (
                "exponential: log |g^l|^2 linear in l"
                if law == "exponential"
                else "power: log |g^l|^2 linear in log l"
            ),
            "growth_law": law,
            "architecture": config.architecture,
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
