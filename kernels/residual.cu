// residual.cu: the residual MLP's fused epilogues, one thread block per grid point, around
// one cuBLAS GEMM per layer (vxsim/engines/cuda_residual.py, models/residual.py).
//
//   h^l = h^{l-1} + alpha (s Z^l phi(h^{l-1}) + b^l),  s = sqrt(sw2/N), b = sqrt(sb2) xi^l
//   t^l = t^{l-1} + alpha s Z^l (phi'(h^{l-1}) * t^{l-1})                    (JVP)
//   g^{l-1} = g^l + alpha phi'(h^{l-1}) * s (Z^l)^T g^l                       (VJP)
//
// Beside the MLP's buffers (A: the GEMM inputs phi(hh1), phi(hh2), phi'(hh1) t; H = A Z^T)
// the skip path needs the states themselves: S (2P, n) holds hh1, hh2 and T (P, n) the
// unit tangent. Homogeneous phi: h = e^ls hh with hh renormalised each layer, the bias
// scaled by e^-ls (DESIGN.md 2.3c), as in the MLP's epilogue (epilogue.cuh), whose
// divergence rule, records, VJP restart / seed and per-point tables are the same.
#include "common.cuh"
#include "epilogue.cuh"
// rnn.cuh: VX_POINTS, a block per point that `continue` leaves
#include "rnn.cuh"

// One skip-path element: hh + alpha (s zx + real(b bs)), the oracle's order of operations.
VX_FN real vx_residual_preact(real hh, real alpha, real zx, real s, double b, double bs,
                              int has_bias)
{
    return hh + alpha * vx_preact(zx, s, b, bs, has_bias);
}

// Layer 0 of every point: S = (x1, x2), A = (phi(x1), phi(x2), phi'(x1) v0), T = v0.
VX_KERNEL void vx_residual_start(const real *x1, const real *x2, const real *v0, real *S,
                                 real *T, real *A, const double *pf, const int *pi, int P,
                                 int n, int jvp)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        const double param = pf[VX_F_PARAM * P + p];
        const int code = pi[VX_I_CODE * P + p];
        real *s1 = S + p * row, *s2 = S + ((long long)P + p) * row;
        real *a1 = A + p * row, *a2 = A + ((long long)P + p) * row;
        VX_FOR(i, blk, n)
        {
            s1[i] = x1[i];
            s2[i] = x2[i];
            a1[i] = vx_phi(code, x1[i], param);
            a2[i] = vx_phi(code, x2[i], param);
            if (jvp) {
                T[p * row + i] = v0[i];
                A[(2LL * P + p) * row + i] = vx_dphi(code, x1[i], param) * v0[i];
            }
        }
    }
}

// Forward epilogue of one point after H = A Z^T: the skip, the float64 sums, divergence,
// renormalisation, the next GEMM inputs, checkpoint and records (as vx_forward_point).
template <class B>
VX_FN void vx_residual_forward_point(const B &blk, int p, int P, int n, int layer, bool jvp,
                                     const real *h1, const real *h2, const real *ht, real *s1,
                                     real *s2, real *tt, real *a1, real *a2, real *at,
                                     const double *xi, int has_bias, real alpha, double *pf,
                                     int *pi, double *res, int R, int r, double limit,
                                     real *cprow, double *cp_ls)
{
    if (pi[VX_I_DEAD * P + p])
        return;
    const real s = (real)pf[VX_F_SCALE * P + p];
    const double bamp = pf[VX_F_BAMP * P + p];
    const double param = pf[VX_F_PARAM * P + p];
    const double ls1 = pf[VX_F_LS1 * P + p];
    const double ls2 = pf[VX_F_LS2 * P + p];
    const double acc0 = pf[VX_F_ACC * P + p];
    const int code = pi[VX_I_CODE * P + p];
    const bool homog = pi[VX_I_HOMOG * P + p] != 0;
    const double bs1 = vx_bias_scale(ls1), bs2 = vx_bias_scale(ls2);
    const real as = alpha * s;  // the tangent's alpha s, as the oracle groups it
    // sums: |h1|^2, |h2|^2, <h1, h2>, count of |h| > limit, |t|^2
    double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
    VX_FOR(i, blk, n)
    {
        const double b = has_bias ? xi[i] * bamp : 0.0;
        const real x1 = vx_residual_preact(s1[i], alpha, h1[i], s, b, bs1, has_bias);
        const real x2 = vx_residual_preact(s2[i], alpha, h2[i], s, b, bs2, has_bias);
        s1[i] = x1;
        s2[i] = x2;
        vx_pair_sums(x1, x2, limit, sums);
        if (jvp) {
            const real tv = tt[i] + as * ht[i];
            tt[i] = tv;
            sums[4] += (double)tv * (double)tv;
        }
    }
    blk.reduce(sums);
    const VxLayer c = vx_layer_end(sums, n, ls1, ls2, acc0, homog, jvp);
    if (!c.ok) {
        vx_flag_diverged(blk, p, P, layer, pf, pi);
        return;  // never read again: the point is skipped from now on, its checkpoints 0
    }
    VX_FOR(i, blk, n)
    {
        const real x1 = s1[i] / c.d1, x2 = s2[i] / c.d2;
        s1[i] = x1;
        s2[i] = x2;
        if (cprow)
            cprow[i] = x1;
        a1[i] = vx_phi(code, x1, param);
        a2[i] = vx_phi(code, x2, param);
        if (jvp) {
            const real tv = tt[i] / c.dt;
            tt[i] = tv;
            at[i] = vx_dphi(code, x1, param) * tv;
        }
    }
    vx_layer_store(blk, p, P, n, R, r, jvp, c, cp_ls, pf, res);
}

