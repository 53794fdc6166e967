"""The ``analysis`` group of a finished results file: data beside theory.

* per point: bootstrap intervals of the growth rates; mean-field log chi1,
  q*, xi_c; the measured correlation depth scale;
* per (mode, width, activation, sigma_b2): the empirical critical sigma_w2
  (zero crossing of the quenched and of the annealed rate) with a bootstrap
  interval, beside the theory's critical sigma_w2 for the same axes, and a
  flag saying where in the grid the crossing lies (``fits.CROSSING_FLAGS``).

Honest intervals: with fewer than 2 Monte Carlo samples there is nothing to
resample, so every interval is NaN (the ``interval_note`` attribute says so).
An end of a critical sigma_w2 interval is NaN where more than its tail of the
bootstrap replicates (2.5 %) have no crossing because the edge moved beyond
that side of the grid: the interval is then open on that side, never clipped
to the grid or extrapolated.
"""

import numpy as np

from .. import activations, fits
from ..theory.architectures import predict
from . import boundary, depth, spectrum
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
    edge_dims = ("mode", "width") + config.edge_dims  # the point's dims but sigma_w2
    sw = 1 + grid_dims.index("sigma_w2")  # its axis in (W, *grid) arrays
    out = {}
    for kind in ESTIMATORS:
        for suffix in ("ci_low", "ci_high"):
            out[f"growth_rate_{kind}_{suffix}"] = []
        for suffix in ("", "_ci_low", "_ci_high", "_flag"):
            out[f"critical_sigma_w2_{kind}{suffix}"] = []
    resampled = config.samples >= 2
    tail = (1 - boundary.LEVEL) / 2
    for m, mode in enumerate(modes):
        y = data[MODE_VARIABLE[mode]]  # (W, A, Sw, Sb, ..., S, R)
        full = {kind: summary["vars"][f"growth_rate_{kind}"][1][m] for kind in ESTIMATORS}
        reps = boundary.bootstrap_rates(
            y, layers, config.depth, config.transient, mode, counts, law
        )
        for kind, rep in zip(ESTIMATORS, reps, strict=True):
            lo, hi = boundary.interval(rep)
            # crossings along sigma_w2 (axis sw of W, A, [I], Sw, Sb, ...): move it last
            rates = np.moveaxis(full[kind], sw, -1)
            edge = boundary.zero_crossing(config.sigma_w2, rates)
            edge_reps = boundary.zero_crossing(config.sigma_w2, np.moveaxis(rep, sw + 1, -1))
            e_lo, e_hi = boundary.interval(edge_reps)
            rep_flags = fits.crossing_flag(config.sigma_w2, np.moveaxis(rep, sw + 1, -1))
            e_hi = np.where((rep_flags == 3).mean(axis=0) > tail, np.nan, e_hi)  # open above
            e_lo = np.where((rep_flags == 4).mean(axis=0) > tail, np.nan, e_lo)  # open below
            if not resampled:
                lo, hi, e_lo, e_hi = (np.full_like(x, np.nan) for x in (lo, hi, e_lo, e_hi))
            out[f"growth_rate_{kind}_ci_low"].append(lo)
            out[f"growth_rate_{kind}_ci_high"].append(hi)
            out[f"critical_sigma_w2_{kind}"].append(edge)
            out[f"critical_sigma_w2_{kind}_ci_low"].append(e_lo)
            out[f"critical_sigma_w2_{kind}_ci_high"].append(e_hi)
            out[f"critical_sigma_w2_{kind}_flag"].append(fits.crossing_flag(config.sigma_w2, rates))
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
    variables.update(spectrum.analyse(config))
    return {
        "vars": variables,
        "attrs": {
            "confidence_level": boundary.LEVEL,
            "bootstrap_replicates": counts.shape[0],
            "bootstrap": "percentile bootstrap over Monte Carlo samples (whole samples)",
            "interval_note": (
                "NaN where the edge left the grid in more than 2.5 % of the replicates"
                if resampled
                else "NaN: fewer than 2 Monte Carlo samples, nothing to resample"
            ),
            "crossing_flags": "; ".join(f"{k} = {v}" for k, v in fits.CROSSING_FLAGS.items()),
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
    if name.endswith("_flag"):
        return f"where critical_sigma_w2_{kind} lies in the grid: see attribute crossing_flags"
    if name.endswith(("low", "high")):
        side = "lower" if name.endswith("low") else "upper"
        return f"{side} end of the bootstrap interval of critical_sigma_w2_{kind}"
    return f"sigma_w2 where growth_rate_{kind} crosses zero (linear between grid points)"
