// epilogue.cu: the GEMM path's kernels, one thread block per grid point (DESIGN.md 2.1).
//
// Per layer the host launches, without synchronising: vx_fill_weights (and
// vx_fill_bias), one cuBLAS GEMM H = A Z^T over every column, then vx_forward.
// States are rows of C-order (rows * P, n) arrays: point p's h1 in row p, h2
// in row P + p, its tangent in row 2P + p. The point functions are in
// epilogue.cuh.
#include "common.cuh"
#include "epilogue.cuh"

// Forward epilogue of every point of a layer (epilogue.cuh's vx_forward_all without a drive).
VX_KERNEL void vx_forward(real *H, real *A, const double *xi, double *pf, int *pi, double *res,
                          real *cp, double *cp_ls, int P, int n, int R, int layer, int kind,
                          int has_bias, int r, int ci, double limit)
{
    vx_forward_all(H, A, xi, 0, 0, pf, pi, res, cp, cp_ls, P, n, R, layer, kind, has_bias, r, ci,
                   limit);
}

// Layer `step` of a captured body (a CUDA Graph replayed once per block of layers,
// cuda_graphs.py): vx_forward at layer clock[0] + step, its record rec[layer] and checkpoint
// cpi[layer] read on the device.
VX_KERNEL void vx_forward_clocked(real *H, real *A, const double *xi, double *pf, int *pi,
                                  double *res, real *cp, double *cp_ls, const int *clock,
                                  const int *rec, const int *cpi, int step, int P, int n, int R,
                                  int kind, int has_bias, double limit)
{
    const int layer = clock[0] + step;
    vx_forward_all(H, A, xi, 0, 0, pf, pi, res, cp, cp_ls, P, n, R, layer, kind, has_bias,
                   rec[layer], cpi[layer], limit);
}

// A recomputed layer of a VJP segment (epilogue.cuh's vx_recompute_all without a drive).
VX_KERNEL void vx_recompute(real *H1, real *A1, real *D, const double *xi, double *pf,
                            const int *pi, int P, int n, int j, int has_bias)
{
    vx_recompute_all(H1, A1, D, xi, 0, 0, pf, pi, P, n, j, has_bias);
}

// Start of a recomputed segment from checkpoint ci (ci < 0: from the input x1).
VX_FN void vx_restart_all(const real *x1, const real *cp, const double *cp_ls, real *A1, real *D,
                          double *pf, const int *pi, int P, int n, int ci)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        const real *cprow = ci >= 0 ? cp + ((long long)ci * P + p) * row : 0;
        const double ls = ci >= 0 ? cp_ls[(long long)ci * P + p] : 0.0;
        vx_restart_point(blk, p, P, n, x1, cprow, ls, A1 + p * row, D + p * row, pf, pi);
    }
}

VX_KERNEL void vx_restart(const real *x1, const real *cp, const double *cp_ls, real *A1, real *D,
                          double *pf, const int *pi, int P, int n, int ci)
{
    vx_restart_all(x1, cp, cp_ls, A1, D, pf, pi, P, n, ci);
}

// Backprop steps layer -> layer - 1 of every point after U = G Z (U[p] = Z^T g_p).
VX_FN void vx_backward_all(real *G, const real *U, const real *D, double *pf, int *pi,
                           double *res, int P, int n, int R, int j, int lm1, int r)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        const long long row = n;
        vx_backward_point(blk, p, P, n, lm1, G + p * row, U + p * row,
                          D + ((long long)j * P + p) * row, pf, pi, res, R, r);
    }
}

VX_KERNEL void vx_backward(real *G, const real *U, const real *D, double *pf, int *pi,
                           double *res, int P, int n, int R, int j, int lm1, int r)
{
    vx_backward_all(G, U, D, pf, pi, res, P, n, R, j, lm1, r);
}

// The backprop seed of every point (gamma: the unit output direction, n).
VX_KERNEL void vx_grad_init(const real *gamma, real *G, double *pf, int *pi, double *res, int P,
                            int n, int R, int r)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        vx_grad_init_point(blk, p, P, n, n, gamma, G + (long long)p * n, pf, pi, res, R, r);
    }
}

// ------------------------------------------------------------------ captured VJP segments
// A full segment from layer start = clock[0] (cuda_graphs.run_backward), its checkpoint
// ci = start / every - 1, its backward step to layer lm1 = start + step, recorded at rec[lm1].

VX_KERNEL void vx_restart_clocked(const real *x1, const real *cp, const double *cp_ls, real *A1,
                                  real *D, double *pf, const int *pi, const int *clock, int every,
                                  int P, int n)
{
    vx_restart_all(x1, cp, cp_ls, A1, D, pf, pi, P, n, clock[0] / every - 1);
}

VX_KERNEL void vx_backward_clocked(real *G, const real *U, const real *D, double *pf, int *pi,
                                   double *res, const int *clock, const int *rec, int step, int P,
                                   int n, int R, int j)
{
    const int lm1 = clock[0] + step;
    vx_backward_all(G, U, D, pf, pi, res, P, n, R, j, lm1, rec[lm1]);
}
