// persist_gru.cu: the persistent small-width GRU kernels (issue 14, "persistent RNN":
// Diamos et al., ICML 2016; cuDNN's PERSIST_STATIC), vxsim/engines/cuda_persist.py's
// PersistentGru. One thread block per grid point runs a whole run of steps (the forward
// pass, a VJP segment's recomputation, its backward steps) in one launch, with the stacked
// W = [Z_r; Z_z; Z_n] (3n x n) loaded once into shared memory and kept there:
//
//   forward:   [a_r; a_z] from [Z_r; Z_z] h,  M = r h,  a_n from Z_n M (after a barrier:
//              every element of M),  h_t = (1 - z) n_t + z h,  tangent dh
//   backward:  GAN = phi'(a_n) (1 - z) g, U1 = GAN Z_n, GRZ, g <- z g + r s U1,
//              g <- g + s (GRZ [Z_r; Z_z])
//
// The products that rnn.cu's step kernels get from cuBLAS are done here by each block
// from its copy of W; the arithmetic around them is the step kernels', in the same order
// (gru.cuh's elements, rnn.cuh's vx_rnn_step_end, epilogue.cuh's vx_cot_end), so that both
// paths follow the oracle's roundings alike.
//
// Thread i computes only element i of a step's new state from whole old vectors, so the
// new h goes to a second buffer (h and hn swap each step) and a step ends with a barrier.
// The forward pass keeps W transposed (wt[j rows + r] = W[r][j]: a warp reads consecutive
// words), the backward pass as it is. The drives of the launch's steps, (nsteps, 3n)
// float64, come from one GEMM before it. A segment's states and pre-activations go to
// device memory (S, PA: the step units' buffers), where the backward kernel reads them.
// Shared memory (cuda_paths.PERSIST_KERNEL_VECTORS): forward W 3n^2 and h1 h2 dh,
// hn1 hn2 dhn, M1 M2 Mt, a_z1 a_z2 da_z (12n); recomputation 3n^2 + 3n; backward 3n^2 + 4n.
#include "common.cuh"
#include "persist.cuh"
#include "gru.cuh"
#include "rnn.cuh"

