// fused.cu: the small-width path, one thread block per grid point across many layers
// (DESIGN.md 2.3b).
//
// A point's state (inputs a1, a2, at and this layer's h1, h2, t) stays in shared
// memory while one launch walks a chunk of layers; the matrix-vector products
// are done here, not by cuBLAS, and the epilogue is the GEMM path's
// (epilogue.cuh). Every block of a launch needs the same Z^l (common random
// numbers), so the host generates the chunk's matrices once, with all of the
// GPU, into a buffer that stays in L2 at these widths (vx_fill_weights, just
// before the launch), instead of each block generating all of them itself:
// that would multiply the Philox and Box-Muller work by the number of points.
// The forward pass reads Z transposed (ZT[j][i] = Z[i][j]) so that the threads
// of a warp, one output row each, read consecutive addresses; the backward
// pass reads Z as it is for the same reason.
//
// Between chunks a point's state is kept in its rows of A (forward, recompute)
// or G (backward). Shared memory: 6 n reals (JVP), 4 n (forward only), 2 n
// (recompute, backward).
#include "common.cuh"
#include "epilogue.cuh"
#include "persist.cuh"

template <class B>
VX_FN void vx_fused_forward_block(const B &blk, const real *ZT, const double *xis, real *A,
                                  double *pf, int *pi, double *res, real *cp, double *cp_ls,
                                  const int *rec, const int *cpi, int P, int n, int R, int layer0,
                                  int nlayers, int kind, int has_bias, double limit)
{
    const int p = (int)blk.index();
    if (pi[VX_I_DEAD * P + p])
        return;
    const bool jvp = kind == VX_KIND_JVP;
    const long long row = n;
    real *sm = blk.template shared<real>();
    real *a1 = sm, *a2 = sm + n, *h1 = sm + 2 * n, *h2 = sm + 3 * n;
    real *at = jvp ? sm + 4 * n : 0;
    real *t = jvp ? sm + 5 * n : 0;
    real *A1 = A + p * row, *A2 = A + ((long long)P + p) * row;
    real *AT = jvp ? A + (2LL * P + p) * row : 0;
    VX_FOR(i, blk, n)
    {
        a1[i] = A1[i];
        a2[i] = A2[i];
        if (jvp)
            at[i] = AT[i];
    }
    blk.sync();
    bool alive = true;
    for (int li = 0; li < nlayers && alive; ++li) {
        const int layer = layer0 + li;
        const real *Zl = ZT + (long long)li * n * n;
        vx_block_matvec(blk, Zl, n, a1, h1, a2, h2, at, t);
        // (no barrier needed here: the epilogue's first pass touches only this
        // thread's elements of h1, h2, t, and a1, a2, at are rewritten only
        // after its reduction, a barrier every thread has passed)
        const int ci = cpi[layer];
        real *cprow = ci >= 0 ? cp + ((long long)ci * P + p) * row : 0;
        double *cpls = ci >= 0 ? cp_ls + (long long)ci * P + p : 0;
        const double *xi = has_bias ? xis + (long long)li * n : xis;
        alive = vx_forward_point(blk, p, P, n, layer, kind, h1, h2, t, a1, a2, at, xi, has_bias,
                                 pf, pi, res, R, rec[layer], limit, cprow, cpls);
    }
    VX_FOR(i, blk, n)
    {
        A1[i] = a1[i];
        A2[i] = a2[i];
        if (jvp)
            AT[i] = at[i];
    }
}

// Forward layers layer0 .. layer0 + nlayers - 1; ZT (nlayers, n, n) transposed
// weights, xis (nlayers, n) bias noise, rec (depth + 1) record index per layer,
// cpi (depth + 1) checkpoint index per layer (-1: none; engines/schedule.py).
VX_KERNEL void vx_fused_forward(const real *ZT, const double *xis, real *A, double *pf, int *pi,
                                double *res, real *cp, double *cp_ls, const int *rec,
                                const int *cpi, int P, int n, int R, int layer0, int nlayers,
                                int kind, int has_bias, double limit)
{
    VX_BLOCKS(blk)
    {
        vx_fused_forward_block(blk, ZT, xis, A, pf, pi, res, cp, cp_ls, rec, cpi, P, n, R,
                               layer0, nlayers, kind, has_bias, limit);
    }
}

