"""Theory beside every measurement, per architecture, on a config's whole grid.

``predict(config)`` returns what the ``analysis`` group stores next to the data:

* mlp: the mean-field log chi1, q*, xi_c (``theory.grid``) and the critical sigma_w2;
* rnn (Elman): the same maps with the input acting as extra bias variance,
  u_t = W h_{t-1} + U x_t + b has sigma_b2_eff = sigma_b2 + sigma_u2 q_x, because
  both trajectories see the same fresh x_t every step (tied W, U, b; mean field
  treats them as independent of the state at infinite width);
* residual: no fixed point and no critical line; the growth exponent of the
  mean-field gradient curve (``theory.residual``), fitted as the data are;
* gru, lstm: no theory (NaN): measured only.
"""

import numpy as np

from ..analysis import growth
from . import meanfield, residual
from .grid import grid as theory_grid


def effective_sigma_b2(config, sigma_b2, extra):
    """sigma_b2 + sigma_u2 q_x for the Elman RNN; sigma_b2 elsewhere."""
    if config.architecture == "rnn":
        return sigma_b2 + extra["sigma_u2"] * config.input_variance
    return sigma_b2


def _extra_points(config):
    """[(index tuple into the extra axes, {name: value})] over every extra-axis combination."""
    shape = tuple(len(v) for v in config.extra_axes.values())
    out = []
    for idx in np.ndindex(*shape):
        out.append(
            (idx, {k: v[i] for (k, v), i in zip(config.extra_axes.items(), idx, strict=True)})
        )
    return out


def predict(config):
    """{name: (dims, array, description)} of the theory for ``config``'s grid."""
    shape = config.grid_shape
    log_chi1 = np.full(shape, np.nan)
    q_star = np.full(shape, np.nan)
    xi_c = np.full(shape, np.nan)
    critical = np.full((shape[0], shape[2]) + shape[3:], np.nan)
    rate = np.full((len(config.modes),) + shape, np.nan)
    arch = config.architecture
    if arch in ("mlp", "rnn"):
        for a, (act, param) in enumerate(config.activation_specs):
            if not act.mlp_theory:
                continue  # NaN: see activations (relu_power)
            for idx, extra in _extra_points(config):
                sb2 = effective_sigma_b2(config, config.sigma_b2, extra)
                values = theory_grid(act, param, config.sigma_w2, sb2, q0=config.q0)
                at = (a, slice(None), slice(None)) + idx
                log_chi1[at], q_star[at], xi_c[at] = (
                    values["log_chi1"],
                    values["q_star"],
                    values["xi_c"],
                )
                for j, b in enumerate(sb2):
                    try:
                        critical[(a, j) + idx] = meanfield.critical_sigma_w2(
                            act, param, b, q0=config.q0
                        )
                    except meanfield.NoFixedPoint:
                        pass
        rate[...] = log_chi1[None]
    elif arch == "residual":
        rate[...] = _residual_rates(config)
    dims = config.grid_dims
    return {
        "theory_log_chi1": (dims, log_chi1, "mean-field log chi1 (annealed rate; NaN: none)"),
        "theory_q_star": (dims, q_star, "mean-field fixed point q* (NaN: none)"),
        "theory_xi_c": (dims, xi_c, "mean-field correlation depth scale xi_c"),
        "theory_growth_rate": (
            ("mode",) + dims,
            rate,
            "mean-field growth rate of E|g|^2 in the file's growth law, fitted over the "
            "same layers as the data (NaN: no theory for this architecture)",
        ),
        "theory_critical_sigma_w2": (
            ("activation", "sigma_b2") + dims[3:],
            critical,
            "mean-field critical sigma_w2 (chi1 = 1) for the same sigma_b2 (NaN: none)",
        ),
    }


def _residual_rates(config):
    """Power-law exponent of the mean-field residual gradient curves, per mode and point."""
    layers = np.asarray(config.layers)
    out = np.full((len(config.modes),) + config.grid_shape, np.nan)
    sw2, sb2, alpha = np.meshgrid(
        config.sigma_w2, config.sigma_b2, config.extra_axes["alpha"], indexing="ij"
    )
    for a, (act, param) in enumerate(config.activation_specs):
        moments = residual.moment_function(act, param)
        _, log_chi = residual.curves(moments, sw2, sb2, alpha, config.q0, config.depth)
        for m, mode in enumerate(config.modes):
            curve = log_chi[layers] if mode == "jvp" else log_chi[-1] - log_chi[layers]
            y = np.moveaxis(curve, 0, -1)[..., None, :]  # one "sample"
            fit = growth.growth_rates(y, layers, config.depth, config.transient, mode, "power")
            out[m, a] = fit["annealed"]
    return out
