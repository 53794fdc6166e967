// persist.cuh: what the persistent small-width kernels share (persist.cu for Elman,
// persist_lstm.cu, persist_gru.cu): the tied matrix loaded once into shared
// memory, kept there across a whole run of steps.
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
