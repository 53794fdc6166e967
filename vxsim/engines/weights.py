"""A unit's weight matrices under its weight law (``network.init``, vxsim.laws).

The Gaussian law is the engines' Z of (layer, stream) as it always was: this
module is not on that path. Any other law draws the same Z in float64 from the
engine's generator, maps it with the law's ``draw`` on the unit's arrays (NumPy,
or CuPy on a GPU: QR by LAPACK or cuSOLVER) and rounds once to the run's dtype.

Which matrices follow the law (``law_stream``): the layer weights
(rng.STREAM_WEIGHT: MLP, residual net) and the RNNs' recurrent matrices
(rng.STREAM_GATE + g: Elman, GRU, LSTM); never the inputs, the biases nor the
RNNs' input matrices (rng.STREAM_GATE_INPUT + g).

Auxiliary draws (Student's t): for the matrix of (layer, source stream s),
attempt k, flat entry i (row-major), Philox block b = i // 2 of the counter

    (b mod 2^32, layer, sample, rng.STREAM_LAW + s + 32 (2 k + b div 2^32))

gives x = normal number i mod 2 of box_muller(w0, w1) and log u = log_uniform
of w2 (i even) or w3 (i odd): rng's portable transforms, so the draws are the
same on every backend (computed on the host, copied to a device). Since
N <= config.MAX_WIDTH = 2^17, b < 2^33 and the stream word stays below 2^32.
"""

import numpy as np

from .. import laws, rng


def law_stream(stream):
    """Whether the matrix of ``stream`` follows the weight law (else it is always Gaussian)."""
    return stream == rng.STREAM_WEIGHT or rng.STREAM_GATE <= stream < rng.STREAM_GATE_INPUT


def unit_law(config):
    """(Law, param) of a unit's config, which holds one law (engines.run splits the others)."""
    if len(config.inits) != 1:
        raise ValueError(f"a work unit runs one weight law, got {config.inits}")
    return laws.parse(config.inits[0])


def aux_draws(seed, sample, layer, stream, xp=np, to_host=np.asarray):
    """aux(attempt, index) -> (x, log_u) of the law's further draws (see the module docstring);
    ``index`` on the unit's arrays, taken to the host by ``to_host``."""
    k0, k1 = rng.seed_key(seed)

    def aux(attempt, index):
        host = np.asarray(to_host(index)).astype(np.uint64)
        block = host >> np.uint64(1)
        odd = (host & np.uint64(1)).astype(bool)
        c0 = block & rng.MASK32
        c1 = np.full(host.shape, layer, dtype=np.uint64)
        c2 = np.full(host.shape, sample, dtype=np.uint64)
        base = np.uint64(rng.STREAM_LAW + stream + 64 * attempt)
        c3 = base + np.uint64(32) * (block >> rng.SHIFT32)
        w0, w1, w2, w3 = rng.philox4x32_10(c0, c1, c2, c3, k0, k1)
        z0, z1 = rng.box_muller(w0, w1)
        x = np.where(odd, z1, z0)
        log_u = rng.log_uniform(np.where(odd, w3, w2))
        return xp.asarray(x), xp.asarray(log_u)

    return aux


def draw(law, param, Z, xp, seed, sample, layer, stream, to_host=np.asarray):
    """The law's matrix (float64, unit entry variance, C order) from the float64 Gaussian Z."""
    aux = aux_draws(seed, sample, layer, stream, xp, to_host) if law.needs_aux else None
    return xp.ascontiguousarray(law.draw(Z, xp, param, aux))


def matrix(unit, layer, stream, dtype):
    """Z of (layer, stream) for ``unit`` (engines.generic.Unit) under its config's law."""
    law, param = unit.law
    arrays, config = unit.arrays, unit.config
    if law.name == "gaussian" or not law_stream(stream):
        return arrays.normal_matrix(config, unit.width, unit.sample, layer, stream, dtype)
    Z = arrays.normal_matrix(config, unit.width, unit.sample, layer, stream, np.float64)
    out = draw(law, param, Z, unit.xp, config.seed, unit.sample, layer, stream, arrays.to_host)
    return out.astype(dtype, copy=False)
