"""What a network is fed and what it is differentiated against, shared by every model and engine.

The two inputs x1, x2 and the input tangent v0 start the forward pass, the
output direction gamma starts backpropagation (E = <gamma, h^L>), and the
bias noise xi^l and weights Z^l are the per-layer random draws; all are pure
functions of (seed, sample, layer, stream) (``vxsim.rng``), so every engine
regenerates the same numbers.
"""

import numpy as np

from .. import rng


def inputs(config, width, sample, normals=rng.normals):
    """The two inputs x1, x2 and the input tangent v0, shared by all grid points.

    x1 and x2 have mean squared entry q0 and correlation exactly c0; v0 has
    mean squared entry 1. All three come from the counter-based stream
    (``normals``: rng.normals, or an engine's bit-identical generator of it).
    """
    z = [normals(config.seed, sample, k, rng.STREAM_INPUT, width) for k in range(3)]
    u1 = z[0] / np.linalg.norm(z[0])
    e2 = z[1] - (z[1] @ u1) * u1
    e2 = e2 / np.linalg.norm(e2) if width > 1 else e2 * 0.0
    scale = np.sqrt(config.q0 * width)
    x1 = scale * u1
    x2 = scale * (config.c0 * u1 + np.sqrt(1.0 - config.c0**2) * e2)
    v0 = z[2] * np.sqrt(width) / np.linalg.norm(z[2])
    return x1, x2, v0


def output_direction(config, width, sample, normals=rng.normals):
    """dE/dh^L: the direction backprop starts from (E = <gamma, h^L>), unit mean square
    (``normals`` as for ``inputs``)."""
    gamma = normals(config.seed, sample, 0, rng.STREAM_OUTPUT_GRAD, width)
    return gamma * np.sqrt(width) / np.linalg.norm(gamma)


def bias(config, width, sample, layer):
    """xi^l: the bias noise of a layer, shared by all grid points (b = sqrt(sigma_b2) xi)."""
    return rng.normals(config.seed, sample, layer, rng.STREAM_BIAS, width)


def weights(config, width, sample, layer, dtype=None):
    """Z^{s,l} in the run's precision (W^l = sqrt(sigma_w2 / N) Z)."""
    return rng.normal_matrix(config.seed, sample, layer, width, dtype=dtype or config.dtype)


def mean_square(x):
    """Per-column mean of x^2, accumulated in float64: q = (1/N) sum_i x_i^2."""
    return np.einsum("ij,ij->j", x, x, dtype=np.float64) / x.shape[0]
