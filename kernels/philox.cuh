// philox.cuh: Philox4x32-10 (Salmon et al. 2011, Random123), as vxsim/rng.py.
//
// Counter (c0, c1, c2, c3) = (block, layer, sample, stream), key (k0, k1) =
// the seed's low and high 32 bits. Each round maps (c0, c1, c2, c3) to
//   (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
// with the key bumped by the Weyl constants (W0, W1) between rounds. Only
// 32-bit integer arithmetic: the same words on every compiler and device.
#pragma once
#include "common.cuh"
#include "vx_generated.cuh"

struct VxWords {
    u32 w0, w1, w2, w3;
};

VX_FN VxWords vx_philox4x32_10(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1)
{
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += VX_PHILOX_W0;
            k1 += VX_PHILOX_W1;
        }
        const u64 p0 = (u64)VX_PHILOX_M0 * (u64)c0;
        const u64 p1 = (u64)VX_PHILOX_M1 * (u64)c2;
        const u32 n0 = (u32)(p1 >> 32) ^ c1 ^ k0;
        const u32 n1 = (u32)p1;
        const u32 n2 = (u32)(p0 >> 32) ^ c3 ^ k1;
        const u32 n3 = (u32)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
    }
    VxWords w = {c0, c1, c2, c3};
    return w;
}
