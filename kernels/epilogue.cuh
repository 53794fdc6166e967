// epilogue.cuh: what happens to one grid point's columns around each layer's GEMM.
//
// The same steps, in the same order and with the same roundings, as
// vxsim/models/mlp.py and vxsim/engines/numpy_ref.py (the oracle) and the
// Numba engine's _forward_point / _recompute_point / _backward_point:
//
//   h = s * zx + real((xi * bamp) * exp(-ls))       pre-activation, s = sqrt(sw2/N)
//   |h1|^2, |h2|^2, <h1, h2>, |t|^2 in float64      (block reductions)
//   divergence test -> flag the point, zero its next inputs, skip it from then on
//   homogeneous phi: hh = h / rms, ls += log rms    (DESIGN.md 2.3c)
//   next input phi(hh), tangent phi'(hh1) * t / |t|, log |t|^2 accumulated
//   recorded: log q = 2 ls + log(|h|^2 / N / d^2), c = <h1,h2> / (|h1| |h2|)
//
// Each function is called by every thread of a block (one block per point),
// with pointers to that point's rows; B is the Block type of common.cuh.
// Per-point scalars (pf, pi) are read at the top, before the first barrier,
// and written by thread 0 after the last reduction: no thread reads a value
// another thread has already overwritten.
#pragma once
#include "common.cuh"
#include "vx_generated.cuh"

// exp(-ls), -ls capped at VX_EXP_CAP (generated from vxsim/models): the bias relative to a
// renormalised pre-activation.
VX_FN double vx_bias_scale(double ls) { return exp(fmin(-ls, VX_EXP_CAP)); }

// The bias of element i: b = xi_i * bamp, plus an Elman network's input drive,
// b = xi_i * bamp + d_i * su with d = Z_U x_t / sqrt(N) (models/rnn.py, models/gates.py).
VX_FN double vx_bias(const double *xi, const double *drive, int i, double bamp, double su)
{
    return drive ? xi[i] * bamp + drive[i] * su : xi[i] * bamp;
}

// One pre-activation element: s * zx + real(b * bs), b = xi * bamp.
VX_FN real vx_preact(real zx, real s, double b, double bs, int has_bias)
{
    return has_bias ? zx * s + (real)(b * bs) : zx * s;
}

// The oracle's divergence test on one input's pre-activations: finite, and
// either renormalisable and not all zero (homogeneous phi) or below the limit.
VX_FN bool vx_h_ok(double ss, double big, bool homog)
{
    return vx_isfinite(ss) && (homog ? ss > 0.0 : big == 0.0);
}

// A layer's float64 sums of the two inputs' pre-activations x1, x2: |h1|^2, |h2|^2, <h1, h2>
// and the count of |h| > limit (sums[4], |t|^2, is the tangent's).
VX_FN void vx_pair_sums(real x1, real x2, double limit, double sums[5])
{
    sums[0] += (double)x1 * (double)x1;
    sums[1] += (double)x2 * (double)x2;
    sums[2] += (double)x1 * (double)x2;
    sums[3] += (double)(fabs((double)x1) > limit) + (double)(fabs((double)x2) > limit);
}

// The renormalisation of a homogeneous phi (DESIGN.md 2.3c): hh = h / d, ls' = ls + log d with
// d = rms = sqrt(ss / n); otherwise d = 1, ls' = ls.
VX_FN real vx_rescale(double ss, int n, double ls, bool homog, double *nls)
{
    if (!homog) {
        *nls = ls;
        return (real)1;
    }
    const double rms = sqrt(ss / n);
    *nls = ls + log(rms);
    return (real)rms;
}

// What a layer's block-reduced sums (vx_pair_sums', |t|^2) make of a point: ok (vx_h_ok for
// both inputs, and with JVP a finite acc = acc0 + log |t|^2), the divisors d1, d2 and new
// log-scales nls1, nls2 (vx_rescale), the tangent's dt = |t| (1 without JVP).
struct VxLayer {
    double ss1, ss2, dot, acc, nls1, nls2;
    real d1, d2, dt;
    bool ok;
};

VX_FN VxLayer vx_layer_end(const double *sums, int n, double ls1, double ls2, double acc0,
                           bool homog, bool jvp)
{
    VxLayer c;
    c.ss1 = sums[0];
    c.ss2 = sums[1];
    c.dot = sums[2];
    c.ok = vx_h_ok(c.ss1, sums[3], homog) && vx_h_ok(c.ss2, sums[3], homog);
    c.acc = jvp ? acc0 + log(sums[4]) : 0.0;
    if (jvp)
        c.ok = c.ok && vx_isfinite(c.acc);
    c.d1 = vx_rescale(c.ss1, n, ls1, homog && c.ok, &c.nls1);
    c.d2 = vx_rescale(c.ss2, n, ls2, homog && c.ok, &c.nls2);
    c.dt = jvp && c.ok ? (real)sqrt(sums[4]) : (real)1;
    return c;
}

