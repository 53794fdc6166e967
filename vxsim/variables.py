"""The catalogue of every variable vxsim measures or stores: one entry per name.

An entry says what the engines, the store (HDF5 schema, merge, ``vxsim show``)
and readers (xarray's attributes come from the file's) need to know:

* ``dims``: dimension names, where ``GRID`` stands for the config's grid axes
  (activation, sigma_w2, sigma_b2 and the architecture's further axes);
* ``dtype``, ``fill`` (the value of a not-yet-computed entry);
* ``long_name`` and ``units`` (CF attributes written beside the data);
* ``modes``: which measurement modes produce it: "always", "jvp", "vjp"
  ("both": only when jvp and vjp are measured together), "spectrum" (only when
  ``measure.spectrum`` asks for Jacobian singular values; ``Config.measured``);
* ``role``: who writes it: "unit" (an engine, one hyperslab per work unit
  (width, sample)), "progress" (the store's own bookkeeping), "summary"
  (growth rates written when a sweep finishes; ``long_name`` there is a
  template with ``{per}``, the unit of the growth law).

A per-unit variable has dims (width, GRID, sample[, ...]); it is per recorded
layer when ``layer`` is its last dim (the spectrum's are per spectrum_layer and
singular value, sv). Adding one: an entry in ``CATALOGUE`` and
the code that computes it in the engines (``run_unit`` returns it under its
name, shaped like ``engines.base.result_shapes``); the file's schema, resume,
merge, the shard files and ``open_results`` follow from the entry.

This module imports nothing of vxsim: every layer may use it.
"""

from typing import NamedTuple

import numpy as np

GRID = "*grid"  # placeholder in ``dims`` for the config's grid axes
MODES = ("always", "jvp", "vjp", "both", "spectrum")
ROLES = ("unit", "progress", "summary")


class Variable(NamedTuple):
    """One stored variable (see the module docstring for the fields)."""

    name: str
    dims: tuple
    dtype: type
    long_name: str
    units: str = "1"
    modes: str = "always"
    fill: object = np.nan
    role: str = "unit"

    @property
    def per_layer(self):
        """Whether the variable has one value per recorded layer (its last dim)."""
        return self.dims[-1] == "layer"


UNIT_DIMS = ("width", GRID, "sample", "layer")
POINT_DIMS = ("width", GRID, "sample")
SUMMARY_DIMS = ("mode", "width", GRID)
SPECTRUM_DIMS = ("width", GRID, "sample", "spectrum_layer", "sv")
SPECTRUM_SUMMARY_DIMS = ("width", GRID, "spectrum_layer")
# a summary statistic of lambda = s^2 beyond the float64 range is NaN, never inf
_BEYOND = "; NaN where it lies beyond the float64 range"