template <class B>
VX_FN void vx_fused_recompute_block(const B &blk, const real *ZT, const double *xis, real *A1,
                                    real *D, double *pf, const int *pi, int P, int n, int layer0,
                                    int nlayers, int start, int has_bias)
{
    const int p = (int)blk.index();
    if (pi[VX_I_DEAD * P + p])
        return;
    const long long row = n;
    real *sm = blk.template shared<real>();
    real *a1 = sm, *h1 = sm + n;
    real *A1p = A1 + p * row;
    VX_FOR(i, blk, n) { a1[i] = A1p[i]; }
    blk.sync();
    for (int li = 0; li < nlayers; ++li) {
        const int layer = layer0 + li;
        const real *Zl = ZT + (long long)li * n * n;
        vx_block_matvec(blk, Zl, n, a1, h1);
        const double *xi = has_bias ? xis + (long long)li * n : xis;
        real *drow = D + ((long long)(layer - start) * P + p) * row;
        vx_recompute_point(blk, p, P, n, h1, a1, drow, xi, has_bias, pf, pi);
    }
    VX_FOR(i, blk, n) { A1p[i] = a1[i]; }
}

// Recomputed layers layer0 .. layer0 + nlayers - 1 of the VJP segment that
// starts at layer `start`: phi'(hh1) of layer l into D[l - start] (every, P, n).
VX_KERNEL void vx_fused_recompute(const real *ZT, const double *xis, real *A1, real *D, double *pf,
                                  const int *pi, int P, int n, int layer0, int nlayers, int start,
                                  int has_bias)
{
    VX_BLOCKS(blk)
    {
        vx_fused_recompute_block(blk, ZT, xis, A1, D, pf, pi, P, n, layer0, nlayers, start,
                                 has_bias);
    }
}

template <class B>
VX_FN void vx_fused_backward_block(const B &blk, const real *Z, real *G, const real *D,
                                   double *pf, int *pi, double *res, const int *rec, int P, int n,
                                   int R, int layer_lo, int layer_hi, int start)
{
    const int p = (int)blk.index();
    if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
        return;
    const long long row = n;
    real *sm = blk.template shared<real>();
    real *g = sm, *u = sm + n;
    real *Gp = G + p * row;
    VX_FOR(i, blk, n) { g[i] = Gp[i]; }
    blk.sync();
    for (int layer = layer_hi; layer >= layer_lo; --layer) {
        const real *Zl = Z + (long long)(layer - layer_lo) * n * n;
        vx_block_matvec(blk, Zl, n, g, u);  // u = Z^T g
        blk.sync();  // every thread has read all of g before it is overwritten
        const real *drow = D + ((long long)(layer - 1 - start) * P + p) * row;
        if (!vx_backward_point(blk, p, P, n, layer - 1, g, u, drow, pf, pi, res, R,
                               rec[layer - 1]))
            break;
    }
    VX_FOR(i, blk, n) { Gp[i] = g[i]; }
}

// Backprop steps for layers layer_hi down to layer_lo (layer -> layer - 1) of
// the segment that starts at `start`; Z (layer_hi - layer_lo + 1, n, n) holds
// Z^{layer_lo} first, as it is (not transposed).
VX_KERNEL void vx_fused_backward(const real *Z, real *G, const real *D, double *pf, int *pi,
                                 double *res, const int *rec, int P, int n, int R, int layer_lo,
                                 int layer_hi, int start)
{
    VX_BLOCKS(blk)
    {
        vx_fused_backward_block(blk, Z, G, D, pf, pi, res, rec, P, n, R, layer_lo, layer_hi,
                                start);
    }
}
