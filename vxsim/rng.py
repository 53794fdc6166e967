"""Counter-based normal random numbers: Philox4x32-10 and a portable Box-Muller.

Every weight of every network is a pure function of

    key     = (seed mod 2**32, seed div 2**32)
    counter = (block, layer, sample, stream)

so any backend can regenerate any matrix in any order (DESIGN.md 2.2).  A
Philox call gives four 32-bit words; Box-Muller turns the pairs (w0, w1) and
(w2, w3) into four standard normals, so element ``k`` of a flattened matrix
comes from block ``k // 4``, lane ``k % 4``.

The functions below are written with NumPy operations that behave the same
on arrays (the NumPy engine calls them vectorised) and on scalars inside Numba
kernels (``register_jitable``). The Numba engine compiles Philox from here and
keeps its own Box-Muller (``engines/numba_normals.py``: the same operations in
the same order, unrolled so that LLVM vectorises it; a test checks the two
bit for bit). The normal transform uses only +, -, *, /, sqrt and exact
power-of-two scaling, which IEEE 754 rounds identically everywhere, instead of
the platform's log/sin/cos, so that Z agrees bit for bit between backends.
Keep it that way: no library transcendental functions in this file (nor in its
Numba twin).
"""

import numpy as np

from .numba_optional import register_jitable

# Philox4x32 round constants (Salmon et al. 2011, Random123).
PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)

# Streams: which matrix or vector of a (sample, layer) a counter addresses. Each
# architecture declares the streams it draws (vxsim.models: Architecture.streams).
STREAM_WEIGHT = 0  # W^l (N x N)
STREAM_BIAS = 1  # b^l (N)
STREAM_INPUT = 2  # the two inputs x1, x2 and the input tangent (layer index 0..2)
STREAM_OUTPUT_GRAD = 3  # dE/dh^L, the backprop seed direction
STREAM_SEQUENCE = 4  # RNN inputs x_t (layer index = time step t)
STREAM_GATE = 16  # RNN recurrent matrices W_g (tied): STREAM_GATE + gate index g, layer 0
STREAM_GATE_INPUT = 32  # RNN input matrices U_g (tied): STREAM_GATE_INPUT + g, layer 0
STREAM_LAW = 1024  # weight laws' extra draws: STREAM_LAW + source + ... (engines.weights)

LN2 = 0.6931471805599453
INV_2_32 = 2.0**-32
INV_2_30 = 2.0**-30
HALF_PI = 1.5707963267948966
INV_SQRT2 = 0.7071067811865476
SQRT2 = 1.4142135623730951

# 1 / (2k + 1), k = 0..12: atanh series, log(m) = 2 s sum s^(2k) / (2k + 1).
_LOG_COEF = np.array([1.0 / (2 * k + 1) for k in range(13)])
# Quarter-turn rotation of (sin, cos) by quadrant q = 0..3, exact (+-1 or 0).
_SIN_FROM_S = np.array([1.0, 0.0, -1.0, 0.0])
_SIN_FROM_C = np.array([0.0, 1.0, 0.0, -1.0])
_COS_FROM_S = np.array([0.0, -1.0, 0.0, 1.0])
_COS_FROM_C = np.array([1.0, 0.0, -1.0, 0.0])
_BIT_STEPS = (np.uint64(16), np.uint64(8), np.uint64(4), np.uint64(2), np.uint64(1))
_ONE = np.uint64(1)
_THIRTY = np.uint64(30)
_LOW30 = np.uint64(0x3FFFFFFF)


