"""Theory beside every measurement, on a config's whole grid: the architectures' mean-field hooks.

``predict(config)`` returns what the ``analysis`` group stores next to the data,
from the hook the config's architecture declares (``Architecture.mean_field``,
see vxsim.models); without one every theory value is NaN (measured only). A hook
is ``hook(config) -> {key: array}`` with any of the keys of ``empty(config)``;
the two families of hooks are here:

* ``maps``: the mean-field log chi1, q*, xi_c (``theory.grid``) and the critical
  sigma_w2 of the plain MLP; an architecture whose layer is the MLP's with extra
  bias variance passes ``effective_sigma_b2`` (the Elman RNN: the input drive
  U x_t adds sigma_u2 q_x, see models.rnn);
* ``power_law_rates``: no fixed point and no critical line; the growth exponent
  of the mean-field residual gradient curve (``theory.residual``), fitted as the
  data are.

The weight laws (``network.init``, vxsim.laws) all have unit-variance entries
(orthogonal: unit-norm rows scaled by sqrt N), whose mean field is the Gaussian
one: ``predict`` computes on the config without its init axis and repeats the
values along it.
"""

import dataclasses

import numpy as np

from ..fits import growth_rates
from . import meanfield, residual
from .grid import grid as theory_grid


def _extra_points(config):
    """[(index tuple into the extra axes, {name: value})] over every extra-axis combination."""
    shape = tuple(len(v) for v in config.extra_axes.values())
    out = []
    for idx in np.ndindex(*shape):
        out.append(
            (idx, {k: v[i] for (k, v), i in zip(config.extra_axes.items(), idx, strict=True)})
        )
    return out


def empty(config):
    """{key: NaN array} of every theory value a hook may give, shaped for ``config``'s grid."""
    shape = config.grid_shape
    return {
        "log_chi1": np.full(shape, np.nan),
        "q_star": np.full(shape, np.nan),
        "xi_c": np.full(shape, np.nan),
        "critical": np.full((shape[0], shape[2]) + shape[3:], np.nan),
        "rate": np.full((len(config.modes),) + shape, np.nan),
    }


def maps(config, effective_sigma_b2=None):
    """The MLP's mean-field maps on the grid; sigma_b2 -> effective_sigma_b2(config, sb2, extra).

    log chi1, q*, xi_c per point (``theory.grid``), the critical sigma_w2 (chi1 = 1)
    per (activation, sigma_b2, ...), and the growth rate log chi1 in both modes.
    """
    out = empty(config)
    for a, (act, param) in enumerate(config.activation_specs):
        if not act.mlp_theory:
            continue  # NaN: see activations (relu_power)
        for idx, extra in _extra_points(config):
            sb2 = config.sigma_b2
            if effective_sigma_b2 is not None:
                sb2 = effective_sigma_b2(config, sb2, extra)
            values = theory_grid(act, param, config.sigma_w2, sb2, q0=config.q0)
            at = (a, slice(None), slice(None)) + idx
            for key in ("log_chi1", "q_star", "xi_c"):
                out[key][at] = values[key]
            for j, b in enumerate(sb2):
                try:
                    out["critical"][(a, j) + idx] = meanfield.critical_sigma_w2(
                        act, param, b, q0=config.q0
                    )
                except meanfield.NoFixedPoint:
                    pass
    out["rate"][...] = out["log_chi1"][None]
    return out


def power_law_rates(config):
    """Power-law exponent of the mean-field residual gradient curves, per mode and point.

    h^l = h^{l-1} + alpha (W phi(h^{l-1}) + b) (theory.residual.curves), fitted over the
    recorded layers with the data's power law (vxsim.fits.growth_rates).
    """
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
            fit = growth_rates(y, layers, config.depth, config.transient, mode, "power")
            out[m, a] = fit["annealed"]
    return {"rate": out}


def _along_init(config, values):
    """Theory of the init-less grid repeated along the init axis (axis 1 of the grid)."""
    n = len(config.inits)
    out = {}
    for key, v in values.items():
        axis = 2 if key == "rate" else 1  # rate has the mode axis first
        out[key] = np.repeat(np.expand_dims(v, axis), n, axis=axis)
    return out


def predict(config):
    """{name: (dims, array, description)} of the theory for ``config``'s grid."""
    flat = dataclasses.replace(config, inits=("gaussian",), init_axis=False)
    values = empty(flat)
    hook = config.arch.mean_field
    if hook is not None:
        values.update(hook(flat))
    if config.init_axis:
        values = _along_init(config, values)
    dims = config.grid_dims
    return {
        "theory_log_chi1": (
            dims,
            values["log_chi1"],
            "mean-field log chi1 (annealed rate; NaN: none)",
        ),
        "theory_q_star": (dims, values["q_star"], "mean-field fixed point q* (NaN: none)"),
        "theory_xi_c": (dims, values["xi_c"], "mean-field correlation depth scale xi_c"),
        "theory_growth_rate": (
            ("mode",) + dims,
            values["rate"],
            "mean-field growth rate of E|g|^2 in the file's growth law, fitted over the "
            "same layers as the data (NaN: no theory for this architecture)",
        ),
        "theory_critical_sigma_w2": (
            config.edge_dims,
            values["critical"],
            "mean-field critical sigma_w2 (chi1 = 1) for the same sigma_b2 (NaN: none)",
        ),
    }
