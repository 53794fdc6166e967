"""Counter-based normal random numbers: Philox4x32-10 and a portable Box-Muller.

Every weight of every network is a pure function of

    key     = (seed mod 2**32, seed div 2**32)
    counter = (block, layer, sample, stream)

so any backend can regenerate any matrix in any order (DESIGN.md 2.2). A
Philox call gives four 32-bit words; Box-Muller turns the pairs (w0, w1) and
(w2, w3) into four standard normals, so element ``k`` of a flattened matrix
comes from block ``k // 4``, lane ``k % 4``. Philox is checked against
Random123's published known answers (tests/test_rng.py).

The normal transform (generator ``GENERATOR``; files record it, see below).
With u = (ka + 1/2) 2^-32 and theta = 2 pi (kb + 1/2) 2^-32 (never 0 or 1),

    (z0, z1) = sqrt(-2 log u) (cos theta, sin theta).

* log u: ka + 1/2 = m 2^e exactly, m folded into [1/sqrt2, sqrt2], f = m - 1,
  s = f / (2 + f), and fdlibm's minimax series in s^2 (7 coefficients,
  error < 2^-58.45) with log 2 split in two (e LN2_HI exact).
* theta: the top three bits of kb pick the octant, the low 29 bits j give
  y = (j + 1/2) pi/4 2^-29 in (0, pi/4); odd octants reflect j -> 2^29 - 1 - j
  (exact), so the argument is reduced without any rounding but y's own, and
  sin theta and cos theta keep their relative accuracy next to their zeros.
  fdlibm's minimax kernels (6 coefficients each, error < 2^-58) give
  sin y and cos y; the octant swaps them and sets the signs (exact).

Why this transform. Its operations are +, -, *, / and sqrt only, which IEEE
754 rounds correctly everywhere (no fma: NumPy has none), plus exact integer
and power-of-two steps and selects, so the NumPy reference (this file), the
Numba kernels (engines/numba_normals.py) and the CUDA kernels
(kernels/normal.cuh) give the same bits; the constants are stated once, here,
and the CUDA header is generated from them. Every polynomial is evaluated with
constant coefficients (no division in any series: the first transform's Taylor
series for sin and cos divided by (2n)(2n+1) sixteen times per pair, its
bottleneck), and nothing branches, so Numba vectorises it over AVX2 lanes. The
one division (s, one per pair) and the sqrt are single vector instructions;
a division-free log would need a degree-21 polynomial on [1/sqrt2, sqrt2]
(more work than the division) and an inverse-CDF transform needs rational
approximations with divisions and a tail branch. The result is within 2.3e-16
(2 ulps) of the exact normal on every word tested (tests/test_generator.py,
against mpmath and an exactly reduced libm reference), including the extremes
ka = 0 (u = 2^-33, |z| <= 6.76, the largest normal this generator draws) and
ka = 2^32 - 1.

The functions below are written with NumPy operations that behave the same
on arrays (the NumPy engine calls them vectorised) and on scalars inside Numba
kernels (``register_jitable``); selects are written as exact arithmetic
(x * 1 + y * 0, signs +-1). The Numba engine compiles Philox from here and
keeps its own transform (the same operations in the same order, with true
selects, so that LLVM vectorises it; tests check the two bit for bit). No
library transcendental functions in this file, nor in its twins.

Generator version: a change of any of the above changes every number of every
file. ``GENERATOR`` names the transform; results files record it (attribute
``generator``; a file without it was drawn by ``LEGACY_GENERATOR``), and
resume, merge (plain and virtual) and the Dask executor refuse to mix two.
"""

import math

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

# The generator's name, recorded in every results file (attribute ``generator``):
# files drawn with different generators hold different numbers and must not be
# mixed. A file without the attribute was written by LEGACY_GENERATOR.
GENERATOR = "philox4x32-10+octant-box-muller-2"
LEGACY_GENERATOR = "philox4x32-10+box-muller-1"