// A point diverged at `layer`: flagged and its log-scales reset (thread 0), then a barrier.
template <class B>
VX_FN void vx_flag_diverged(const B &blk, int p, int P, int layer, double *pf, int *pi)
{
    if (blk.tid() == 0) {
        pi[VX_I_DIVERGED * P + p] = layer;
        pi[VX_I_DEAD * P + p] = 1;
        pf[VX_F_LS1 * P + p] = 0.0;
        pf[VX_F_LS2 * P + p] = 0.0;
    }
    blk.sync();
}

// A layer's scalars stored by thread 0: the log-scales, acc (JVP), the checkpoint's log-scale
// (cp_ls != 0) and, r >= 0, the records log q = 2 ls1 + log(|h1|^2 / n / d1^2),
// c = <h1, h2> / sqrt(|h1|^2 |h2|^2), log |t|^2 accumulated (JVP). Then a barrier.
template <class B>
VX_FN void vx_layer_store(const B &blk, int p, int P, int n, int R, int r, bool jvp,
                          const VxLayer &c, double *cp_ls, double *pf, double *res)
{
    if (blk.tid() == 0) {
        pf[VX_F_LS1 * P + p] = c.nls1;
        pf[VX_F_LS2 * P + p] = c.nls2;
        if (jvp)
            pf[VX_F_ACC * P + p] = c.acc;
        if (cp_ls)
            *cp_ls = c.nls1;
        if (r >= 0) {
            const double f1 = (double)c.d1;
            res[((long long)VX_R_LOGQ * P + p) * R + r] =
                2.0 * c.nls1 + log(c.ss1 / n / (f1 * f1));
            res[((long long)VX_R_CORR * P + p) * R + r] = c.dot / sqrt(c.ss1 * c.ss2);
            if (jvp)
                res[((long long)VX_R_TAN * P + p) * R + r] = c.acc;
        }
    }
    blk.sync();
}

// Forward epilogue of one point after H = A Z^T (rows h1, h2 and, with
// kind == JVP, t hold Z times this layer's inputs). Writes the next inputs
// a1, a2 (and at); with cprow != 0 also the checkpoint row hh1 and *cp_ls.
// Returns false when the point is (or just became) diverged.
template <class B>
VX_FN bool vx_forward_point(const B &blk, int p, int P, int n, int layer, int kind,
                            real *h1, real *h2, real *t, real *a1, real *a2, real *at,
                            const double *xi, int has_bias, double *pf, int *pi, double *res,
                            int R, int r, double limit, real *cprow, double *cp_ls,
                            const double *drive = 0, double su = 0.0)
{
    if (pi[VX_I_DEAD * P + p])
        return false;
    const real s = (real)pf[VX_F_SCALE * P + p];
    const double bamp = pf[VX_F_BAMP * P + p];
    const double param = pf[VX_F_PARAM * P + p];
    const double ls1 = pf[VX_F_LS1 * P + p];
    const double ls2 = pf[VX_F_LS2 * P + p];
    const double acc0 = pf[VX_F_ACC * P + p];
    const int code = pi[VX_I_CODE * P + p];
    const bool homog = pi[VX_I_HOMOG * P + p] != 0;
    const bool jvp = kind == VX_KIND_JVP;
    const double bs1 = vx_bias_scale(ls1);
    const double bs2 = vx_bias_scale(ls2);
    // sums: |h1|^2, |h2|^2, <h1, h2>, count of |h| > limit, |t|^2
    double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
    VX_FOR(i, blk, n)
    {
        const double b = has_bias ? vx_bias(xi, drive, i, bamp, su) : 0.0;
        const real x1 = vx_preact(h1[i], s, b, bs1, has_bias);
        const real x2 = vx_preact(h2[i], s, b, bs2, has_bias);
        h1[i] = x1;
        h2[i] = x2;
        vx_pair_sums(x1, x2, limit, sums);
        if (jvp) {
            const real tv = t[i] * s;
            t[i] = tv;
            sums[4] += (double)tv * (double)tv;
        }
    }
    blk.reduce(sums);
    const VxLayer c = vx_layer_end(sums, n, ls1, ls2, acc0, homog, jvp);
    if (!c.ok) {
        VX_FOR(i, blk, n)
        {
            a1[i] = (real)0;
            a2[i] = (real)0;
            if (jvp)
                at[i] = (real)0;
        }
        vx_flag_diverged(blk, p, P, layer, pf, pi);
        return false;
    }
    VX_FOR(i, blk, n)
    {
        const real x1 = h1[i] / c.d1;
        if (cprow)
            cprow[i] = x1;
        a1[i] = vx_phi(code, x1, param);
        a2[i] = vx_phi(code, h2[i] / c.d2, param);
        if (jvp)
            at[i] = vx_dphi(code, x1, param) * (t[i] / c.dt);
    }
    vx_layer_store(blk, p, P, n, R, r, jvp, c, cp_ls, pf, res);
    return true;
}

