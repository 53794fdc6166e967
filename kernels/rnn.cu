// rnn.cu: the recurrent networks' step kernels (Elman, LSTM, GRU), one thread block per grid
// point, around cuBLAS GEMMs with the tied stacked gate matrices (vxsim/engines/cuda_rnn.py).
//
// States are rows of C-order arrays, as on the MLP's GEMM path: point p's trajectory 1 in
// row p, trajectory 2 in row P + p, its tangent in row 2P + p. A step is
//
//   Elman:  H = A Z^T (one GEMM), vx_elman_forward            (the MLP's epilogue + drive)
//   LSTM:   H = A [Z_i; Z_f; Z_g; Z_o]^T (one GEMM), vx_lstm_forward
//   GRU:    H = A [Z_r; Z_z]^T, vx_gru_gates, H2 = M Z_n^T, vx_gru_forward (r sits inside)
//
// and the backward step (trajectory 1, from stored pre-activations):
//
//   LSTM:   vx_lstm_cot_gates, U = GA Z (one GEMM), vx_rnn_cot_finish
//   GRU:    vx_gru_cot_candidate, U1 = GAN Z_n, vx_gru_cot_gates, U2 = GRZ [Z_r; Z_z],
//           vx_rnn_cot_finish
//   Elman:  the MLP's vx_backward
//
// The equations are the models' (models/rnn.py, lstm.py, gru.py), in their order of
// operations, so that the NumPy oracle's roundings are followed where they can be.
#include "common.cuh"
#include "epilogue.cuh"
#include "normal.cuh"
#include "rnn.cuh"
#include "gru.cuh"
#include "lstm.cuh"

// ------------------------------------------------------------------ generation

// The tied gate matrices Z_g (rng.STREAM_GATE + g, layer 0), rounded to real.
VX_KERNEL void vx_fill_stream(real *out, long long count, int layer0, int nlayers, u32 stream,
                              u32 sample, u32 k0, u32 k1)
{
    vx_fill_stream_body(out, count, layer0, nlayers, stream, sample, k0, k1);
}

// Float64 draws: the input matrices Z_U, the biases xi_g, the inputs x_t.
VX_KERNEL void vx_fill_stream64(double *out, long long count, int layer0, int nlayers,
                                u32 stream, u32 sample, u32 k0, u32 k1)
{
    vx_fill_stream_body(out, count, layer0, nlayers, stream, sample, k0, k1);
}

// ------------------------------------------------------------------ captured bodies

// A captured body (a CUDA Graph replayed once per block of steps, cuda_graphs.py) reads
// the layer of its first step from the device, clock[0]; its last launch advances it.
VX_KERNEL void vx_clock_advance(int *clock, int steps)
{
    VX_BLOCKS(blk)
    {
        if (blk.index() == 0 && blk.tid() == 0)
            clock[0] += steps;
    }
}

// vx_fill_stream of the one layer clock[0] + step (Z^l of the residual net's captured body:
// stream VX_STREAM_WEIGHT, the bits of vx_fill_weights untransposed).
VX_KERNEL void vx_fill_stream_clocked(real *out, long long count, const int *clock, int step,
                                      u32 stream, u32 sample, u32 k0, u32 k1)
{
    vx_fill_stream_body(out, count, clock[0] + step, 1, stream, sample, k0, k1);
}

// vx_fill_stream64 of the one layer clock[0] + step (xi^l: stream VX_STREAM_BIAS, the bits of
// vx_fill_bias).
VX_KERNEL void vx_fill_stream64_clocked(double *out, long long count, const int *clock, int step,
                                        u32 stream, u32 sample, u32 k0, u32 k1)
{
    vx_fill_stream_body(out, count, clock[0] + step, 1, stream, sample, k0, k1);
}

// ------------------------------------------------------------------ Elman

// u_t = s Z h_{t-1} + (xi sb + d_t su), the MLP's forward epilogue with the drive d_t
// (renormalisation, tangent, divergence, records, checkpoint: epilogue.cuh).
VX_KERNEL void vx_elman_forward(real *H, real *A, const double *xi, const double *drive,
                                const double *su, double *pf, int *pi, double *res, real *cp,
                                double *cp_ls, int P, int n, int R, int layer, int kind,
                                int has_bias, int r, int ci, double limit)
{
    vx_forward_all(H, A, xi, drive, su, pf, pi, res, cp, cp_ls, P, n, R, layer, kind, has_bias, r,
                   ci, limit);
}