@register_jitable
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 block: four 32-bit words (held in uint64) from counter and key.

    Each of the ten rounds maps (c0, c1, c2, c3) to
    (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
    and the key is bumped by the Weyl constants (W0, W1) between rounds.
    """
    for r in range(10):
        if r > 0:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> SHIFT32) ^ c1 ^ k0,
            p1 & MASK32,
            (p0 >> SHIFT32) ^ c3 ^ k1,
            p0 & MASK32,
        )
    return c0, c1, c2, c3


@register_jitable
def _bit_length32(k):
    """Number of significant bits of k < 2**32 (0 for k = 0), by binary search."""
    n = k & np.uint64(0)
    for step in _BIT_STEPS:
        big = np.uint64((k >> step) != 0)
        n = n + big * step
        k = k >> (big * step)
    return n + np.uint64(k != 0)


@register_jitable
def log_uniform(k):
    """log(u) for u = (k + 1/2) 2^-32, k a 32-bit word: u in (0, 1), never 0 or 1.

    Write k + 1/2 = m 2^e with m in [1/sqrt2, sqrt2) (exact scaling), then
    log u = (e - 32) log 2 + 2 s (1 + s^2/3 + s^4/5 + ...), s = (m - 1)/(m + 1).
    |s| < 0.172, so 13 terms leave an error below 1e-20.
    """
    x = k + 0.5
    e = np.int64(_bit_length32(k)) - 1
    m = np.ldexp(x, -e)  # in [1, 2); k = 0 gives 0.5 * 2 = 1
    big = m > SQRT2
    m = m * (1.0 - 0.5 * big)
    e = e + big
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    poly = _LOG_COEF[12]
    for j in range(11, -1, -1):
        poly = poly * s2 + _LOG_COEF[j]
    return (e - 32.0) * LN2 + 2.0 * s * poly


@register_jitable
def _sin_cos_small(y):
    """sin y and cos y for |y| <= pi/4 by Taylor series to y^17 and y^18 (error < 1e-17)."""
    y2 = y * y
    sin_poly = 1.0
    cos_poly = 1.0
    for n in range(8, 0, -1):
        sin_poly = 1.0 - sin_poly * y2 / ((2.0 * n) * (2.0 * n + 1.0))
        cos_poly = 1.0 - cos_poly * y2 / ((2.0 * n - 1.0) * (2.0 * n))
    return y * sin_poly, cos_poly


@register_jitable
def sin_cos_turn(k):
    """sin and cos of theta = 2 pi (k + 1/2) 2^-32 for a 32-bit word k.

    The top two bits give the quadrant q, the rest f in (0, 1):
    theta = q pi/2 + pi/4 + y with y = (f - 1/2) pi/2 in (-pi/4, pi/4).
    """
    q = k >> _THIRTY
    f = ((k & _LOW30) + 0.5) * INV_2_30
    y = (f - 0.5) * HALF_PI
    s, c = _sin_cos_small(y)
    s45 = (s + c) * INV_SQRT2  # sin(pi/4 + y)
    c45 = (c - s) * INV_SQRT2  # cos(pi/4 + y)
    sin_t = _SIN_FROM_S[q] * s45 + _SIN_FROM_C[q] * c45
    cos_t = _COS_FROM_S[q] * s45 + _COS_FROM_C[q] * c45
    return sin_t, cos_t


@register_jitable
def box_muller(ka, kb):
    """Two independent N(0, 1) from two 32-bit words:
    r = sqrt(-2 log u_a), (z0, z1) = (r cos theta_b, r sin theta_b)."""
    r = np.sqrt(-2.0 * log_uniform(ka))
    sin_t, cos_t = sin_cos_turn(kb)
    return r * cos_t, r * sin_t


def seed_key(seed):
    """The Philox key (k0, k1) of a 64-bit seed."""
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def normals(seed, sample, layer, stream, count):
    """The first ``count`` standard normals of stream (seed, sample, layer, stream), float64.

    Vectorised NumPy; the reference for every backend.
    """
    k0, k1 = seed_key(seed)
    blocks = (count + 3) // 4
    c0 = np.arange(blocks, dtype=np.uint64)
    c1 = np.full(blocks, layer, dtype=np.uint64)
    c2 = np.full(blocks, sample, dtype=np.uint64)
    c3 = np.full(blocks, stream, dtype=np.uint64)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    z0, z1 = box_muller(w0, w1)
    z2, z3 = box_muller(w2, w3)
    return np.stack([z0, z1, z2, z3], axis=1).reshape(-1)[:count]


def normal_matrix(seed, sample, layer, width, stream=STREAM_WEIGHT, dtype=np.float64):
    """Z^{s,l}: a width x width standard-normal matrix, row-major element order."""
    z = normals(seed, sample, layer, stream, width * width)
    return z.reshape(width, width).astype(dtype)