// A recomputed layer of a VJP segment, h1 only (h1 holds Z a1): the next input
// a1 = phi(hh1) and drow = phi'(hh1), the log-scale in pf[F_LSR].
template <class B>
VX_FN void vx_recompute_point(const B &blk, int p, int P, int n, real *h1, real *a1, real *drow,
                              const double *xi, int has_bias, double *pf, const int *pi,
                              const double *drive = 0, double su = 0.0)
{
    if (pi[VX_I_DEAD * P + p])
        return;
    const real s = (real)pf[VX_F_SCALE * P + p];
    const double bamp = pf[VX_F_BAMP * P + p];
    const double param = pf[VX_F_PARAM * P + p];
    const double lsr = pf[VX_F_LSR * P + p];
    const int code = pi[VX_I_CODE * P + p];
    const bool homog = pi[VX_I_HOMOG * P + p] != 0;
    const double bs = vx_bias_scale(lsr);
    double sums[1] = {0.0};
    VX_FOR(i, blk, n)
    {
        const double b = has_bias ? vx_bias(xi, drive, i, bamp, su) : 0.0;
        const real x = vx_preact(h1[i], s, b, bs, has_bias);
        h1[i] = x;
        sums[0] += (double)x * (double)x;
    }
    blk.reduce(sums);
    double nlsr;
    const real d1 = vx_rescale(sums[0], n, lsr, homog && sums[0] > 0.0, &nlsr);
    VX_FOR(i, blk, n)
    {
        const real x = h1[i] / d1;
        a1[i] = vx_phi(code, x, param);
        drow[i] = vx_dphi(code, x, param);
    }
    if (blk.tid() == 0)
        pf[VX_F_LSR * P + p] = nlsr;
    blk.sync();
}

// Start of a recomputed VJP segment: from the input x1 (cprow == 0), or from
// a checkpoint row hh1 with its log-scale ls (a1 = phi(hh1), drow = phi'(hh1)).
template <class B>
VX_FN void vx_restart_point(const B &blk, int p, int P, int n, const real *x1, const real *cprow,
                            double ls, real *a1, real *drow, double *pf, const int *pi)
{
    if (cprow == 0) {
        VX_FOR(i, blk, n) { a1[i] = x1[i]; }
        if (blk.tid() == 0)
            pf[VX_F_LSR * P + p] = 0.0;
        blk.sync();
        return;
    }
    if (pi[VX_I_DEAD * P + p]) {
        VX_FOR(i, blk, n) { a1[i] = (real)0; }
        blk.sync();
        return;
    }
    const double param = pf[VX_F_PARAM * P + p];
    const int code = pi[VX_I_CODE * P + p];
    VX_FOR(i, blk, n)
    {
        a1[i] = vx_phi(code, cprow[i], param);
        drow[i] = vx_dphi(code, cprow[i], param);
    }
    if (blk.tid() == 0)
        pf[VX_F_LSR * P + p] = ls;
    blk.sync();
}

// The end of a backward step to layer lm1 of a point whose cotangent g (sn entries) has
// |g|^2 = ss (the block's reduction): acc = gacc + log ss accumulated; not finite: g zeroed,
// the point's gradient collapsed at lm1; else g renormalised, g / sqrt(ss), acc stored in
// pf and *gacc and recorded at r (r >= 0). Ends with a barrier; returns false when collapsed.
template <class B>
VX_FN bool vx_cot_end(const B &blk, int p, int P, int sn, int R, int lm1, int r, double ss,
                      double *gacc, real *g, double *pf, int *pi, double *res)
{
    const double acc = *gacc + log(ss);
    if (!vx_isfinite(acc)) {
        VX_FOR(i, blk, sn) { g[i] = (real)0; }
        if (blk.tid() == 0) {
            pi[VX_I_DIVERGED * P + p] = lm1;
            pi[VX_I_COLLAPSED * P + p] = 1;
        }
        blk.sync();
        return false;
    }
    const real d = (real)sqrt(ss);
    VX_FOR(i, blk, sn) { g[i] = g[i] / d; }
    *gacc = acc;
    if (blk.tid() == 0) {
        pf[VX_F_GACC * P + p] = acc;
        if (r >= 0)
            res[((long long)VX_R_GRAD * P + p) * R + r] = acc;
    }
    blk.sync();
    return true;
}

