// probe.cu: small kernels that expose the device-side math for the tests.
//
// tests/test_cuda_host.py runs them on the CPU (host build) and
// tests/test_cuda_gpu.py on the GPU, against vxsim.rng and the NumPy
// activations: Philox words, normals in float64, Box-Muller of given words,
// and phi, phi', phi'' in double precision.
#include "common.cuh"
#include "normal.cuh"

// The four words of Philox counters (block0 + b, layer, sample, stream), b = 0 ..
// nblocks - 1 (block0 + b wraps modulo 2^32): out (nblocks, 4).
VX_KERNEL void vx_probe_philox(u32 *out, u32 block0, long long nblocks, u32 layer, u32 sample,
                               u32 stream, u32 k0, u32 k1)
{
    VX_BLOCKS(blk)
    {
        VX_GRID_FOR(b, blk, nblocks)
        {
            const VxWords w = vx_philox4x32_10(block0 + (u32)b, layer, sample, stream, k0, k1);
            out[4 * b] = w.w0;
            out[4 * b + 1] = w.w1;
            out[4 * b + 2] = w.w2;
            out[4 * b + 3] = w.w3;
        }
    }
}

// The first `count` normals of a stream in float64 (rng.normals).
VX_KERNEL void vx_probe_normals(double *out, long long count, u32 layer, u32 sample, u32 stream,
                                u32 k0, u32 k1)
{
    VX_BLOCKS(blk)
    {
        VX_GRID_FOR(b, blk, (count + 3) / 4)
        {
            double z[4];
            vx_normals4((u32)b, layer, sample, stream, k0, k1, z);
            for (int m = 0; m < 4; ++m)
                if (4 * b + m < count)
                    out[4 * b + m] = z[m];
        }
    }
}

// Box-Muller of given word pairs: out (count, 2) = (z0, z1) (rng.box_muller).
VX_KERNEL void vx_probe_box_muller(const u32 *ka, const u32 *kb, double *out, long long count)
{
    VX_BLOCKS(blk)
    {
        VX_GRID_FOR(k, blk, count) { vx_box_muller(ka[k], kb[k], &out[2 * k], &out[2 * k + 1]); }
    }
}

// phi (fn 0), phi' (1) or phi'' (2) of activation `code` at x, in double precision.
VX_KERNEL void vx_probe_activation(const double *x, double *out, long long count, int code, int fn,
                                   double a)
{
    VX_BLOCKS(blk)
    {
        VX_GRID_FOR(k, blk, count)
        {
            out[k] = fn == 0 ? vx_phi_d(code, x[k], a)
                     : fn == 1 ? vx_dphi_d(code, x[k], a)
                               : vx_d2phi_d(code, x[k], a);
        }
    }
}
