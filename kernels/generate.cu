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
    VX_BLOCKS(blk)
    {
        const long long nn = (long long)n * n;
        const long long per_layer = (nn + 3) / 4;
        const long long total = per_layer * nlayers;
        VX_GRID_FOR(g, blk, total)
        {
            const long long li = g / per_layer;
            const long long b = g - li * per_layer;
            double z[4];
            vx_normals4((u32)b, (u32)(layer0 + li), sample, VX_STREAM_WEIGHT, k0, k1, z);
            real *dst = out + li * nn;
            for (int m = 0; m < 4; ++m) {
                const long long e = 4 * b + m;
                if (e < nn) {
                    long long at = e;
                    if (transpose) {
                        const long long i = e / n;
                        at = (e - i * n) * n + i;
                    }
                    dst[at] = (real)z[m];
                }
            }
        }
    }
}

// xi of layers layer0 .. layer0 + nlayers - 1 into out (nlayers, n), float64.
VX_KERNEL void vx_fill_bias(double *out, int n, int layer0, int nlayers, u32 sample, u32 k0,
                            u32 k1)
{
    VX_BLOCKS(blk)
    {
        const long long per_layer = ((long long)n + 3) / 4;
        const long long total = per_layer * nlayers;
        VX_GRID_FOR(g, blk, total)
        {
            const long long li = g / per_layer;
            const long long b = g - li * per_layer;
            double z[4];
            vx_normals4((u32)b, (u32)(layer0 + li), sample, VX_STREAM_BIAS, k0, k1, z);
            for (int m = 0; m < 4; ++m) {
                const long long e = 4 * b + m;
                if (e < n)
                    out[li * n + e] = z[m];
            }
        }
    }
}
