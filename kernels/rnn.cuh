// rnn.cuh: what the recurrent networks' step kernels share (models/gates.py).
//
// A gated RNN's gate pre-activations, per element i of gate q (stacked rows
// q n .. q n + n - 1 of the GEMM's output zx = Z h), are
//
//   a = s * zx + real(b),   b = xi_q,i * sb + d_q,i * su (+ shift on the shifted gate)
//
// with s = sqrt(sw2/N), sb = sqrt(sb2), su = sqrt(su2), d = Z_U x_t / sqrt(N) the
// input drive (float64) and shift the grid's update_bias or forget_bias. The
// gates are the logistic sigmoid, evaluated as models.gates.sigmoid does.
#pragma once
#include "common.cuh"
#include "epilogue.cuh"
#include "vx_generated.cuh"

// One thread block per grid point, in which `continue` leaves the point (a dead point is
// skipped by every thread of its block alike): VX_BLOCKS with a one-pass loop inside.
#define VX_POINTS(b) VX_BLOCKS(b) for (int vx_point_once = 1; vx_point_once; vx_point_once = 0)

// sigma(x) = 1 / (1 + e) and 1 - sigma(x) = e / (1 + e) for x >= 0, swapped for
// x < 0, with e = exp(-|x|) <= 1: no overflow, both accurate in both tails.
VX_FN void vx_sigmoid(real x, real *sig, real *one_minus)
{
    const real e = (real)exp(-fabs((double)x));
    const real big = (real)1 / ((real)1 + e);
    const real small = e * big;
    *sig = x >= (real)0 ? big : small;
    *one_minus = x >= (real)0 ? small : big;
}

// b = xi * sb + d * su (+ shift): the bias of one gate element, float64.
VX_FN double vx_gate_bias(const double *xi, const double *drive, long long k, double sb, double su,
                          double shift)
{
    return xi[k] * sb + drive[k] * su + shift;
}

// a = s * zx + real(b): one gate pre-activation.
VX_FN real vx_gate_preact(real zx, real s, double b) { return s * zx + (real)b; }

// Not finite or beyond the divergence limit: 1, else 0 (NaN counts).
VX_FN double vx_big(real x, double limit) { return fabs((double)x) <= limit ? 0.0 : 1.0; }

// Flag point p diverged at `layer` (the forward pass's rule).
template <class B>
VX_FN void vx_flag_dead(const B &blk, int p, int P, int layer, int *pi)
{
    if (blk.tid() == 0) {
        pi[VX_I_DIVERGED * P + p] = layer;
        pi[VX_I_DEAD * P + p] = 1;
    }
}

// Records of a gated RNN (nothing renormalised): log q = log(|h1|^2 / n),
// c = <h1, h2> / sqrt(q1 q2) / n, and log |t|^2 accumulated (JVP).
template <class B>
VX_FN void vx_rnn_record(const B &blk, int p, int P, int n, int R, int r, double ss1, double ss2,
                         double dot, bool jvp, double acc, double *res)
{
    if (blk.tid() != 0 || r < 0)
        return;
    const double q1 = ss1 / n, q2 = ss2 / n;
    res[((long long)VX_R_LOGQ * P + p) * R + r] = log(q1);
    res[((long long)VX_R_CORR * P + p) * R + r] = dot / sqrt(q1 * q2) / n;
    if (jvp)
        res[((long long)VX_R_TAN * P + p) * R + r] = acc;
}

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

// The four pre-activations of element i from the GEMM row zx (4n): a_q = s zx_q + real(b_q),
// forget_bias added to gate F's bias.
VX_FN void vx_lstm_preacts(const real *zx, int n, int i, real s, const double *xi,
                           const double *drive, double sb, double su, double shift, real a[4])
{
    for (int q = 0; q < 4; ++q) {
        const long long k = (long long)q * n + i;
        a[q] = vx_gate_preact(zx[k], s, vx_gate_bias(xi, drive, k, sb, su, q == 1 ? shift : 0.0));
    }
}
