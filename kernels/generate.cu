// generate.cu: the weights Z^{s,l} and bias noise xi^{s,l} from the counter (DESIGN.md 2.2).
//
// Element k of layer l's flattened N x N matrix is normal 4 b + m of Philox
// block b = k / 4, lane m = k % 4, counter (b, l, sample, STREAM_WEIGHT): the
// same numbers as rng.normal_matrix, bit for bit. One thread per Philox block,
// grid-stride, any launch shape.
#include "common.cuh"
#include "normal.cuh"

// Z of layers layer0 .. layer0 + nlayers - 1 into out (nlayers, n, n), rounded
// to real; transpose != 0 stores element (i, j) at [j][i].
VX_KERNEL void vx_fill_weights(real *out, int n, int layer0, int nlayers, int transpose,
                               u32 sample, u32 k0, u32 k1)
{
    vx_fill_stream_body(out, (long long)n * n, layer0, nlayers, VX_STREAM_WEIGHT, sample, k0, k1,
                        transpose ? n : 0);
}

// xi of layers layer0 .. layer0 + nlayers - 1 into out (nlayers, n), float64.
VX_KERNEL void vx_fill_bias(double *out, int n, int layer0, int nlayers, u32 sample, u32 k0,
                            u32 k1)
{
    vx_fill_stream_body(out, (long long)n, layer0, nlayers, VX_STREAM_BIAS, sample, k0, k1);
}
