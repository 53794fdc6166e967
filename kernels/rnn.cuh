// rnn.cuh: what the recurrent networks' step kernels (rnn.cu) and persistent kernels
// (persist*.cu) share (models/gates.py); the LSTM's and GRU's elements are in lstm.cuh, gru.cuh.
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

// A gated point's scalars: s = sqrt(sw2/N), sb, its activation (code, param), su and the
// gate shift (update_bias, forget_bias; 0 where not given).
struct VxGated {
    real s;
    double sb, param, su, shift;
    int code;
};

VX_FN VxGated vx_gated_point(const double *pf, const int *pi, const double *su,
                             const double *shift, int P, int p)
{
    VxGated q;
    q.s = (real)pf[VX_F_SCALE * P + p];
    q.sb = pf[VX_F_BAMP * P + p];
    q.param = pf[VX_F_PARAM * P + p];
    q.su = su ? su[p] : 0.0;
    q.shift = shift ? shift[p] : 0.0;
    q.code = pi[VX_I_CODE * P + p];
    return q;
}

// The end of a gated step of point p, after the block's reduction of sums (|h1|^2, |h2|^2,
// <h1, h2>, count of |h|, |c| beyond the limit, |tangent|^2): acc' = *acc + log |t|^2
// (JVP); a count or a non-finite acc' flags the point at `layer` and zeroes its new state
// (rows h1, h2, c1, c2, dh, dc; the c rows absent (0) for the GRU, the tangent's without
// JVP). Else the tangent (dh, dc) is divided by |t|, trajectory 1's (h, c) checkpointed at
// ci >= 0 into (cph, cpc) (ncp, P, n), acc' stored in *acc and pf, the step recorded at r.
// Ends with a barrier; returns false when the point diverged.
template <class B>
VX_FN bool vx_rnn_step_end(const B &blk, int p, int P, int n, int R, int layer, int r, int ci,
                           bool jvp, const double *sums, double *acc, real *h1, real *h2,
                           real *c1, real *c2, real *dh, real *dc, real *cph, real *cpc,
                           double *pf, int *pi, double *res)
{
    const double nacc = jvp ? *acc + log(sums[4]) : 0.0;
    const bool ok = sums[3] == 0.0 && (!jvp || vx_isfinite(nacc));
    if (!ok) {
        VX_FOR(i, blk, n)
        {
            h1[i] = h2[i] = (real)0;
            if (c1)
                c1[i] = c2[i] = (real)0;
            if (jvp)
                dh[i] = (real)0;
            if (jvp && dc)
                dc[i] = (real)0;
        }
        vx_flag_dead(blk, p, P, layer, pi);
        blk.sync();
        return false;
    }
    const real norm = jvp ? (real)sqrt(sums[4]) : (real)1;
    real *cp_h = ci >= 0 ? cph + ((long long)ci * P + p) * n : 0;
    real *cp_c = ci >= 0 && c1 ? cpc + ((long long)ci * P + p) * n : 0;
    VX_FOR(i, blk, n)
    {
        if (jvp)
            dh[i] = dh[i] / norm;
        if (jvp && dc)
            dc[i] = dc[i] / norm;
        if (cp_h)
            cp_h[i] = h1[i];
        if (cp_c)
            cp_c[i] = c1[i];
    }
    *acc = nacc;
    if (blk.tid() == 0 && jvp)
        pf[VX_F_ACC * P + p] = nacc;
    vx_rnn_record(blk, p, P, n, R, r, sums[0], sums[1], sums[2], jvp, nacc, res);
    blk.sync();
    return true;
}