// Step `step` of a captured body (a CUDA Graph replayed once per block of steps): the layer
// read on the device, layer = clock[0] + step, its record rec[layer], its checkpoint
// cpi[layer], its drive row `step` of the block's drives (rows of G n float64).
VX_KERNEL void vx_elman_forward_clocked(real *H, real *A, const double *xi, const double *drives,
                                        const double *su, double *pf, int *pi, double *res,
                                        real *cp, double *cp_ls, const int *clock, const int *rec,
                                        const int *cpi, int step, int P, int n, int R, int kind,
                                        int has_bias, double limit)
{
    const int layer = clock[0] + step;
    vx_forward_all(H, A, xi, drives + (long long)step * n, su, pf, pi, res, cp, cp_ls, P, n, R,
                   layer, kind, has_bias, rec[layer], cpi[layer], limit);
}

// A recomputed Elman step of a VJP segment (H1 = A1 Z^T): phi' into D[j] (every, P, n).
VX_KERNEL void vx_elman_recompute(real *H1, real *A1, real *D, const double *xi,
                                  const double *drive, const double *su, double *pf,
                                  const int *pi, int P, int n, int j, int has_bias)
{
    vx_recompute_all(H1, A1, D, xi, drive, su, pf, pi, P, n, j, has_bias);
}

// ------------------------------------------------------------------ LSTM

// One LSTM step of every point, both trajectories (and with kind == JVP the tangent):
//   c_t = f c + i g, h_t = o phi(c_t) into A, C;
//   dc_t = df c + f dc + di g + i dg,  dh_t = do phi(c_t) + o phi'(c_t) dc_t  (da = s Z dh),
//   [dh; dc] renormalised, log |[dh; dc]|^2 accumulated; |h|, |c| beyond the limit
//   (or not finite) or a non-finite tangent flag the point; records; checkpoint ci of
//   trajectory 1's (h, c) into (cph, cpc).
VX_FN void vx_lstm_forward_all(real *H, real *A, real *C, real *TC, const double *xi,
                               const double *drive, const double *su, const double *shift,
                               double *pf, int *pi, double *res, real *cph, real *cpc, int P,
                               int n, int R, int layer, int kind, int r, int ci, double limit)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        double acc = pf[VX_F_ACC * P + p];
        const bool jvp = kind == VX_KIND_JVP;
        const long long n4 = 4LL * n;
        // rows p, P + p of A and C (trajectories 1, 2), the tangent's 2P + p of A and p of TC
        real *const h[3] = {A + (long long)p * n, A + ((long long)P + p) * n,
                            jvp ? A + (2LL * P + p) * n : 0};
        real *const c[3] = {C + (long long)p * n, C + ((long long)P + p) * n,
                            jvp ? TC + (long long)p * n : 0};
        // sums: |h1|^2, |h2|^2, <h1, h2>, count of |h|, |c| beyond the limit, |[dh; dc]|^2
        double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
        VX_FOR(i, blk, n)
        {
            // element i's products: rows p, P + p, 2P + p of H, 4n each (constant indices
            // only: z stays in registers)
            real z[3][4] = {};
            for (int g = 0; g < 4; ++g) {
                const long long e = (long long)g * n + i;
                z[0][g] = H[(long long)p * n4 + e];
                z[1][g] = H[((long long)P + p) * n4 + e];
                if (jvp)
                    z[2][g] = H[(2LL * P + p) * n4 + e];
            }
            vx_lstm_element(z, h, c, n, i, q, xi, drive, jvp, limit, sums);
        }
        blk.reduce(sums);
        vx_rnn_step_end(blk, p, P, n, R, layer, r, ci, jvp, sums, &acc, h[0], h[1], c[0], c[1],
                        h[2], c[2], cph, cpc, pf, pi, res);
    }
}

VX_KERNEL void vx_lstm_forward(real *H, real *A, real *C, real *TC, const double *xi,
                               const double *drive, const double *su, const double *shift,
                               double *pf, int *pi, double *res, real *cph, real *cpc, int P,
                               int n, int R, int layer, int kind, int r, int ci, double limit)
{
    vx_lstm_forward_all(H, A, C, TC, xi, drive, su, shift, pf, pi, res, cph, cpc, P, n, R, layer,
                        kind, r, ci, limit);
}

// Step `step` of a captured body: vx_lstm_forward at layer clock[0] + step (as
// vx_elman_forward_clocked; drive rows of 4n).
VX_KERNEL void vx_lstm_forward_clocked(real *H, real *A, real *C, real *TC, const double *xi,
                                       const double *drives, const double *su,
                                       const double *shift, double *pf, int *pi, double *res,
                                       real *cph, real *cpc, const int *clock, const int *rec,
                                       const int *cpi, int step, int P, int n, int R, int kind,
                                       double limit)
{
    const int layer = clock[0] + step;
    vx_lstm_forward_all(H, A, C, TC, xi, drives + (long long)step * 4 * n, su, shift, pf, pi, res,
                        cph, cpc, P, n, R, layer, kind, rec[layer], cpi[layer], limit);
}

