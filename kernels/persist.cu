// persist.cu: the persistent small-width Elman kernels (issue 14, "persistent RNN": Diamos
// et al., ICML 2016; cuDNN's PERSIST_STATIC), vxsim/engines/cuda_persist.py's PersistentElman.
//
// One thread block per grid point runs a whole run of steps (the forward pass, a VJP
// segment's recomputation, its backward steps) in one launch, with the tied N x N matrix W
// loaded once into shared memory and kept there across all of them; the state vectors stay
// in shared memory too. A step is
//
//   forward:   h = W a (the product, here),  the Elman epilogue (epilogue.cuh's
//              vx_forward_point with the drive d_t = Z_U x_t / sqrt(N): float64 norms,
//              divergence, renormalisation, tangent, records, checkpoints)
//   backward:  u = W^T g (here),  g <- phi'(h_{t-1}) * (s u) (vx_backward_point)
//
// Shared memory: W (n^2 reals) and 6 (forward with JVP), 4, or 2 (recompute, backward)
// vectors of n reals: cuda_paths.persist_smem. The forward pass keeps W transposed
// (WT[j n + i] = W[i][j]) so that the threads of a warp, one output row each, read
// consecutive words (no bank conflicts); the backward pass keeps W as it is, for the
// same reason. The drives of the launch's steps (nsteps, n) float64 come from one GEMM
// before it (cuda_persist's drive_rows).
#include "common.cuh"
#include "epilogue.cuh"
#include "persist.cuh"
#include "rnn.cuh"

// Steps layer0 .. layer0 + nsteps - 1 of both trajectories (and the tangent): A holds a
// point's next inputs between launches; drives (nsteps, n); rec, cpi (depth + 1).
VX_KERNEL void vx_elman_persist_forward(const real *W, const double *xi, const double *drives,
                                        const double *su, real *A, double *pf, int *pi,
                                        double *res, real *cp, double *cp_ls, const int *rec,
                                        const int *cpi, int P, int n, int R, int layer0,
                                        int nsteps, int kind, int has_bias, double limit)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const bool jvp = kind == VX_KIND_JVP;
        const long long row = n, nn = (long long)n * n;
        real *wt = blk.template shared<real>();
        real *a1 = wt + nn, *a2 = a1 + n, *h1 = a2 + n, *h2 = h1 + n;
        real *at = jvp ? h2 + n : 0, *t = jvp ? h2 + 2 * n : 0;
        real *A1 = A + p * row, *A2 = A + ((long long)P + p) * row;
        real *AT = jvp ? A + (2LL * P + p) * row : 0;
        VX_FOR(i, blk, n)
        {
            a1[i] = A1[i];
            a2[i] = A2[i];
            if (jvp)
                at[i] = AT[i];
        }
        vx_load_tied(blk, W, wt, n, n, true);
        bool alive = true;
        for (int li = 0; li < nsteps && alive; ++li) {
            const int layer = layer0 + li;
            // h = W a: thread i, row i; a is read whole, h only at this thread's i
            vx_block_matvec(blk, wt, n, a1, h1, a2, h2, at, t);
            // (the epilogue rewrites a1, a2, at only after its reduction's barrier)
            const int ci = cpi[layer];
            real *cprow = ci >= 0 ? cp + ((long long)ci * P + p) * row : 0;
            double *cpls = ci >= 0 ? cp_ls + (long long)ci * P + p : 0;
            alive = vx_forward_point(blk, p, P, n, layer, kind, h1, h2, t, a1, a2, at, xi,
                                     has_bias, pf, pi, res, R, rec[layer], limit, cprow, cpls,
                                     drives + (long long)li * n, su[p]);
        }
        VX_FOR(i, blk, n)
        {
            A1[i] = a1[i];
            A2[i] = a2[i];
            if (jvp)
                AT[i] = at[i];
        }
    }
}

// Recomputed steps layer0 .. layer0 + nsteps - 1 of trajectory 1 in the VJP segment that
// starts at `start`: phi'(hh1) of step l into D[l - start] (every, P, n).
VX_KERNEL void vx_elman_persist_recompute(const real *W, const double *xi, const double *drives,
                                          const double *su, real *A1, real *D, double *pf,
                                          const int *pi, int P, int n, int layer0, int nsteps,
                                          int start, int has_bias)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const long long row = n, nn = (long long)n * n;
        real *wt = blk.template shared<real>();
        real *a1 = wt + nn, *h1 = a1 + n;
        real *A1p = A1 + p * row;
        VX_FOR(i, blk, n) { a1[i] = A1p[i]; }
        vx_load_tied(blk, W, wt, n, n, true);
        for (int li = 0; li < nsteps; ++li) {
            vx_block_matvec(blk, wt, n, a1, h1);
            real *drow = D + ((long long)(layer0 + li - start) * P + p) * row;
            vx_recompute_point(blk, p, P, n, h1, a1, drow, xi, has_bias, pf, pi,
                               drives + (long long)li * n, su[p]);
        }
        VX_FOR(i, blk, n) { A1p[i] = a1[i]; }
    }
}

// Backprop steps layer_hi down to layer_lo (step l -> l - 1) of the segment that starts at
// `start`, phi' from D; G holds a point's cotangent between launches.
VX_KERNEL void vx_elman_persist_backward(const real *W, real *G, const real *D, double *pf,
                                         int *pi, double *res, const int *rec, int P, int n,
                                         int R, int layer_lo, int layer_hi, int start)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const long long row = n, nn = (long long)n * n;
        real *w = blk.template shared<real>();
        real *g = w + nn, *u = g + n;
        real *Gp = G + p * row;
        VX_FOR(i, blk, n) { g[i] = Gp[i]; }
        vx_load_tied(blk, W, w, n, n, false);
        for (int layer = layer_hi; layer >= layer_lo; --layer) {
            vx_block_matvec(blk, w, n, g, u);  // u = W^T g: thread j, column j; g read whole
            blk.sync();  // all of g is read (u = W^T g) before any thread overwrites it
            const real *drow = D + ((long long)(layer - 1 - start) * P + p) * row;
            if (!vx_backward_point(blk, p, P, n, layer - 1, g, u, drow, pf, pi, res, R,
                                   rec[layer - 1]))
                break;
        }
        VX_FOR(i, blk, n) { Gp[i] = g[i]; }
    }
}
