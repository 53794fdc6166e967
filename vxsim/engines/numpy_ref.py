"""The NumPy reference engine: the oracle every faster engine is tested against.

Short and plain on purpose: every architecture's step as its model writes it
(``vxsim.models``), driven through a work unit by ``engines.generic``, with the
weights from ``rng``'s vectorised Philox. One work unit = one (width, sample);
all grid points advance together as the columns of one GEMM per layer. For the
MLP:

JVP: tangents t^l = d h^l along the input direction v0,
    t^1 = sqrt(sw2/N) Z^1 v0,   t^l = sqrt(sw2/N) Z^l (phi'(h^{l-1}) * t^{l-1}),
renormalised every layer, log |t^l|^2 / |v0|^2 accumulated in float64.

VJP: g^l = dE/dh^l from g^L = gamma (E = <gamma, h^L>) down,
    g^{l-1} = phi'(h^{l-1}) * sqrt(sw2/N) (Z^l)^T g^l,
after a forward pass that keeps h only every k ~ sqrt(L) layers; each segment
is recomputed from its checkpoint with weights regenerated from the counter.
"""

from . import gemm, generic
from .graded_svd import log_singular_values as graded_svd  # noqa: F401  (engines.spectrum)

NAME = "numpy"


def available():
    return True


def numerics():
    return gemm.signature()


@gemm.deterministic
def run_unit(config, width, sample):
    """Run one (width, sample) for every grid point; arrays shaped like base.result_shapes."""
    return generic.run_unit(config, width, sample)


def spectrum_arrays(config):
    """Where engines.spectrum keeps a unit on this engine: NumPy, rng's weights."""
    return generic.HostArrays()