// Forward epilogue of every point of a layer (alpha: (P,) float64, rounded to real).
// ci >= 0: also checkpoint hh1 into cp[ci] (ncp, P, n) and its log-scale into cp_ls[ci].
VX_FN void vx_residual_forward_all(const real *H, real *S, real *T, real *A, const double *xi,
                                   const double *alpha, double *pf, int *pi, double *res,
                                   real *cp, double *cp_ls, int P, int n, int R, int layer,
                                   int kind, int has_bias, int r, int ci, double limit)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        const bool jvp = kind == VX_KIND_JVP;
        const long long p2 = (long long)P + p, pt = 2LL * P + p;
        real *cprow = ci >= 0 ? cp + ((long long)ci * P + p) * row : 0;
        double *cpls = ci >= 0 ? cp_ls + (long long)ci * P + p : 0;
        vx_residual_forward_point(blk, p, P, n, layer, jvp, H + p * row, H + p2 * row,
                                  jvp ? H + pt * row : 0, S + p * row, S + p2 * row,
                                  jvp ? T + p * row : 0, A + p * row, A + p2 * row,
                                  jvp ? A + pt * row : 0, xi, has_bias, (real)alpha[p], pf, pi,
                                  res, R, r, limit, cprow, cpls);
    }
}

VX_KERNEL void vx_residual_forward(const real *H, real *S, real *T, real *A, const double *xi,
                                   const double *alpha, double *pf, int *pi, double *res,
                                   real *cp, double *cp_ls, int P, int n, int R, int layer,
                                   int kind, int has_bias, int r, int ci, double limit)
{
    vx_residual_forward_all(H, S, T, A, xi, alpha, pf, pi, res, cp, cp_ls, P, n, R, layer, kind,
                            has_bias, r, ci, limit);
}

// Layer `step` of a captured body (a CUDA Graph replayed once per block of layers): the
// layer read on the device, layer = clock[0] + step, its record rec[layer] and checkpoint
// cpi[layer] (Z^l and xi^l drawn by vx_fill_stream_clocked / vx_fill_stream64_clocked).
VX_KERNEL void vx_residual_forward_clocked(const real *H, real *S, real *T, real *A,
                                           const double *xi, const double *alpha, double *pf,
                                           int *pi, double *res, real *cp, double *cp_ls,
                                           const int *clock, const int *rec, const int *cpi,
                                           int step, int P, int n, int R, int kind, int has_bias,
                                           double limit)
{
    const int layer = clock[0] + step;
    vx_residual_forward_all(H, S, T, A, xi, alpha, pf, pi, res, cp, cp_ls, P, n, R, layer, kind,
                            has_bias, rec[layer], cpi[layer], limit);
}

// A VJP segment's start from checkpoint ci (ci < 0: the input x1, log-scale 0):
// S1 = hh, A1 = phi(hh), D[0] = phi'(hh), pf[F_LSR] = its log-scale.
VX_FN void vx_residual_restart_all(const real *x1, const real *cp, const double *cp_ls, real *S1,
                                   real *A1, real *D, double *pf, const int *pi, int P, int n,
                                   int ci)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        const real *hh = ci >= 0 ? cp + ((long long)ci * P + p) * row : x1;
        const double param = pf[VX_F_PARAM * P + p];
        const int code = pi[VX_I_CODE * P + p];
        VX_FOR(i, blk, n)
        {
            S1[p * row + i] = hh[i];
            A1[p * row + i] = vx_phi(code, hh[i], param);
            D[p * row + i] = vx_dphi(code, hh[i], param);
        }
        if (blk.tid() == 0)
            pf[VX_F_LSR * P + p] = ci >= 0 ? cp_ls[(long long)ci * P + p] : 0.0;
    }
}

