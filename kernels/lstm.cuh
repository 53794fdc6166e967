// lstm.cuh: one element of an LSTM step (models/lstm.py, in its order of operations), for
// rnn.cu's step kernels (states in rows of global memory, the products from cuBLAS) and
// persist_lstm.cu's persistent kernels (states in shared memory, the products by the
// block): values in, values out, so that both paths run this arithmetic and nothing else.
//
//   a_q = s z_q + real(b_q)    q = i, f, g, o; z_q = (Z_q h)_i; forget_bias on b_f
//   i, f, o = sigma(a_i, a_f, a_o),  g = phi(a_g),  c_t = f c + i g,  h_t = o phi(c_t)
//   tangent (z_t = Z dh): di = i (1-i) s z_t,i (df, do alike), dg = phi'(a_g) s z_t,g,
//     dc_t = df c + f dc + di g + i dg,  dh_t = do phi(c_t) + o phi'(c_t) dc_t
//   backward: e = g_c + o phi'(c_t) g_h,  g_c <- f e,
//     GA = [i (1-i) g e; f (1-f) c e; phi'(a_g) i e; o (1-o) phi(c_t) g_h]  (then U = GA Z)
#pragma once
#include "common.cuh"
#include "rnn.cuh"

// The gates of one element from its four pre-activations (a: rows I, F, G, O) and c_{t-1}:
//   i, f, o = sigma(a_i, a_f, a_o),  g = phi(a_g),  c_t = f c + i g,  phi(c_t).
struct VxLstm {
    real i, i_c, f, f_c, g, o, o_c, c, phi_c;
};

VX_FN VxLstm vx_lstm_gates(real a_i, real a_f, real a_g, real a_o, real c_prev, int code,
                           double param)
{
    VxLstm k;
    vx_sigmoid(a_i, &k.i, &k.i_c);
    vx_sigmoid(a_f, &k.f, &k.f_c);
    vx_sigmoid(a_o, &k.o, &k.o_c);
    k.g = vx_phi(code, a_g, param);
    k.c = k.f * c_prev + k.i * k.g;
    k.phi_c = vx_phi(code, k.c, param);
    return k;
}

// The four pre-activations of element i from its products z (z[q] = (Z_q h)_i):
// a_q = s z_q + real(b_q), forget_bias added to gate F's bias.
VX_FN void vx_lstm_preacts(const real z[4], int n, int i, const VxGated &q, const double *xi,
                           const double *drive, real a[4])
{
    for (int g = 0; g < 4; ++g) {
        const long long k = (long long)g * n + i;
        a[g] = vx_gate_preact(z[g], q.s,
                              vx_gate_bias(xi, drive, k, q.sb, q.su, g == 1 ? q.shift : 0.0));
    }
}

// Element i of a forward step, trajectories k = 0, 1 from their products z[k] and c[k][i]
// (c_{t-1} in, c_t out), h_t into h[k][i]; with jvp the tangent from z[2] = (Z dh)_i and
// c[2][i] = dc (in and out) into h[2][i] = dh. h and c: the rows where the state lives (global
// memory on the step path, shared on the persistent one). sums: |h1|^2, |h2|^2, <h1, h2>,
// count of |h|, |c| beyond the limit, |[dh; dc]|^2. (The trajectories written out, not
// looped over: on the GPU everything then stays in registers, no stack frame.)
VX_FN void vx_lstm_element(const real z[3][4], real *const h[3], real *const c[3], int n, int i,
                           const VxGated &q, const double *xi, const double *drive, bool jvp,
                           double limit, double sums[5])
{
    const real s = q.s;
    const real c1 = c[0][i], c2 = c[1][i];
    real a[4];
    vx_lstm_preacts(z[0], n, i, q, xi, drive, a);
    const VxLstm g1 = vx_lstm_gates(a[0], a[1], a[2], a[3], c1, q.code, q.param);
    const real h1 = g1.o * g1.phi_c;
    if (jvp) {
        const real di = g1.i * g1.i_c * (s * z[2][0]);
        const real df = g1.f * g1.f_c * (s * z[2][1]);
        const real dg = vx_dphi(q.code, a[2], q.param) * (s * z[2][2]);
        const real d_o = g1.o * g1.o_c * (s * z[2][3]);
        const real dcn = df * c1 + g1.f * c[2][i] + di * g1.g + g1.i * dg;
        const real dhn = d_o * g1.phi_c + g1.o * vx_dphi(q.code, g1.c, q.param) * dcn;
        h[2][i] = dhn;
        c[2][i] = dcn;
        sums[4] += (double)dhn * (double)dhn + (double)dcn * (double)dcn;
    }
    vx_lstm_preacts(z[1], n, i, q, xi, drive, a);
    const VxLstm g2 = vx_lstm_gates(a[0], a[1], a[2], a[3], c2, q.code, q.param);
    const real h2 = g2.o * g2.phi_c;
    h[0][i] = h1;
    c[0][i] = g1.c;
    h[1][i] = h2;
    c[1][i] = g2.c;
    sums[3] += vx_big(h1, limit) + vx_big(g1.c, limit);
    sums[3] += vx_big(h2, limit) + vx_big(g2.c, limit);
    sums[0] += (double)h1 * (double)h1;
    sums[1] += (double)h2 * (double)h2;
    sums[2] += (double)h1 * (double)h2;
}

// Element i of a recomputed step (trajectory 1) from its products z and c_{t-1}: the
// pre-activations into pa[q n + i] (pa: a row of 4n), c_t into *c_new; returns h_t.
VX_FN real vx_lstm_recompute_element(const real z[4], real c_prev, real *pa, real *c_new, int n,
                                     int i, const VxGated &q, const double *xi,
                                     const double *drive)
{
    real a[4];
    vx_lstm_preacts(z, n, i, q, xi, drive, a);
    const VxLstm g = vx_lstm_gates(a[0], a[1], a[2], a[3], c_prev, q.code, q.param);
    for (int k = 0; k < 4; ++k)
        pa[(long long)k * n + i] = a[k];
    *c_new = g.c;
    return g.o * g.phi_c;
}

// Element i of a backward step's gate part from the pre-activations a (a row of 4n), c_{t-1},
// g_h and g_c (in, out: g_c <- f e): GA into ga (a row of 4n).
VX_FN void vx_lstm_cot_element(const real *a, real c_prev, real gh, real *gc, real *ga, int n,
                               int i, const VxGated &q)
{
    const int code = q.code;
    const double param = q.param;
    const VxLstm k = vx_lstm_gates(a[i], a[n + i], a[2LL * n + i], a[3LL * n + i], c_prev, code,
                                   param);
    const real e = *gc + k.o * vx_dphi(code, k.c, param) * gh;
    ga[i] = k.i * k.i_c * k.g * e;
    ga[n + i] = k.f * k.f_c * c_prev * e;
    ga[2LL * n + i] = vx_dphi(code, a[2LL * n + i], param) * k.i * e;
    ga[3LL * n + i] = k.o * k.o_c * k.phi_c * gh;
    *gc = k.f * e;
}