// Steps layer0 .. layer0 + nsteps - 1 of both trajectories (and the tangent), rnn.cu's
// vx_gru_gates, the candidate's GEMM and vx_gru_forward a step: A holds a point's state
// between launches; drives (nsteps, 3n); rec, cpi (depth + 1).
VX_KERNEL void vx_gru_persist_forward(const real *W, const double *xi, const double *drives,
                                      const double *su, const double *shift, real *A, double *pf,
                                      int *pi, double *res, real *cph, const int *rec,
                                      const int *cpi, int P, int n, int R, int layer0,
                                      int nsteps, int kind, double limit)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        double acc = pf[VX_F_ACC * P + p];
        const bool jvp = kind == VX_KIND_JVP;
        const int n3 = 3 * n;
        real *wt = blk.template shared<real>();
        real *h[3], *hn[3], *m[3], *az[3];  // trajectory 1, 2, tangent
        h[0] = wt + (long long)n3 * n;
        for (int k = 0; k < 3; ++k) {
            h[k] = h[0] + k * n;
            hn[k] = h[0] + (3 + k) * n;
            m[k] = h[0] + (6 + k) * n;
            az[k] = h[0] + (9 + k) * n;
        }
        const int ntraj = jvp ? 3 : 2;
        VX_FOR(i, blk, n)
        {
            for (int k = 0; k < ntraj; ++k)
                h[k][i] = A[((long long)k * P + p) * n + i];
        }
        vx_load_tied(blk, W, wt, n3, n, true);
        for (int li = 0; li < nsteps; ++li) {
            const int layer = layer0 + li;
            const double *drive = drives + (long long)li * n3;
            // the gates: [a_r; a_z] = s [Z_r; Z_z] h + b, M = r h; tangent da = s Z dh,
            // M_t = r (1-r) da_r h + r dh
            VX_FOR(i, blk, n)
            {
                // (constant indices only: the sums stay in registers)
                real zr[3] = {0, 0, 0}, zz[3] = {0, 0, 0};
                const real *x1 = h[0], *x2 = h[1], *xt = h[2];
                for (int j = 0; j < n; ++j) {
                    const real *wj = wt + (long long)j * n3 + i;
                    const real wr = wj[0], wz = wj[n];
                    zr[0] = vx_fma(wr, x1[j], zr[0]);
                    zz[0] = vx_fma(wz, x1[j], zz[0]);
                    zr[1] = vx_fma(wr, x2[j], zr[1]);
                    zz[1] = vx_fma(wz, x2[j], zz[1]);
                    if (jvp) {
                        zr[2] = vx_fma(wr, xt[j], zr[2]);
                        zz[2] = vx_fma(wz, xt[j], zz[2]);
                    }
                }
                for (int k = 0; k < 2; ++k) {
                    const VxGruRz g = vx_gru_rz(zr[k], zz[k], n, i, q, xi, drive);
                    az[k][i] = g.a_z;
                    m[k][i] = g.r * h[k][i];
                    if (jvp && k == 0)
                        m[2][i] = vx_gru_rz_tangent(g, q.s, zr[2], zz[2], h[0][i], h[2][i],
                                                    az[2] + i);
                }
            }
            blk.sync();  // all of M is written before the candidate's product reads it
            // sums: |h1|^2, |h2|^2, <h1, h2>, count of |h| beyond the limit, |dh|^2
            double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
            VX_FOR(i, blk, n)
            {
                real zn[3] = {0, 0, 0};
                const real *m1 = m[0], *m2 = m[1], *mt = m[2];
                for (int j = 0; j < n; ++j) {
                    const real wn = wt[(long long)j * n3 + 2LL * n + i];
                    zn[0] = vx_fma(wn, m1[j], zn[0]);
                    zn[1] = vx_fma(wn, m2[j], zn[1]);
                    if (jvp)
                        zn[2] = vx_fma(wn, mt[j], zn[2]);
                }
                vx_gru_element(zn, az, h, hn, n, i, q, xi, drive, jvp, limit, sums);
            }
            blk.reduce(sums);
            const bool ok = vx_rnn_step_end(blk, p, P, n, R, layer, rec[layer], cpi[layer], jvp,
                                            sums, &acc, hn[0], hn[1], 0, 0, hn[2], 0, cph, 0, pf,
                                            pi, res);
            // (vx_rnn_step_end's barrier: the whole new state is written before the next
            // step's products)
            for (int k = 0; k < 3; ++k) {
                real *tmp = h[k];
                h[k] = hn[k], hn[k] = tmp;
            }
            if (!ok)
                break;
        }
        VX_FOR(i, blk, n)
        {
            for (int k = 0; k < ntraj; ++k)
                A[((long long)k * P + p) * n + i] = h[k][i];
        }
    }
}

