// normal.cuh: the portable Box-Muller transform of vxsim/rng.py, operation for operation.
//
// Only +, -, *, / and sqrt (correctly rounded in IEEE 754 double precision on
// every CPU and GPU) and exact power-of-two scaling (ldexp), in the same order
// as rng.log_uniform, rng.sin_cos_turn and rng.box_muller, so that the normals
// agree bit for bit with the NumPy and Numba engines. This needs the device
// compiler NOT to contract a * b + c into a fused multiply-add: the engine
// compiles with --fmad=false (and never with fast-math); the host test build
// with -ffp-contract=off. The constants come from rng.py (vx_generated.cuh).
#pragma once
#include "common.cuh"
#include "philox.cuh"
#include "vx_generated.cuh"

// log(u) for u = (k + 1/2) 2^-32: k + 1/2 = m 2^e with m folded into
// [1/sqrt2, sqrt2), then log u = (e - 32) log 2 + 2 s sum_k s^(2k) / (2k + 1),
// s = (m - 1) / (m + 1), 13 terms by Horner from the top.
VX_FN double vx_log_uniform(u32 k)
{
    const double x = (double)k + 0.5;
    int e = vx_bit_length32(k) - 1;
    double m = ldexp(x, -e);  // in [1, 2); exact
    if (m > VX_SQRT2) {
        m = m * 0.5;
        e = e + 1;
    }
    const double s = (m - 1.0) / (m + 1.0);
    const double s2 = s * s;
    double poly = VX_LOG_COEF_12;
    poly = poly * s2 + VX_LOG_COEF_11;
    poly = poly * s2 + VX_LOG_COEF_10;
    poly = poly * s2 + VX_LOG_COEF_9;
    poly = poly * s2 + VX_LOG_COEF_8;
    poly = poly * s2 + VX_LOG_COEF_7;
    poly = poly * s2 + VX_LOG_COEF_6;
    poly = poly * s2 + VX_LOG_COEF_5;
    poly = poly * s2 + VX_LOG_COEF_4;
    poly = poly * s2 + VX_LOG_COEF_3;
    poly = poly * s2 + VX_LOG_COEF_2;
    poly = poly * s2 + VX_LOG_COEF_1;
    poly = poly * s2 + VX_LOG_COEF_0;
    return ((double)e - 32.0) * VX_LN2 + 2.0 * s * poly;
}

// sin and cos of theta = 2 pi (k + 1/2) 2^-32: quadrant q from the top two
// bits, theta = q pi/2 + pi/4 + y, |y| < pi/4, Taylor series of sin y and
// cos y to y^17 and y^18, then the rotations by pi/4 and by the quadrant
// (exact: a sign change or a swap).
VX_FN void vx_sin_cos_turn(u32 k, double *sin_t, double *cos_t)
{
    const u32 q = k >> 30;
    const double f = ((double)(k & 0x3FFFFFFFu) + 0.5) * VX_INV_2_30;
    const double y = (f - 0.5) * VX_HALF_PI;
    const double y2 = y * y;
    double sp = 1.0;
    double cp = 1.0;
    for (int n = 8; n > 0; --n) {
        const double dn = (double)n;
        sp = 1.0 - sp * y2 / ((2.0 * dn) * (2.0 * dn + 1.0));
        cp = 1.0 - cp * y2 / ((2.0 * dn - 1.0) * (2.0 * dn));
    }
    const double s = y * sp;
    const double c = cp;
    const double s45 = (s + c) * VX_INV_SQRT2;  // sin(pi/4 + y)
    const double c45 = (c - s) * VX_INV_SQRT2;  // cos(pi/4 + y)
    if (q == 0) {
        *sin_t = s45;
        *cos_t = c45;
    } else if (q == 1) {
        *sin_t = c45;
        *cos_t = -s45;
    } else if (q == 2) {
        *sin_t = -s45;
        *cos_t = -c45;
    } else {
        *sin_t = -c45;
        *cos_t = s45;
    }
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
