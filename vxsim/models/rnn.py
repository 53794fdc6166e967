"""What one time step of an Elman RNN computes (NumPy; engines.generic drives it).

    u_t = W phi(u_{t-1}) + U x_t + b      (u_1 = W h_0 + U x_1 + b)

with W = sqrt(sw2/N) Z_W, U = sqrt(su2/N) Z_U and b = sqrt(sb2) xi drawn **once**
per sample and tied across all T = depth steps, and inputs x_t with i.i.d.
N(0, q_x) entries, fresh every step and the same for both trajectories (which
start from the two initial states h_0 = x1, x2). The pre-activation u_t plays the
MLP's h^l: the step is the MLP's with tied weights and the drive U x_t added to
the bias, so the tangent (forward in time from h_0) and the gradient
(backpropagation through time from step T) are the MLP's too.
"""

import sys

from . import gates
from .architecture import Architecture
from .mlp import (  # noqa: F401  (the rest of the model is the MLP's)
    LOG_SCALE,
    advance,
    arrays,
    cotangent,
    cotangent_start,
    observe,
    start,
    tangent,
    tangent_start,
)

TIED_WEIGHTS = True  # weights(unit, t): one Z_W for every step
STEP_VALUES = 0


def weights(unit, layer):
    """Z_W, the same at every step."""
    return gates.tied_weights(unit, 1)


def bias_term(unit, t):
    """U x_t + b per column (N, 2P), float64; U and b tied."""
    return gates.input_bias(unit, t, 1)


def step(unit, t, state, Z):
    return advance(unit, t, state, Z, bias_term(unit, t))


def effective_sigma_b2(config, sigma_b2, extra):
    """sigma_b2 + sigma_u2 q_x: the drive U x_t acts as extra bias variance in mean field.

    u_t = W h_{t-1} + U x_t + b, and both trajectories see the same fresh x_t every
    step (tied W, U, b; mean field treats them as independent of the state at
    infinite width).
    """
    return sigma_b2 + extra["sigma_u2"] * config.input_variance


def mean_field(config):
    """The MLP's mean-field maps with sigma_b2 -> effective_sigma_b2 (theory.architectures)."""
    from ..theory.architectures import maps  # here, so that importing a model needs no SciPy

    return maps(config, effective_sigma_b2)


ARCHITECTURE = Architecture(
    name="rnn",
    order=2,
    steps=sys.modules[__name__],
    axes={"sigma_u2": [1.0]},
    recurrent=True,
    gates=1,
    streams=gates.streams(1),
    growth_law="exponential",
    fast_paths=("numba", "cuda"),  # fused step kernels (engines.numba_rnn, engines.cuda_rnn)
    mean_field=mean_field,
)
