"""What every engine shares: the batched grid columns, the inputs, the result layout.

A work unit is one (width, Monte Carlo sample). All grid points of the unit
(activation x sigma_w2 x sigma_b2, flattened to ``P`` points with the
activation outermost) share the sample's weights Z^{s,l} (common random
numbers, DESIGN.md 2.1), so each layer is one GEMM over all of their columns.

An engine is a module with ``NAME``, ``available() -> bool`` and
``run_unit(config, width, sample) -> dict`` returning the arrays of
``result_shapes``.
"""

from dataclasses import dataclass

import numpy as np

from .. import variables
from ..models.inputs import (  # noqa: F401  (the engines' names for the model inputs)
    bias,
    inputs,
    mean_square,
    output_direction,
    weights,
)
from .schedule import ZSTORE_BYTES

# Pre-activations of non-homogeneous activations beyond this (relative to the
# dtype's sqrt(max)) are declared diverged: the next GEMM could overflow.
_DIVERGE_MARGIN = 1e-4


@dataclass(frozen=True)
class Grid:
    """Per-point parameters of a unit's P batched grid points (activation outermost, then init)."""

    sigma_w2: np.ndarray  # (P,)
    sigma_b2: np.ndarray  # (P,)
    groups: tuple  # ((Activation, param, slice of points), ...) one per activation
    extra: dict = None  # {axis name: (P,) values} of the architecture's further axes
    init: np.ndarray = None  # (P,) index into config.inits of each point's weight law

    @property
    def points(self):
        return self.sigma_w2.size


def grid(config):
    """Flatten the grid axes (activation, [init], sigma_w2, sigma_b2, ...) into P points, C order.

    (A unit holds one weight law: engines.run splits the others off, so the init
    axis is absent or of length 1 here; the flattening takes any length.)
    """
    axes = [config.sigma_w2, config.sigma_b2, *config.extra_axes.values()]
    mesh = [m.ravel() for m in np.meshgrid(*axes, indexing="ij")]
    n_init = len(config.inits) if config.init_axis else 1
    block = mesh[0].size
    per_act = n_init * block
    groups = tuple(
        (act, param, slice(i * per_act, (i + 1) * per_act))
        for i, (act, param) in enumerate(config.activation_specs)
    )
    reps = len(groups) * n_init
    extra = {name: np.tile(m, reps) for name, m in zip(config.extra_axes, mesh[2:], strict=True)}
    init = np.tile(np.repeat(np.arange(n_init), block), len(groups))
    return Grid(np.tile(mesh[0], reps), np.tile(mesh[1], reps), groups, extra, init)


def mem_available():
    """Bytes of memory available now (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def divergence_limit(dtype):
    """|h| above which a non-renormalisable pre-activation counts as diverged."""
    return float(np.sqrt(np.finfo(dtype).max)) * _DIVERGE_MARGIN


def result_shapes(config):
    """Arrays an engine returns for one unit, with their dims after (width, ..., sample).

    One per catalogue variable of role "unit" that the config's modes produce
    (``vxsim.variables``): grid_shape, plus the recorded layers when per layer.
    """
    shape = config.grid_shape
    return {
        v.name: shape + (config.layers.size,) if v.per_layer else shape
        for v in variables.of_role("unit", config)
        if v.modes != "spectrum"  # engines.spectrum's, added by engines.run
    }


def spectrum_shape(config):
    """(grid..., spectrum layers, D) of log_singular_value, D the state dimension of the
    largest width (a smaller width's values are padded with NaN)."""
    D = config.state_dimension(max(config.widths))
    return config.grid_shape + (config.spectrum_layers.size, D)


def record_index(config):
    """layer -> position on the recorded-layer axis, -1 where not recorded."""
    index = np.full(config.depth + 1, -1, dtype=np.int64)
    index[config.layers] = np.arange(config.layers.size)
    return index


def empty_results(config):
    """Per-point result buffers, (P, R) per layer or (P,), of the catalogue's dtype and fill.

    (log_q, corr and the norms: float64 NaN; diverged: int32 zeros.)
    """
    n_points = int(np.prod(config.grid_shape))
    out = {}
    for name, shape in result_shapes(config).items():
        v = variables.CATALOGUE[name]
        flat = (n_points, shape[-1]) if v.per_layer else (n_points,)
        out[name] = np.full(flat, v.fill, dtype=v.dtype)
    return out


def shape_results(config, flat):
    """(P, ...) buffers -> (activation, [init], sigma_w2, sigma_b2, ...) arrays."""
    return {k: v.reshape(config.grid_shape + v.shape[1:]) for k, v in flat.items()}


def estimate_unit_bytes(config, width):
    """Rough peak memory of one work unit on the NumPy/Numba engines, in bytes.

    Z in float64 and in the run's precision, about eight (N x P) state arrays,
    and in VJP mode the checkpoints plus one recomputed segment of h. A unit runs
    its weight laws one at a time (engines.run): the points of one law, plus the
    float64 Z, Q and R of a law other than the Gaussian.
    """
    n_points = int(np.prod(config.grid_shape)) // len(config.inits)
    item = config.dtype.itemsize
    gates = config.arch.gates  # N x N matrices per step (one per gate)
    matrices = 2 if config.recurrent else 1  # RNNs keep W and U (tied) for the whole unit
    total = gates * matrices * width * width * (8 + item) + 8 * gates * width * n_points * 3 * item
    if "vjp" in config.modes:
        k = config.checkpoint_every
        stored = config.depth // k + k + 2
        total += stored * width * n_points * item
    total += n_points * config.layers.size * 8 * 5
    total += ZSTORE_BYTES if "vjp" in config.modes else 0
    total += 0 if config.gaussian_weights else 3 * width * width * 8
    if config.spectrum_layers.size:
        total = max(total, spectrum_unit_bytes(config, width))
    return int(total)


def spectrum_unit_bytes(config, width):
    """Peak memory of a unit's spectrum pass (engines.spectrum): per point the D-column
    tangent block and about four more of its size (the model's temporaries), Q, K and
    the QR's work, (D x D) x 4 in float64, and the results; plus the weights. One
    weight law's points at a time (engines.run)."""
    n_points = int(np.prod(config.grid_shape)) // len(config.inits)
    D = config.state_dimension(width)
    item = np.dtype(config.spectrum_precision).itemsize
    gates = config.arch.gates
    block = 5 * 2 * config.arch.gates * width * D * n_points * item
    triangle = 4 * D * D * n_points * 8
    results = n_points * config.spectrum_layers.size * D * 8
    return int(block + triangle + results + 2 * gates * width * width * 8)
