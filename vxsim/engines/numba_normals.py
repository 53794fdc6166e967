"""Counter-based normals on all CPU cores, bit-identical to ``rng.normals``.

Philox4x32-10 from ``rng`` and a Box-Muller transform written here with the
*same* arithmetic as ``rng.box_muller`` (same operations in the same order,
exact power-of-two scaling done with exponent bits instead of ``ldexp``,
quadrant rotation done with selects instead of table lookups), so that LLVM
vectorises it; the tests check it bit for bit against ``rng.normals``. Kernels
that produce random numbers never use fast-math flags.

The Numba engine's kernels draw the MLP's weights with ``fill_share`` (a lane's
share of Z^l, GEMM path) and ``fill_layer`` (all of it, by one lane, fused path);
``normal_matrix`` is the plain parallel fill that the other architectures
(engines.generic) use for their matrices.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from vxsim import rng
from vxsim.engines.numba_types import OPT as _OPT

CHUNK = 256  # Philox blocks (4 normals each) per task of the normal generator
_U0 = np.uint64(0)
_U4 = np.uint64(4)
_MASK32 = rng.MASK32
_MANT = np.uint64(0x000FFFFFFFFFFFFF)
_EXP_ONE = np.uint64(0x3FF0000000000000)
_EXP_MASK = np.uint64(0x7FF)
_S52 = np.uint64(52)
_S30 = rng._THIRTY
_LOW30 = rng._LOW30
# rng's log-series coefficients 1 / (2k + 1), as scalars so the unrolled Horner
# loop below reads constants
_LC0, _LC1, _LC2, _LC3, _LC4, _LC5, _LC6, _LC7, _LC8, _LC9, _LC10, _LC11, _LC12 = (
    float(c) for c in rng._LOG_COEF
)
_STREAM_WEIGHT = np.uint64(rng.STREAM_WEIGHT)
_STREAM_BIAS = np.uint64(rng.STREAM_BIAS)


# ---------------------------------------------------------------- random numbers

# rng's own Philox, inlined at Numba-IR level: called out of line (as a
# register_jitable function is here), the block loop does not vectorise.
_philox = njit(inline="always", error_model="numpy")(rng.philox4x32_10)


@intrinsic
def _f64_bits(typingctx, x):
    """The IEEE 754 bits of a float64, as uint64."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, x):
    """The float64 with these IEEE 754 bits."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@njit(inline="always", **_OPT)
def _log_uniform(k):
    """rng.log_uniform, same arithmetic: log((k + 1/2) 2^-32) for a 32-bit word k.

    x = k + 1/2 = m 2^e with m in [1, 2) read off the exponent bits (exactly
    what ldexp(x, -e) gives, e = bit_length(k) - 1), then the same fold to
    [1/sqrt2, sqrt2) and the same atanh series, Horner from the top.
    """
    x = np.int64(k & _MASK32) + 0.5
    bits = _f64_bits(x)
    e = np.int64((bits >> _S52) & _EXP_MASK) - 1023
    m = _bits_f64((bits & _MANT) | _EXP_ONE)
    if m > rng.SQRT2:
        m = m * 0.5
        e = e + 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    poly = _LC12
    poly = poly * s2 + _LC11
    poly = poly * s2 + _LC10
    poly = poly * s2 + _LC9
    poly = poly * s2 + _LC8
    poly = poly * s2 + _LC7
    poly = poly * s2 + _LC6
    poly = poly * s2 + _LC5
    poly = poly * s2 + _LC4
    poly = poly * s2 + _LC3
    poly = poly * s2 + _LC2
    poly = poly * s2 + _LC1
    poly = poly * s2 + _LC0
    return (e - 32.0) * rng.LN2 + 2.0 * s * poly


@njit(inline="always", **_OPT)
def _box_muller(ka, kb):
    """rng.box_muller, same arithmetic: (r cos theta, r sin theta) from two 32-bit words."""
    r = np.sqrt(-2.0 * _log_uniform(ka))
    q = kb >> _S30
    f = ((kb & _LOW30) + 0.5) * rng.INV_2_30
    y = (f - 0.5) * rng.HALF_PI
    y2 = y * y
    sp = 1.0
    cp = 1.0
    # rng._sin_cos_small, unrolled: n = 8 .. 1, denominators (2n)(2n+1) and (2n-1)(2n).
    sp = 1.0 - sp * y2 / (16.0 * 17.0)
    cp = 1.0 - cp * y2 / (15.0 * 16.0)
    sp = 1.0 - sp * y2 / (14.0 * 15.0)
    cp = 1.0 - cp * y2 / (13.0 * 14.0)
    sp = 1.0 - sp * y2 / (12.0 * 13.0)
    cp = 1.0 - cp * y2 / (11.0 * 12.0)
    sp = 1.0 - sp * y2 / (10.0 * 11.0)
    cp = 1.0 - cp * y2 / (9.0 * 10.0)
    sp = 1.0 - sp * y2 / (8.0 * 9.0)
    cp = 1.0 - cp * y2 / (7.0 * 8.0)
    sp = 1.0 - sp * y2 / (6.0 * 7.0)
    cp = 1.0 - cp * y2 / (5.0 * 6.0)
    sp = 1.0 - sp * y2 / (4.0 * 5.0)
    cp = 1.0 - cp * y2 / (3.0 * 4.0)
    sp = 1.0 - sp * y2 / (2.0 * 3.0)
    cp = 1.0 - cp * y2 / (1.0 * 2.0)
    s = y * sp
    c = cp
    s45 = (s + c) * rng.INV_SQRT2
    c45 = (c - s) * rng.INV_SQRT2
    # Quadrant rotation. rng multiplies by table entries in {-1, 0, 1} and adds;
    # s45 and c45 are never zero for |y| < pi/4, so that sum is exactly one of
    # +-s45, +-c45: the selects below give the same bits.
    if q == 0:
        sin_t, cos_t = s45, c45
    elif q == 1:
        sin_t, cos_t = c45, -s45
    elif q == 2:
        sin_t, cos_t = -s45, -c45
    else:
        sin_t, cos_t = -c45, s45
    return r * cos_t, r * sin_t


@njit(**_OPT)
def _normals_chunk(chunk, count, layer, sample, stream, k0, k1, wbuf, obuf):
    """Normals ``4 chunk CHUNK ...`` of a stream into ``obuf`` (4, CHUNK) float64, lane-major.

    Structure-of-arrays passes over ``CHUNK`` Philox blocks so that Philox and
    Box-Muller vectorise; ``wbuf`` (4, CHUNK) uint64 and ``obuf`` are the calling
    thread's scratch. Returns the number of blocks.
    """
    b0 = chunk * CHUNK
    nb = min(CHUNK, (count + 3) // 4 - b0)
    for i in range(nb):
        w0, w1, w2, w3 = _philox(np.uint64(b0 + i), layer, sample, stream, k0, k1)
        wbuf[0, i] = w0
        wbuf[1, i] = w1
        wbuf[2, i] = w2
        wbuf[3, i] = w3
    for i in range(nb):
        z0, z1 = _box_muller(wbuf[0, i], wbuf[1, i])
        obuf[0, i] = z0
        obuf[1, i] = z1
    for i in range(nb):
        z2, z3 = _box_muller(wbuf[2, i], wbuf[3, i])
        obuf[2, i] = z2
        obuf[3, i] = z3
    return nb


@njit(**_OPT)
def _store_chunk(out, chunk, count, nb, obuf):
    """Interleave a chunk's lanes into ``out`` (cast to its dtype, round to nearest)."""
    base = 4 * chunk * CHUNK
    if base + 4 * nb <= count:
        for i in range(nb):
            out[base + 4 * i] = obuf[0, i]
            out[base + 4 * i + 1] = obuf[1, i]
            out[base + 4 * i + 2] = obuf[2, i]
            out[base + 4 * i + 3] = obuf[3, i]
    else:
        for k in range(count - base):
            out[base + k] = obuf[k % 4, k // 4]


@njit(**_OPT)
def fill_share(Z, xis, nxt, nxt_bias, keys, wbuf, obuf, lane, lanes):
    """Lane ``lane``'s share of Z^{nxt} (and xi^{nxt} into xis[nxt % 2]); nothing if nxt == 0."""
    if nxt <= 0:
        return
    n = Z.shape[0]
    zflat = Z.reshape(n * n)
    lay = np.uint64(nxt)
    nch = ((n * n + 3) // 4 + CHUNK - 1) // CHUNK
    for c in range(lane * nch // lanes, (lane + 1) * nch // lanes):
        nb = _normals_chunk(c, n * n, lay, keys[0], _STREAM_WEIGHT, keys[1], keys[2], wbuf, obuf)
        _store_chunk(zflat, c, n * n, nb, obuf)
    if nxt_bias:
        xi = xis[nxt % 2]
        nch = ((n + 3) // 4 + CHUNK - 1) // CHUNK
        for c in range(lane * nch // lanes, (lane + 1) * nch // lanes):
            nb = _normals_chunk(c, n, lay, keys[0], _STREAM_BIAS, keys[1], keys[2], wbuf, obuf)
            _store_chunk(xi, c, n, nb, obuf)


@njit(**_OPT)
def fill_layer(Z, xi, layer, bias, keys, wbuf, obuf):
    """Z^{layer} (and xi^{layer}) by one lane alone."""
    n = Z.shape[0]
    zflat = Z.reshape(n * n)
    lay = np.uint64(layer)
    nch = ((n * n + 3) // 4 + CHUNK - 1) // CHUNK
    for c in range(nch):
        nb = _normals_chunk(c, n * n, lay, keys[0], _STREAM_WEIGHT, keys[1], keys[2], wbuf, obuf)
        _store_chunk(zflat, c, n * n, nb, obuf)
    if bias:
        nch = ((n + 3) // 4 + CHUNK - 1) // CHUNK
        for c in range(nch):
            nb = _normals_chunk(c, n, lay, keys[0], _STREAM_BIAS, keys[1], keys[2], wbuf, obuf)
            _store_chunk(xi, c, n, nb, obuf)


@njit(parallel=True, cache=True)
def _fill(out, layer, sample, stream, k0, k1, threads):
    """out[i] = normal i of the stream (rounded to out's dtype), chunks shared by the threads."""
    count = out.size
    chunks = ((count + 3) // 4 + CHUNK - 1) // CHUNK
    lanes = max(1, min(chunks, threads))
    for lane in prange(lanes):
        words = np.empty((4, CHUNK), dtype=np.uint64)
        values = np.empty((4, CHUNK))
        for c in range(lane * chunks // lanes, (lane + 1) * chunks // lanes):
            nb = _normals_chunk(c, count, layer, sample, stream, k0, k1, words, values)
            _store_chunk(out, c, count, nb, values)


def _call(out, seed, sample, layer, stream):
    k0, k1 = rng.seed_key(seed)
    keys = np.uint64(layer), np.uint64(sample), np.uint64(stream), np.uint64(k0), np.uint64(k1)
    _fill(out, *keys, numba.get_num_threads())
    return out


def normals(seed, sample, layer, stream, count):
    """rng.normals(seed, sample, layer, stream, count), computed in parallel."""
    return _call(np.empty(count), seed, sample, layer, stream)


def normal_matrix(config, width, sample, layer, stream, dtype):
    """Z of (layer, stream) as engines.generic asks for it (width x width, ``dtype``).

    Written straight in ``dtype``: each float64 normal rounded once on store, as
    ``rng.normal_matrix``'s astype rounds it.
    """
    out = np.empty(width * width, dtype=dtype)
    return _call(out, config.seed, sample, layer, stream).reshape(width, width)