// Recomputed steps j0 .. j0 + nsteps - 1 of a VJP segment, trajectory 1 (rnn.cu's
// vx_gru_gates with one trajectory, the candidate's GEMM and vx_gru_recompute a step): from
// SH[j] (every + 1, P, n) the pre-activations [a_r; a_z; a_n] into PA[j] (every, P, 3n) and
// h_{j+1} into SH[j + 1].
VX_KERNEL void vx_gru_persist_recompute(const real *W, const double *xi, const double *drives,
                                        const double *su, const double *shift, real *SH,
                                        real *PA, const double *pf, const int *pi, int P, int n,
                                        int j0, int nsteps)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        const int n3 = 3 * n;
        real *wt = blk.template shared<real>();
        real *h = wt + (long long)n3 * n, *hn = h + n, *m = hn + n;
        VX_FOR(i, blk, n) { h[i] = SH[((long long)j0 * P + p) * n + i]; }
        vx_load_tied(blk, W, wt, n3, n, true);
        for (int li = 0; li < nsteps; ++li) {
            const long long j = j0 + li;
            const double *drive = drives + (long long)li * n3;
            real *pa = PA + (j * P + p) * n3;
            real *h1 = SH + ((j + 1) * P + p) * n;
            VX_FOR(i, blk, n)
            {
                real zr = (real)0, zz = (real)0;
                for (int jj = 0; jj < n; ++jj) {
                    const real *wj = wt + (long long)jj * n3 + i;
                    zr = vx_fma(wj[0], h[jj], zr);
                    zz = vx_fma(wj[n], h[jj], zz);
                }
                const VxGruRz g = vx_gru_rz(zr, zz, n, i, q, xi, drive);
                m[i] = g.r * h[i];
                pa[i] = g.a_r;
                pa[n + i] = g.a_z;
            }
            blk.sync();  // all of M is written before the candidate's product reads it
            VX_FOR(i, blk, n)
            {
                real zn = (real)0;
                for (int jj = 0; jj < n; ++jj)
                    zn = vx_fma(wt[(long long)jj * n3 + 2LL * n + i], m[jj], zn);
                const VxGruUpdate u = vx_gru_update(zn, pa[n + i], h[i], n, i, q, xi, drive);
                pa[2LL * n + i] = u.a_n;
                hn[i] = u.h;
                h1[i] = hn[i];
            }
            blk.sync();  // the whole new h is written before the next step's products
            real *tmp = h;
            h = hn, hn = tmp;
        }
    }
}

// Backprop steps layer_hi down to layer_lo (step l -> l - 1) of the segment that starts at
// `start` (rnn.cu's vx_gru_cot_candidate, U1 = GAN Z_n, vx_gru_cot_gates, U2 = GRZ
// [Z_r; Z_z] and vx_rnn_cot_finish a step): h_{l-1} from SH, the pre-activations from PA;
// G (P, n) holds a point's cotangent between launches.
VX_KERNEL void vx_gru_persist_backward(const real *W, real *G, const real *SH, const real *PA,
                                       double *pf, int *pi, double *res, const int *rec, int P,
                                       int n, int R, int layer_lo, int layer_hi, int start)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, 0, 0, P, p);
        double gacc = pf[VX_F_GACC * P + p];
        const int n3 = 3 * n;
        real *w = blk.template shared<real>();
        real *g = w + (long long)n3 * n, *gan = g + n, *grz = gan + n;
        real *Gp = G + (long long)p * n;
        VX_FOR(i, blk, n) { g[i] = Gp[i]; }
        vx_load_tied(blk, W, w, n3, n, false);
        for (int layer = layer_hi; layer >= layer_lo; --layer) {
            const long long j = layer - 1 - start;
            const real *h0 = SH + (j * P + p) * n;
            const real *a = PA + (j * P + p) * n3;
            VX_FOR(i, blk, n) { gan[i] = vx_gru_gan(a, g[i], n, i, q); }
            blk.sync();  // all of GAN is written before U1 = GAN Z_n reads it
            VX_FOR(i, blk, n)
            {
                real u1 = (real)0;
                for (int r = 0; r < n; ++r)
                    u1 = vx_fma(gan[r], w[(2LL * n + r) * n + i], u1);
                vx_gru_grz(a, h0[i], q.s * u1, g + i, grz, n, i, q);
            }
            blk.sync();  // all of GRZ is written before U2 = GRZ [Z_r; Z_z] reads it
            double sums[1] = {0.0};
            VX_FOR(i, blk, n)
            {
                real u2 = (real)0;
                for (int r = 0; r < 2 * n; ++r)
                    u2 = vx_fma(grz[r], w[(long long)r * n + i], u2);
                g[i] = g[i] + q.s * u2;
                sums[0] += (double)g[i] * (double)g[i];
            }
            blk.reduce(sums);
            if (!vx_cot_end(blk, p, P, n, R, layer - 1, rec[layer - 1], sums[0], &gacc, g, pf, pi,
                            res))
                break;
        }
        VX_FOR(i, blk, n) { Gp[i] = g[i]; }
    }
}
