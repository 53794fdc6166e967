// persist.cuh: what the small-width kernels share: the persistent ones (persist.cu for
// Elman, persist_lstm.cu, persist_gru.cu) the tied matrix loaded once into shared memory,
// kept there across a whole run of steps; they and the MLP's fused.cu the block's
// matrix-vector product.
#pragma once
#include "common.cuh"

// W (rows x n, row-major) into shared memory, transposed (w[j rows + i] = W[i][j]) or
// not, then a barrier. Transposed, the threads of a warp (one output row each) read
// consecutive words of a column in W a; as it is, consecutive words of a row in W^T g.
template <class B>
VX_FN void vx_load_tied(const B &blk, const real *W, real *w, int rows, int n, bool transpose)
{
    const long long total = (long long)rows * n;
    for (long long k = blk.tid(); k < total; k += blk.size()) {
        const long long i = k / n, j = k - i * n;
        w[transpose ? j * rows + i : k] = W[k];
    }
    blk.sync();  // every thread has stored its part of W before any thread reads a row
}

// y_i = sum_j m[j n + i] x_j (j = 0 .. n-1, one fma each, in order) for up to three vectors
// x1 -> y1, x2 -> y2, x3 -> y3 (x2, x3 null: not computed); thread i computes element i.
// With m = W^T stored (m[j n + i] = W[i][j]) this is y = W x, with m = W itself y = W^T x:
// either way the threads of a warp read consecutive words of m. The x are read whole: a
// barrier must separate their writes by other threads from this call.
template <class B>
VX_FN void vx_block_matvec(const B &blk, const real *m, int n, const real *x1, real *y1,
                           const real *x2 = 0, real *y2 = 0, const real *x3 = 0, real *y3 = 0)
{
    VX_FOR(i, blk, n)
    {
        real s1 = (real)0, s2 = (real)0, s3 = (real)0;
        if (x3) {
            for (int j = 0; j < n; ++j) {
                const real w = m[(long long)j * n + i];
                s1 = vx_fma(w, x1[j], s1);
                s2 = vx_fma(w, x2[j], s2);
                s3 = vx_fma(w, x3[j], s3);
            }
            y3[i] = s3;
        } else if (x2) {
            for (int j = 0; j < n; ++j) {
                const real w = m[(long long)j * n + i];
                s1 = vx_fma(w, x1[j], s1);
                s2 = vx_fma(w, x2[j], s2);
            }
        } else {
            for (int j = 0; j < n; ++j)
                s1 = vx_fma(m[(long long)j * n + i], x1[j], s1);
        }
        y1[i] = s1;
        if (x2)
            y2[i] = s2;
    }
}