// A recomputed LSTM step of trajectory 1 (H1 = h_j Z^T, P rows): the pre-activations into
// pa (P, 4n) and the next state (h, c) into (h1, c1).
VX_KERNEL void vx_lstm_recompute(const real *H1, const real *c0, real *pa, real *h1, real *c1,
                                 const double *xi, const double *drive, const double *su,
                                 const double *shift, const double *pf, const int *pi, int P,
                                 int n)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        const long long n4 = 4LL * n, row = p;
        VX_FOR(i, blk, n)
        {
            real z[4];
            for (int g = 0; g < 4; ++g)
                z[g] = H1[row * n4 + (long long)g * n + i];
            h1[row * n + i] = vx_lstm_recompute_element(z, c0[row * n + i], pa + row * n4,
                                                        c1 + row * n + i, n, i, q, xi, drive);
        }
        blk.sync();
    }
}

// The LSTM cotangent's gate part at step t (trajectory 1; G rows [g_h; g_c], 2n):
//   e = g_c + o phi'(c_t) g_h,   g_c <- f e,
//   GA = [i (1-i) g e; f (1-f) c e; phi'(a_g) i e; o (1-o) phi(c_t) g_h]  (then U = GA Z).
VX_KERNEL void vx_lstm_cot_gates(real *G, real *GA, const real *c0, const real *pa,
                                 const double *pf, const int *pi, int P, int n)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, 0, 0, P, p);
        const long long n4 = 4LL * n, row = p;
        real *gh = G + row * 2 * n;
        VX_FOR(i, blk, n)
        {
            vx_lstm_cot_element(pa + row * n4, c0[row * n + i], gh[i], gh + n + i, GA + row * n4, n,
                                i, q);
        }
        blk.sync();
    }
}

// ------------------------------------------------------------------ GRU

// The reset and update gates of a step (rows of H1 = A [Z_r; Z_z]^T, 2n), ntraj
// trajectories (2 forward, 1 recomputing) and with kind == JVP the tangent row:
//   a_r = s zx_r + real(b_r),  a_z = s zx_z + real(b_z + update_bias)  (written into H1),
//   M = r h  (the candidate's GEMM input),  tangent: da = s Z dh (into H1's tangent row),
//   M_t = r (1-r) da_r h + r dh.
VX_FN void vx_gru_gates_all(real *H1, const real *A, real *M, const double *xi,
                            const double *drive, const double *su, const double *shift,
                            const double *pf, const int *pi, int P, int n, int ntraj, int kind)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        const bool jvp = kind == VX_KIND_JVP;
        const long long n2 = 2LL * n, pt = 2LL * P + p;
        VX_FOR(i, blk, n)
        {
            for (int k = 0; k < ntraj; ++k) {
                const long long row = (long long)k * P + p;
                real *zx = H1 + row * n2;
                const VxGruRz g = vx_gru_rz(zx[i], zx[n + i], n, i, q, xi, drive);
                zx[i] = g.a_r;
                zx[n + i] = g.a_z;
                M[row * n + i] = g.r * A[row * n + i];
                if (jvp && k == 0) {
                    real *zt = H1 + pt * n2;
                    M[pt * n + i] = vx_gru_rz_tangent(g, q.s, zt[i], zt[n + i], A[row * n + i],
                                                      A[pt * n + i], zt + n + i);
                }
            }
        }
        blk.sync();
    }
}

VX_KERNEL void vx_gru_gates(real *H1, const real *A, real *M, const double *xi,
                            const double *drive, const double *su, const double *shift,
                            const double *pf, const int *pi, int P, int n, int ntraj, int kind)
{
    vx_gru_gates_all(H1, A, M, xi, drive, su, shift, pf, pi, P, n, ntraj, kind);
}

// Step `step` of a captured body: vx_gru_gates with the drive row `step` (rows of 3n).
VX_KERNEL void vx_gru_gates_clocked(real *H1, const real *A, real *M, const double *xi,
                                    const double *drives, const double *su, const double *shift,
                                    const double *pf, const int *pi, int step, int P, int n,
                                    int ntraj, int kind)
{
    vx_gru_gates_all(H1, A, M, xi, drives + (long long)step * 3 * n, su, shift, pf, pi, P, n,
                     ntraj, kind);
}