// One backprop step of a point, g^{l-1} = phi'(hh^{l-1}) * (s Z^T g^l), from
// u = Z^T g^l: renormalised, log |g|^2 accumulated (recorded at layer l-1).
// Returns false when the point is dead or its gradient collapsed.
template <class B>
VX_FN bool vx_backward_point(const B &blk, int p, int P, int n, int lm1, real *g, const real *u,
                             const real *drow, double *pf, int *pi, double *res, int R, int r)
{
    if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
        return false;
    const real s = (real)pf[VX_F_SCALE * P + p];
    double gacc = pf[VX_F_GACC * P + p];
    double sums[1] = {0.0};
    VX_FOR(i, blk, n)
    {
        const real x = drow[i] * (s * u[i]);
        g[i] = x;
        sums[0] += (double)x * (double)x;
    }
    blk.reduce(sums);
    return vx_cot_end(blk, p, P, n, R, lm1, r, sums[0], &gacc, g, pf, pi, res);
}

// The backprop seed of a point: g = [gamma; 0] (sn >= n entries; gamma the unit output
// direction, zero for a dead point), and log |g^L|^2 = 0 recorded at the last layer (NaN for
// a dead point).
template <class B>
VX_FN void vx_grad_init_point(const B &blk, int p, int P, int n, int sn, const real *gamma,
                              real *g, double *pf, int *pi, double *res, int R, int r)
{
    const bool dead = pi[VX_I_DEAD * P + p] != 0;
    VX_FOR(i, blk, sn) { g[i] = dead || i >= n ? (real)0 : gamma[i]; }
    if (blk.tid() == 0) {
        pf[VX_F_GACC * P + p] = 0.0;
        pi[VX_I_COLLAPSED * P + p] = 0;
        if (r >= 0)
            res[((long long)VX_R_GRAD * P + p) * R + r] = dead ? vx_nan() : 0.0;
    }
    blk.sync();
}

// ------------------------------------------------------------------ every point of a layer
// One thread block per point; states are rows of C-order (rows * P, n) arrays: point p's h1 in
// row p, h2 in row P + p, its tangent in row 2P + p. An Elman network passes its input drive
// (drive, su per point: the bias xi bamp + d su), the MLP none (drive = su = 0).

// The forward epilogue of every point. ci >= 0: also checkpoint hh1 into cp[ci] (ncp, P, n)
// and its log-scale into cp_ls[ci] (ncp, P).
VX_FN void vx_forward_all(real *H, real *A, const double *xi, const double *drive,
                          const double *su, double *pf, int *pi, double *res, real *cp,
                          double *cp_ls, int P, int n, int R, int layer, int kind, int has_bias,
                          int r, int ci, double limit)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        real *t = kind == VX_KIND_JVP ? H + (2LL * P + p) * row : 0;
        real *at = kind == VX_KIND_JVP ? A + (2LL * P + p) * row : 0;
        real *cprow = ci >= 0 ? cp + ((long long)ci * P + p) * row : 0;
        double *cpls = ci >= 0 ? cp_ls + (long long)ci * P + p : 0;
        vx_forward_point(blk, p, P, n, layer, kind, H + p * row, H + ((long long)P + p) * row, t,
                         A + p * row, A + ((long long)P + p) * row, at, xi, has_bias, pf, pi, res,
                         R, r, limit, cprow, cpls, drive, su ? su[p] : 0.0);
    }
}

// A recomputed layer of a VJP segment (H1 = A1 Z^T) of every point: phi' into D[j] (every, P, n).
VX_FN void vx_recompute_all(real *H1, real *A1, real *D, const double *xi, const double *drive,
                            const double *su, double *pf, const int *pi, int P, int n, int j,
                            int has_bias)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        vx_recompute_point(blk, p, P, n, H1 + p * row, A1 + p * row,
                           D + ((long long)j * P + p) * row, xi, has_bias, pf, pi, drive,
                           su ? su[p] : 0.0);
    }
}