// A recomputed layer of a VJP segment, trajectory 1 (H1 = A1 Z^T): S1 <- hh^l,
// A1 = phi(hh^l), D[j] = phi'(hh^l), renormalised as in the forward pass.
VX_KERNEL void vx_residual_recompute(const real *H1, real *S1, real *A1, real *D,
                                     const double *xi, const double *alpha, double *pf,
                                     const int *pi, int P, int n, int j, int has_bias)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const long long row = n;
        const real s = (real)pf[VX_F_SCALE * P + p];
        const real a = (real)alpha[p];
        const double bamp = pf[VX_F_BAMP * P + p];
        const double param = pf[VX_F_PARAM * P + p];
        const double lsr = pf[VX_F_LSR * P + p];
        const int code = pi[VX_I_CODE * P + p];
        const bool homog = pi[VX_I_HOMOG * P + p] != 0;
        const double bs = vx_bias_scale(lsr);
        const real *h1 = H1 + p * row;
        real *s1 = S1 + p * row, *a1 = A1 + p * row, *drow = D + ((long long)j * P + p) * row;
        double sums[1] = {0.0};
        VX_FOR(i, blk, n)
        {
            const double b = has_bias ? xi[i] * bamp : 0.0;
            const real x = vx_residual_preact(s1[i], a, h1[i], s, b, bs, has_bias);
            s1[i] = x;
            sums[0] += (double)x * (double)x;
        }
        blk.reduce(sums);
        double nlsr;
        const real d1 = vx_rescale(sums[0], n, lsr, homog && sums[0] > 0.0, &nlsr);
        VX_FOR(i, blk, n)
        {
            const real x = s1[i] / d1;
            s1[i] = x;
            a1[i] = vx_phi(code, x, param);
            drow[i] = vx_dphi(code, x, param);
        }
        if (blk.tid() == 0)
            pf[VX_F_LSR * P + p] = nlsr;
        blk.sync();
    }
}

// Backprop step layer -> layer - 1 of every point after U = G Z (U[p] = Z^T g_p):
// g <- g + (alpha phi'(hh^{l-1})) (s u), renormalised, log |g|^2 accumulated (at l - 1).
VX_FN void vx_residual_backward_all(real *G, const real *U, const real *D, const double *alpha,
                                    double *pf, int *pi, double *res, int P, int n, int R, int j,
                                    int lm1, int r)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const long long row = n;
        const real s = (real)pf[VX_F_SCALE * P + p];
        const real a = (real)alpha[p];
        double gacc = pf[VX_F_GACC * P + p];
        real *g = G + p * row;
        const real *u = U + p * row, *drow = D + ((long long)j * P + p) * row;
        double sums[1] = {0.0};
        VX_FOR(i, blk, n)
        {
            const real x = g[i] + (a * drow[i]) * (s * u[i]);
            g[i] = x;
            sums[0] += (double)x * (double)x;
        }
        blk.reduce(sums);
        vx_cot_end(blk, p, P, n, R, lm1, r, sums[0], &gacc, g, pf, pi, res);
    }
}

VX_KERNEL void vx_residual_restart(const real *x1, const real *cp, const double *cp_ls, real *S1,
                                   real *A1, real *D, double *pf, const int *pi, int P, int n,
                                   int ci)
{
    vx_residual_restart_all(x1, cp, cp_ls, S1, A1, D, pf, pi, P, n, ci);
}

VX_KERNEL void vx_residual_backward(real *G, const real *U, const real *D, const double *alpha,
                                    double *pf, int *pi, double *res, int P, int n, int R, int j,
                                    int lm1, int r)
{
    vx_residual_backward_all(G, U, D, alpha, pf, pi, res, P, n, R, j, lm1, r);
}

// A full captured VJP segment from layer clock[0] (cuda_graphs.run_backward): the restart from
// checkpoint clock[0] / every - 1, the backward step to lm1 = clock[0] + step (rec[lm1]).
VX_KERNEL void vx_residual_restart_clocked(const real *x1, const real *cp, const double *cp_ls,
                                           real *S1, real *A1, real *D, double *pf,
                                           const int *pi, const int *clock, int every, int P,
                                           int n)
{
    vx_residual_restart_all(x1, cp, cp_ls, S1, A1, D, pf, pi, P, n, clock[0] / every - 1);
}

VX_KERNEL void vx_residual_backward_clocked(real *G, const real *U, const real *D,
                                            const double *alpha, double *pf, int *pi, double *res,
                                            const int *clock, const int *rec, int step, int P,
                                            int n, int R, int j)
{
    const int lm1 = clock[0] + step;
    vx_residual_backward_all(G, U, D, alpha, pf, pi, res, P, n, R, j, lm1, rec[lm1]);
}