// The GRU's state update from the gates (H1, pre-activations) and H2 = M Z_n^T:
//   n_t = phi(a_n), a_n = s zx_n + real(b_n),  h_t = (1 - z) n_t + z h  (into A);
//   tangent: dz = z (1-z) da_z, dn = phi'(a_n) s (Z_n M_t), dh_t = (1-z) dn + z dh + (h - n) dz,
//   renormalised, log |dh|^2 accumulated; divergence, records, checkpoint ci of trajectory 1.
VX_FN void vx_gru_forward_all(const real *H1, const real *H2, real *A, const double *xi,
                              const double *drive, const double *su, double *pf, int *pi,
                              double *res, real *cph, int P, int n, int R, int layer, int kind,
                              int r, int ci, double limit)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, 0, P, p);
        double acc = pf[VX_F_ACC * P + p];
        const bool jvp = kind == VX_KIND_JVP;
        const long long n2 = 2LL * n;
        // rows p, P + p, 2P + p (the tangent's) of H1 (a_z: from column n on) and A
        const real *const az[3] = {H1 + (long long)p * n2 + n, H1 + ((long long)P + p) * n2 + n,
                                   jvp ? H1 + (2LL * P + p) * n2 + n : 0};
        real *const h[3] = {A + (long long)p * n, A + ((long long)P + p) * n,
                            jvp ? A + (2LL * P + p) * n : 0};
        // sums: |h1|^2, |h2|^2, <h1, h2>, count of |h| beyond the limit, |dh|^2
        double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
        VX_FOR(i, blk, n)
        {
            const real zn[3] = {H2[(long long)p * n + i], H2[((long long)P + p) * n + i],
                                jvp ? H2[(2LL * P + p) * n + i] : (real)0};
            vx_gru_element(zn, az, h, h, n, i, q, xi, drive, jvp, limit, sums);
        }
        blk.reduce(sums);
        vx_rnn_step_end(blk, p, P, n, R, layer, r, ci, jvp, sums, &acc, h[0], h[1], 0, 0, h[2], 0,
                        cph, 0, pf, pi, res);
    }
}

VX_KERNEL void vx_gru_forward(const real *H1, const real *H2, real *A, const double *xi,
                              const double *drive, const double *su, double *pf, int *pi,
                              double *res, real *cph, int P, int n, int R, int layer, int kind,
                              int r, int ci, double limit)
{
    vx_gru_forward_all(H1, H2, A, xi, drive, su, pf, pi, res, cph, P, n, R, layer, kind, r, ci,
                       limit);
}

// Step `step` of a captured body: vx_gru_forward at layer clock[0] + step (drive rows of 3n).
VX_KERNEL void vx_gru_forward_clocked(const real *H1, const real *H2, real *A, const double *xi,
                                      const double *drives, const double *su, double *pf,
                                      int *pi, double *res, real *cph, const int *clock,
                                      const int *rec, const int *cpi, int step, int P, int n,
                                      int R, int kind, double limit)
{
    const int layer = clock[0] + step;
    vx_gru_forward_all(H1, H2, A, xi, drives + (long long)step * 3 * n, su, pf, pi, res, cph, P, n,
                       R, layer, kind, rec[layer], cpi[layer], limit);
}

// A recomputed GRU step of trajectory 1 (after vx_gru_gates with ntraj = 1 and the
// candidate GEMM): pre-activations [a_r; a_z; a_n] into pa (P, 3n), h_t into h1.
VX_KERNEL void vx_gru_recompute(const real *H1, const real *H2, const real *h0, real *pa,
                                real *h1, const double *xi, const double *drive,
                                const double *su, const double *pf, const int *pi, int P, int n)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, 0, P, p);
        const long long row = p, n2 = 2LL * n, n3 = 3LL * n;
        VX_FOR(i, blk, n)
        {
            const real a_z = H1[row * n2 + n + i];
            const VxGruUpdate u =
                vx_gru_update(H2[row * n + i], a_z, h0[row * n + i], n, i, q, xi, drive);
            pa[row * n3 + i] = H1[row * n2 + i];
            pa[row * n3 + n + i] = a_z;
            pa[row * n3 + n2 + i] = u.a_n;
            h1[row * n + i] = u.h;
        }
        blk.sync();
    }
}