# pi/4 2^-29: one step of the 29-bit angle within an octant (pi/4 rounded, times 2^-29 exactly)
QUARTER_PI_2_M29 = math.pi / 4 * 2.0**-29
SQRT2 = 1.4142135623730951
TWO_52 = 2.0**52
# fdlibm (Sun Microsystems 1993, freely redistributable; e_log.c, k_sin.c,
# k_cos.c): log 2 split so that e LN2_HI is exact for |e| < 2^11, and the
# minimax coefficients of log(1+f) = f - (f^2/2 - s (f^2/2 + R(s^2))),
# s = f / (2 + f), R(z) = LG1 z + ... + LG7 z^7 on m = 1 + f in [1/sqrt2, sqrt2]
# (error < 2^-58.45), of sin y = y + y^3 (S1 + ... + S6 y^10) and of
# cos y = 1 - y^2/2 + y^4 (C1 + ... + C6 y^10) on |y| <= pi/4 (error < 2^-58).
LN2_HI = 6.93147180369123816490e-01  # 0x3FE62E42 FEE00000
LN2_LO = 1.90821492927058770002e-10  # 0x3DEA39EF 35793C76
LG1 = 6.666666666666735130e-01  # 0x3FE55555 55555593
LG2 = 3.999999999940941908e-01  # 0x3FD99999 9997FA04
LG3 = 2.857142874366239149e-01  # 0x3FD24924 94229359
LG4 = 2.222219843214978396e-01  # 0x3FCC71C5 1D8E78AF
LG5 = 1.818357216161805012e-01  # 0x3FC74664 96CB03DE
LG6 = 1.531383769920937332e-01  # 0x3FC39A09 D078C69F
LG7 = 1.479819860511658591e-01  # 0x3FC2F112 DF3E5244
S1 = -1.66666666666666324348e-01  # 0xBFC55555 55555549
S2 = 8.33333333332248946124e-03  # 0x3F811111 1110F8A6
S3 = -1.98412698298579493134e-04  # 0xBF2A01A0 19C161D5
S4 = 2.75573137070700676789e-06  # 0x3EC71DE3 57B1FE7D
S5 = -2.50507602534068634195e-08  # 0xBE5AE5E6 8A2B9CEB
S6 = 1.58969099521155010221e-10  # 0x3DE5D93A 5ACFD57C
C1 = 4.16666666666666019037e-02  # 0x3FA55555 5555554C
C2 = -1.38888888888741095749e-03  # 0xBF56C16C 16C15177
C3 = 2.48015872894767294178e-05  # 0x3EFA01A0 19CB1590
C4 = -2.75573143513906633035e-07  # 0xBE927E4F 809C52AD
C5 = 2.08757232129817482790e-09  # 0x3E21EE9E BDB4B1C4
C6 = -1.13596475577881948265e-11  # 0xBDA8FAE9 BE8838D4
# Every floating-point constant of the transform, by name: the CUDA header is
# generated from this list (engines/cuda_sources.py); a test checks the hex bits above.
TRANSFORM_CONSTANTS = (
    "QUARTER_PI_2_M29", "SQRT2", "LN2_HI", "LN2_LO",
    "LG1", "LG2", "LG3", "LG4", "LG5", "LG6", "LG7",
    "S1", "S2", "S3", "S4", "S5", "S6", "C1", "C2", "C3", "C4", "C5", "C6",
)  # fmt: skip
_BIT_STEPS = (np.uint64(16), np.uint64(8), np.uint64(4), np.uint64(2), np.uint64(1))
_ONE = np.uint64(1)
_TWO = np.uint64(2)
_TWENTY_NINE = np.uint64(29)
_LOW29 = np.uint64(0x1FFFFFFF)


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

    Write k + 1/2 = m 2^e with m in [1/sqrt2, sqrt2] (exact scaling), f = m - 1,
    s = f / (2 + f) (2 + f = m + 1 is exact: m has at most 33 significant bits),
    z = s^2, w = z^2, R = z (LG1 + w (LG3 + w (LG5 + w LG7))) + w (LG2 + w (LG4 + w LG6)),
    then fdlibm's
    log u = d LN2_HI - ((f^2/2 - (s (f^2/2 + R) + d LN2_LO)) - f),  d = e - 32.
    """
    x = k + 0.5
    e = np.int64(_bit_length32(k)) - 1
    m = np.ldexp(x, -e)  # in [1, 2); k = 0 gives 0.5 * 2 = 1
    big = m > SQRT2
    m = m * (1.0 - 0.5 * big)  # exact: m or m / 2
    d = (e + big) - 32.0
    f = m - 1.0
    s = f / (2.0 + f)
    hfsq = (0.5 * f) * f
    z = s * s
    w = z * z
    t1 = w * (LG2 + w * (LG4 + w * LG6))
    t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)))
    r = t2 + t1
    return d * LN2_HI - ((hfsq - (s * (hfsq + r) + d * LN2_LO)) - f)


@register_jitable
def sin_cos_small(y):
    """sin y and cos y for 0 < y < pi/4, fdlibm's kernels (musl's evaluation order):
    z = y^2, w = z^2,
    sin y = y + (z y) (S1 + z ((S2 + z (S3 + z S4)) + (z w) (S5 + z S6))),
    cos y = h + (((1 - h) - z/2) + z (z (C1 + z (C2 + z C3)) + (w w) (C4 + z (C5 + z C6))))
    with h = 1 - z/2 (the last bracket recovers h's rounding error)."""
    z = y * y
    w = z * z
    rs = (S2 + z * (S3 + z * S4)) + (z * w) * (S5 + z * S6)
    sin_y = y + (z * y) * (S1 + z * rs)
    rc = z * (C1 + z * (C2 + z * C3)) + (w * w) * (C4 + z * (C5 + z * C6))
    hz = 0.5 * z
    h = 1.0 - hz
    cos_y = h + (((1.0 - h) - hz) + z * rc)
    return sin_y, cos_y


@register_jitable
def sin_cos_turn(k):
    """sin and cos of theta = 2 pi (k + 1/2) 2^-32 for a 32-bit word k, branch-free.

    The top three bits give the octant o, the low 29 bits j: theta = o pi/4 + y,
    y = (j + 1/2) pi/4 2^-29 in (0, pi/4). In odd octants theta = (o + 1) pi/4 - y'
    with y' the same formula for j' = 2^29 - 1 - j (exact, an XOR), so the series
    only ever sees (0, pi/4). Then, with (S, C) = (sin, cos) of the reduced angle,
    octants 1, 2, 5, 6 swap S and C, octants 4..7 negate sin, octants 2..5 negate cos:
    exact operations (a select and a sign; written as arithmetic below).
    """
    o = k >> _TWENTY_NINE
    j = (k & _LOW29) ^ ((o & _ONE) * _LOW29)  # 2^29 - 1 - j in odd octants
    y = (j + 0.5) * QUARTER_PI_2_M29
    s, c = sin_cos_small(y)
    # Selects written as arithmetic (exact: one term is a positive number times 1,
    # the other exactly 0), so that the same code runs on arrays and in Numba.
    swap = 1.0 * (((o + _ONE) >> _ONE) & _ONE)
    keep = 1.0 - swap
    sin_sign = 1.0 - 2.0 * (o >> _TWO)
    cos_sign = 1.0 - 2.0 * (((o + _TWO) >> _TWO) & _ONE)
    sin_t = (s * keep + c * swap) * sin_sign
    cos_t = (c * keep + s * swap) * cos_sign
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


def file_generator(attrs):
    """The generator that drew a results file's numbers, from its root attributes."""
    return str(attrs.get("generator", LEGACY_GENERATOR))


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