CATALOGUE = {
    v.name: v
    for v in (
        Variable(
            "log_q",
            UNIT_DIMS,
            np.float64,
            "log of the mean squared pre-activation of input 1",
        ),
        Variable(
            "corr",
            UNIT_DIMS,
            np.float64,
            "correlation of the pre-activations of the two inputs",
        ),
        Variable(
            "log_tangent_norm",
            UNIT_DIMS,
            np.float64,
            "JVP: log |J v0|^2 at layer l relative to |v0|^2",
            modes="jvp",
        ),
        Variable(
            "log_grad_norm",
            UNIT_DIMS,
            np.float64,
            "VJP: log |dE/dh^l|^2 relative to its value at the output layer",
            modes="vjp",
        ),
        Variable(
            "diverged",
            POINT_DIMS,
            np.int32,
            "first layer at which the point left the float range (0: never)",
            units="layer",
            fill=0,
        ),
        Variable(
            "log_singular_value",
            SPECTRUM_DIMS,
            np.float64,
            "log s_i of the singular values of J^l = dh^l/dh^0 (trajectory 1), sorted "
            "descending; NaN past the state dimension of a smaller width or where diverged",
            modes="spectrum",
        ),
        Variable(
            "completed",
            ("width", "sample"),
            np.uint8,
            "1 where the work unit (width, sample) is finished",
            fill=0,
            role="progress",
        ),
        Variable(
            "growth_rate_quenched",
            SUMMARY_DIMS,
            np.float64,
            "growth rate {per} of log squared gradient norm, mean over samples of log",
            role="summary",
        ),
        Variable(
            "growth_rate_quenched_se",
            SUMMARY_DIMS,
            np.float64,
            "standard error of growth_rate_quenched",
            role="summary",
        ),
        Variable(
            "growth_rate_annealed",
            SUMMARY_DIMS,
            np.float64,
            "growth rate {per} of log of the sample mean of squared gradient norm",
            role="summary",
        ),
        Variable(
            "growth_rate_annealed_se",
            SUMMARY_DIMS,
            np.float64,
            "jackknife standard error of growth_rate_annealed",
            role="summary",
        ),
        Variable(
            "lambda_mean",
            SPECTRUM_SUMMARY_DIMS,
            np.float64,
            "mean over the singular values of lambda = s^2, mean over samples" + _BEYOND,
            modes="spectrum",
            role="summary",
        ),
        Variable(
            "lambda_mean_se",
            SPECTRUM_SUMMARY_DIMS,
            np.float64,
            "standard error of lambda_mean over samples" + _BEYOND,
            modes="spectrum",
            role="summary",
        ),
        Variable(
            "lambda_var_norm",
            SPECTRUM_SUMMARY_DIMS,
            np.float64,
            "Var(lambda)/mean(lambda)^2 over the singular values, mean over samples" + _BEYOND,
            modes="spectrum",
            role="summary",
        ),
        Variable(
            "lambda_var_norm_se",
            SPECTRUM_SUMMARY_DIMS,
            np.float64,
            "standard error of lambda_var_norm over samples" + _BEYOND,
            modes="spectrum",
            role="summary",
        ),
        Variable(
            "s_max",
            SPECTRUM_SUMMARY_DIMS,
            np.float64,
            "largest singular value of J^l, mean over samples" + _BEYOND,
            modes="spectrum",
            role="summary",
        ),
        Variable(
            "s_max_se",
            SPECTRUM_SUMMARY_DIMS,
            np.float64,
            "standard error of s_max over samples" + _BEYOND,
            modes="spectrum",
            role="summary",
        ),
    )
}

# The per-layer variable whose growth rate each mode measures (the summary's input).
MODE_VARIABLE = {"jvp": "log_tangent_norm", "vjp": "log_grad_norm"}


def produced(variable, modes):
    """Whether a run measuring ``modes`` (a tuple of 'jvp'/'vjp', and 'spectrum' when the
    Jacobian spectrum is asked: ``Config.measured``) produces ``variable``."""
    if variable.modes == "always":
        return True
    if variable.modes == "both":
        return "jvp" in modes and "vjp" in modes
    return variable.modes in modes


def dims_of(variable, grid_dims):
    """The variable's dimension names with ``GRID`` expanded to ``grid_dims``."""
    out = ()
    for d in variable.dims:
        out += tuple(grid_dims) if d == GRID else (d,)
    return out


def of_role(role, config=None):
    """Catalogue entries of a role, in catalogue order; with ``config``, those it produces."""
    return [
        v
        for v in CATALOGUE.values()
        if v.role == role and (config is None or produced(v, _measured(config)))
    ]


def unit_variables(config):
    """{name: dims} of the per-unit variables (engine results) this config produces."""
    return {v.name: dims_of(v, config.grid_dims) for v in of_role("unit", config)}


def stored_variables(config):
    """{name: dims} of every variable a running results file holds (units and progress)."""
    return {
        v.name: dims_of(v, config.grid_dims)
        for v in CATALOGUE.values()
        if v.role in ("unit", "progress") and produced(v, _measured(config))
    }


def attributes(name):
    """The CF attributes {long_name, units} of a catalogue variable ({} if unknown)."""
    v = CATALOGUE.get(name)
    return {} if v is None else {"long_name": v.long_name, "units": v.units}


def _measured(config):
    """config.measured (modes plus 'spectrum'), or its modes for a config that predates it."""
    return getattr(config, "measured", config.modes)