// The GRU cotangent's candidate part at step t: GAN = phi'(a_n) (1 - z) g (then U1 = GAN Z_n).
VX_KERNEL void vx_gru_cot_candidate(const real *G, real *GAN, const real *pa, const double *pf,
                                    const int *pi, int P, int n)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, 0, 0, P, p);
        const long long row = p;
        VX_FOR(i, blk, n)
        {
            GAN[row * n + i] = vx_gru_gan(pa + row * 3 * n, G[row * n + i], n, i, q);
        }
        blk.sync();
    }
}

// The GRU cotangent's gate part, from U1 = GAN Z_n (g_m = s U1):
//   GRZ = [r (1-r) h g_m; z (1-z) (h - n) g]  (then U2 = GRZ [Z_r; Z_z]),
//   g <- z g + r g_m  (vx_rnn_cot_finish adds s U2).
VX_KERNEL void vx_gru_cot_gates(real *G, const real *U1, real *GRZ, const real *h0,
                                const real *pa, const double *pf, const int *pi, int P, int n)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, 0, 0, P, p);
        const long long row = p;
        VX_FOR(i, blk, n)
        {
            vx_gru_grz(pa + row * 3 * n, h0[row * n + i], q.s * U1[row * n + i], G + row * n + i,
                       GRZ + row * 2 * n, n, i, q);
        }
        blk.sync();
    }
}

// ------------------------------------------------------------------ both gated RNNs

// The end of a backward step to layer lm1 (G rows of sn reals, U = (GA Z) rows of n):
//   g_h <- s U (add = 0) or g_h + s U (add = 1); g renormalised over its sn entries,
//   log |g|^2 accumulated (recorded at r); a non-finite sum collapses the point.
VX_FN void vx_rnn_cot_finish_all(real *G, const real *U, double *pf, int *pi, double *res, int P,
                                 int n, int sn, int add, int R, int lm1, int r)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p] || pi[VX_I_COLLAPSED * P + p])
            continue;
        const real s = (real)pf[VX_F_SCALE * P + p];
        double gacc = pf[VX_F_GACC * P + p];
        real *g = G + (long long)p * sn;
        const real *u = U + (long long)p * n;
        double sums[1] = {0.0};
        VX_FOR(i, blk, sn)
        {
            if (i < n)
                g[i] = add ? g[i] + s * u[i] : s * u[i];
            sums[0] += (double)g[i] * (double)g[i];
        }
        blk.reduce(sums);
        vx_cot_end(blk, p, P, sn, R, lm1, r, sums[0], &gacc, g, pf, pi, res);
    }
}

VX_KERNEL void vx_rnn_cot_finish(real *G, const real *U, double *pf, int *pi, double *res, int P,
                                 int n, int sn, int add, int R, int lm1, int r)
{
    vx_rnn_cot_finish_all(G, U, pf, pi, res, P, n, sn, add, R, lm1, r);
}

// ------------------------------------------------------------------ captured VJP segments
// A full segment of a gated RNN from layer start = clock[0] (cuda_graphs.run_backward).

// vx_rnn_cot_finish of the backward step to lm1 = clock[0] + step, recorded at rec[lm1].
VX_KERNEL void vx_rnn_cot_finish_clocked(real *G, const real *U, double *pf, int *pi, double *res,
                                         const int *clock, const int *rec, int step, int P,
                                         int n, int sn, int add, int R)
{
    const int lm1 = clock[0] + step;
    vx_rnn_cot_finish_all(G, U, pf, pi, res, P, n, sn, add, R, lm1, rec[lm1]);
}

// The segment's first states: checkpoint ci = clock[0] / every - 1 of h (and, states = 2,
// of c) copied into sh (sc), P n elements each (grid-stride, any launch shape).
VX_KERNEL void vx_rnn_restart_clocked(real *sh, real *sc, const real *cph, const real *cpc,
                                      const int *clock, int every, int states, int P, int n)
{
    const long long count = (long long)P * n;
    const long long at = (long long)(clock[0] / every - 1) * count;
    VX_BLOCKS(blk)
    {
        VX_GRID_FOR(e, blk, count)
        {
            sh[e] = cph[at + e];
            if (states == 2)
                sc[e] = cpc[at + e];
        }
    }
}

// The backprop seed: G rows [gamma; 0] (sn = n or 2n; zero for a dead point), log |g^T|^2 = 0
// recorded at the last step (NaN for a dead point).
VX_KERNEL void vx_rnn_grad_init(const real *gamma, real *G, double *pf, int *pi, double *res,
                                int P, int n, int sn, int R, int r)
{
    VX_BLOCKS(blk)
    {
        const int p = (int)blk.index();
        vx_grad_init_point(blk, p, P, n, sn, gamma, G + (long long)p * sn, pf, pi, res, R, r);
    }
}
