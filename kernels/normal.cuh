// normal.cuh: the portable Box-Muller transform of vxsim/rng.py, operation for operation.
//
// Only +, -, *, / and sqrt (correctly rounded in IEEE 754 double precision on
// every CPU and GPU), exact power-of-two scaling (ldexp), exact integer
// operations and selects, in the same order as rng.log_uniform,
// rng.sin_cos_small, rng.sin_cos_turn and rng.box_muller, so that the normals
// agree bit for bit with the NumPy and Numba engines. This needs the device
// compiler NOT to contract a * b + c into a fused multiply-add: the engine
// compiles with --fmad=false (and never with fast-math); the host test build
// with -ffp-contract=off. The constants come from rng.py (vx_generated.cuh):
// fdlibm's minimax coefficients (e_log.c, k_sin.c, k_cos.c).
#pragma once
#include "common.cuh"
#include "philox.cuh"
#include "vx_generated.cuh"

// log(u) for u = (k + 1/2) 2^-32: k + 1/2 = m 2^e with m folded into
// [1/sqrt2, sqrt2], f = m - 1, s = f / (2 + f), z = s^2, w = z^2, and
// log u = d LN2_HI - ((f^2/2 - (s (f^2/2 + R) + d LN2_LO)) - f), d = e - 32,
// R = z (LG1 + w (LG3 + w (LG5 + w LG7))) + w (LG2 + w (LG4 + w LG6)).
VX_FN double vx_log_uniform(u32 k)
{
    const double x = (double)k + 0.5;
    int e = vx_bit_length32(k) - 1;
    double m = ldexp(x, -e);  // in [1, 2); exact
    if (m > VX_SQRT2) {
        m = m * 0.5;
        e = e + 1;
    }
    const double d = (double)e - 32.0;
    const double f = m - 1.0;
    const double s = f / (2.0 + f);
    const double hfsq = (0.5 * f) * f;
    const double z = s * s;
    const double w = z * z;
    const double t1 = w * (VX_LG2 + w * (VX_LG4 + w * VX_LG6));
    const double t2 = z * (VX_LG1 + w * (VX_LG3 + w * (VX_LG5 + w * VX_LG7)));
    const double r = t2 + t1;
    return d * VX_LN2_HI - ((hfsq - (s * (hfsq + r) + d * VX_LN2_LO)) - f);
}

// sin y and cos y for 0 < y < pi/4 (fdlibm's kernels, musl's evaluation order).
VX_FN void vx_sin_cos_small(double y, double *sin_y, double *cos_y)
{
    const double z = y * y;
    const double w = z * z;
    const double rs = (VX_S2 + z * (VX_S3 + z * VX_S4)) + (z * w) * (VX_S5 + z * VX_S6);
    *sin_y = y + (z * y) * (VX_S1 + z * rs);
    const double rc = z * (VX_C1 + z * (VX_C2 + z * VX_C3)) + (w * w) * (VX_C4 + z * (VX_C5 + z * VX_C6));
    const double hz = 0.5 * z;
    const double h = 1.0 - hz;
    *cos_y = h + (((1.0 - h) - hz) + z * rc);
}

// sin and cos of theta = 2 pi (k + 1/2) 2^-32: octant o from the top three
// bits, the low 29 bits j (reflected, j -> 2^29 - 1 - j, in odd octants) give
// y = (j + 1/2) pi/4 2^-29 in (0, pi/4); then octants 1, 2, 5, 6 swap sin and
// cos, octants 4..7 negate sin, octants 2..5 negate cos (all exact).
VX_FN void vx_sin_cos_turn(u32 k, double *sin_t, double *cos_t)
{
    const u32 o = k >> 29;
    const u32 j = (k & 0x1FFFFFFFu) ^ ((o & 1u) ? 0x1FFFFFFFu : 0u);
    const double y = ((double)j + 0.5) * VX_QUARTER_PI_2_M29;
    double s, c;
    vx_sin_cos_small(y, &s, &c);
    const bool swap = (((o + 1u) >> 1) & 1u) != 0;
    double st = swap ? c : s;
    double ct = swap ? s : c;
    if (o & 4u)
        st = -st;
    if (((o + 2u) >> 2) & 1u)
        ct = -ct;
    *sin_t = st;
    *cos_t = ct;
}

// Two independent N(0, 1): r = sqrt(-2 log u_a), (z0, z1) = (r cos theta_b, r sin theta_b).
VX_FN void vx_box_muller(u32 ka, u32 kb, double *z0, double *z1)
{
    const double r = sqrt(-2.0 * vx_log_uniform(ka));
    double sin_t, cos_t;
    vx_sin_cos_turn(kb, &sin_t, &cos_t);
    *z0 = r * cos_t;
    *z1 = r * sin_t;
}

// Normals 4 block .. 4 block + 3 of stream (seed key, sample, layer, stream).
VX_FN void vx_normals4(u32 block, u32 layer, u32 sample, u32 stream, u32 k0, u32 k1, double z[4])
{
    const VxWords w = vx_philox4x32_10(block, layer, sample, stream, k0, k1);
    vx_box_muller(w.w0, w.w1, &z[0], &z[1]);
    vx_box_muller(w.w2, w.w3, &z[2], &z[3]);
}

// count normals of (layer0 + li, stream) for li < nlayers into out (nlayers, count), rounded
// to T: element e of a layer is normal 4 b + m of Philox block b = e / 4, lane m = e % 4,
// counter (b, layer, sample, stream): rng.normals, bit for bit. tn > 0: a layer is a tn x tn
// matrix, stored transposed (element (i, j) at [j][i]).
template <class T>
VX_FN void vx_fill_stream_body(T *out, long long count, int layer0, int nlayers, u32 stream,
                               u32 sample, u32 k0, u32 k1, int tn = 0)
{
    VX_BLOCKS(blk)
    {
        const long long per_layer = (count + 3) / 4;
        const long long total = per_layer * nlayers;
        VX_GRID_FOR(g, blk, total)
        {
            const long long li = g / per_layer;
            const long long b = g - li * per_layer;
            double z[4];
            vx_normals4((u32)b, (u32)(layer0 + li), sample, stream, k0, k1, z);
            for (int m = 0; m < 4; ++m) {
                const long long e = 4 * b + m;
                if (e < count) {
                    long long at = e;
                    if (tn > 0) {
                        const long long i = e / tn;
                        at = (e - i * tn) * tn + i;
                    }
                    out[li * count + at] = (T)z[m];
                }
            }
        }
    }
}
