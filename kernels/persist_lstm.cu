// persist_lstm.cu: the persistent small-width LSTM kernels (issue 14, "persistent RNN":
// Diamos et al., ICML 2016; cuDNN's PERSIST_STATIC), vxsim/engines/cuda_persist.py's
// PersistentLstm. One thread block per grid point runs a whole run of steps (the forward
// pass, a VJP segment's recomputation, its backward steps) in one launch, with the stacked
// W = [Z_i; Z_f; Z_g; Z_o] (4n x n) loaded once into shared memory and kept there:
//
//   forward:   z = W h (the 4 rows of thread i's element: i, n+i, 2n+i, 3n+i), the gates,
//              c_t = f c + i g, h_t = o phi(c_t), tangent [dh; dc] (z_t = W dh)
//   backward:  e = g_c + o phi'(c_t) g_h, g_c <- f e, GA (4n), g_h <- s (GA W)
//
// The products that rnn.cu's step kernels get from cuBLAS are done here by each block
// from its copy of W; the arithmetic around them is the step kernels', in the same order
// (lstm.cuh's elements, rnn.cuh's vx_rnn_step_end, epilogue.cuh's vx_cot_end), so that both
// paths follow the oracle's roundings alike.
//
// Thread i computes only element i of a step's new state from whole old vectors, so the
// new h goes to a second buffer (h and hn swap each step) and a step ends with a barrier;
// the cell state (c, dc) is updated in place. The forward pass keeps W transposed
// (wt[j rows + r] = W[r][j]: a warp reads consecutive words), the backward pass as it is.
// The drives of the launch's steps, (nsteps, 4n) float64, come from one GEMM before it.
// A segment's states and pre-activations go to device memory (S, PA: the step units'
// buffers), where the backward kernel reads them. Shared memory
// (cuda_paths.PERSIST_KERNEL_VECTORS): forward W 4n^2 and h1 h2 dh, hn1 hn2 dhn, c1 c2 dc
// (9n); recomputation 4n^2 + 2n; backward 4n^2 + 6n.
#include "common.cuh"
#include "persist.cuh"
#include "lstm.cuh"
#include "rnn.cuh"

// Steps layer0 .. layer0 + nsteps - 1 of both trajectories (and the tangent), rnn.cu's
// vx_lstm_forward a step: A (rows of h), C (c of both trajectories) and TC (dc) hold a
// point's state between launches; drives (nsteps, 4n); rec, cpi (depth + 1).
VX_KERNEL void vx_lstm_persist_forward(const real *W, const double *xi, const double *drives,
                                       const double *su, const double *shift, real *A, real *C,
                                       real *TC, double *pf, int *pi, double *res, real *cph,
                                       real *cpc, const int *rec, const int *cpi, int P, int n,
                                       int R, int layer0, int nsteps, int kind, double limit)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        double acc = pf[VX_F_ACC * P + p];
        const bool jvp = kind == VX_KIND_JVP;
        const int n4 = 4 * n;
        real *wt = blk.template shared<real>();
        real *h1 = wt + (long long)n4 * n, *h2 = h1 + n, *dh = h2 + n;
        real *hn1 = dh + n, *hn2 = hn1 + n, *dhn = hn2 + n;
        real *c1 = dhn + n, *c2 = c1 + n, *dc = c2 + n;
        real *A1 = A + (long long)p * n, *A2 = A + ((long long)P + p) * n;
        real *AT = A + (2LL * P + p) * n;
        real *C1 = C + (long long)p * n, *C2 = C + ((long long)P + p) * n;
        real *TCp = TC + (long long)p * n;
        VX_FOR(i, blk, n)
        {
            h1[i] = A1[i];
            h2[i] = A2[i];
            c1[i] = C1[i];
            c2[i] = C2[i];
            if (jvp) {
                dh[i] = AT[i];
                dc[i] = TCp[i];
            }
        }
        vx_load_tied(blk, W, wt, n4, n, true);
        for (int li = 0; li < nsteps; ++li) {
            const int layer = layer0 + li;
            const double *drive = drives + (long long)li * n4;
            real *const hr[3] = {hn1, hn2, dhn}, *const cr[3] = {c1, c2, dc};  // the new state
            // sums: |h1|^2, |h2|^2, <h1, h2>, count of |h|, |c| beyond the limit, |[dh; dc]|^2
            double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
            VX_FOR(i, blk, n)
            {
                // z = W h of this element's four gate rows, both trajectories and the tangent
                real z[3][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
                for (int j = 0; j < n; ++j) {
                    const real *wj = wt + (long long)j * n4 + i;
                    const real x1 = h1[j], x2 = h2[j], xt = jvp ? dh[j] : (real)0;
                    for (int g = 0; g < 4; ++g) {
                        const real w = wj[g * n];
                        z[0][g] = vx_fma(w, x1, z[0][g]);
                        z[1][g] = vx_fma(w, x2, z[1][g]);
                        if (jvp)
                            z[2][g] = vx_fma(w, xt, z[2][g]);
                    }
                }
                vx_lstm_element(z, hr, cr, n, i, q, xi, drive, jvp, limit, sums);
            }
            blk.reduce(sums);
            const bool ok = vx_rnn_step_end(blk, p, P, n, R, layer, rec[layer], cpi[layer], jvp,
                                            sums, &acc, hn1, hn2, c1, c2, dhn, dc, cph, cpc, pf,
                                            pi, res);
            // (vx_rnn_step_end's barrier: the whole new state is written before the next
            // step's products)
            real *tmp = h1;
            h1 = hn1, hn1 = tmp;
            tmp = h2, h2 = hn2, hn2 = tmp;
            tmp = dh, dh = dhn, dhn = tmp;
            if (!ok)
                break;
        }
        VX_FOR(i, blk, n)
        {
            A1[i] = h1[i];
            A2[i] = h2[i];
            C1[i] = c1[i];
            C2[i] = c2[i];
            if (jvp) {
                AT[i] = dh[i];
                TCp[i] = dc[i];
            }
        }
    }
}

// Recomputed steps j0 .. j0 + nsteps - 1 of a VJP segment, trajectory 1 (rnn.cu's
// vx_lstm_recompute a step): from the states SH[j], SC[j] (every + 1, P, n) the
// pre-activations PA[j] (every, P, 4n) and the next state SH[j + 1], SC[j + 1].
VX_KERNEL void vx_lstm_persist_recompute(const real *W, const double *xi, const double *drives,
                                         const double *su, const double *shift, real *SH,
                                         real *SC, real *PA, const double *pf, const int *pi,
                                         int P, int n, int j0, int nsteps)
{
    VX_POINTS(blk)
    {
        const int p = (int)blk.index();
        if (pi[VX_I_DEAD * P + p])
            continue;
        const VxGated q = vx_gated_point(pf, pi, su, shift, P, p);
        const int n4 = 4 * n;
        real *wt = blk.template shared<real>();
        real *h = wt + (long long)n4 * n, *hn = h + n;
        VX_FOR(i, blk, n) { h[i] = SH[((long long)j0 * P + p) * n + i]; }
        vx_load_tied(blk, W, wt, n4, n, true);
        for (int li = 0; li < nsteps; ++li) {
            const long long j = j0 + li;
            const double *drive = drives + (long long)li * n4;
            const real *c0 = SC + (j * P + p) * n;
            real *pa = PA + (j * P + p) * n4;
            real *h1 = SH + ((j + 1) * P + p) * n, *c1 = SC + ((j + 1) * P + p) * n;
            VX_FOR(i, blk, n)
            {
                real z[4] = {0, 0, 0, 0};
                for (int jj = 0; jj < n; ++jj) {
                    const real *wj = wt + (long long)jj * n4 + i;
                    const real x = h[jj];
                    for (int g = 0; g < 4; ++g)
                        z[g] = vx_fma(wj[g * n], x, z[g]);
                }
                hn[i] = vx_lstm_recompute_element(z, c0[i], pa, c1 + i, n, i, q, xi, drive);
                h1[i] = hn[i];
            }
            blk.sync();  // the whole new h is written before the next step's products
            real *tmp = h;
            h = hn, hn = tmp;
        }
    }
}

// Backprop steps layer_hi down to layer_lo (step l -> l - 1) of the segment that starts at
// `start` (rnn.cu's vx_lstm_cot_gates, the GEMM U = GA W and vx_rnn_cot_finish a step):
// c_{l-1} from SC, the pre-activations from PA; G (P, 2n) holds a point's [g_h; g_c]
// between launches.
VX_KERNEL void vx_lstm_persist_backward(const real *W, real *G, const real *SC, const real *PA,
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
        const int n4 = 4 * n, sn = 2 * n;
        real *w = blk.template shared<real>();
        real *ga = w + (long long)n4 * n, *g = ga + n4;
        real *gh = g, *gc = g + n;
        real *Gp = G + (long long)p * sn;
        VX_FOR(i, blk, sn) { g[i] = Gp[i]; }
        vx_load_tied(blk, W, w, n4, n, false);
        for (int layer = layer_hi; layer >= layer_lo; --layer) {
            const long long j = layer - 1 - start;
            const real *c0 = SC + (j * P + p) * n;
            const real *a = PA + (j * P + p) * n4;
            VX_FOR(i, blk, n) { vx_lstm_cot_element(a, c0[i], gh[i], gc + i, ga, n, i, q); }
            blk.sync();  // all of GA (and g_c) is written before the product reads it
            double sums[1] = {0.0};
            VX_FOR(i, blk, sn)
            {
                if (i < n) {
                    real uv = (real)0;
                    for (int r = 0; r < n4; ++r)
                        uv = vx_fma(ga[r], w[(long long)r * n + i], uv);
                    g[i] = q.s * uv;
                }
                sums[0] += (double)g[i] * (double)g[i];
            }
            blk.reduce(sums);
            if (!vx_cot_end(blk, p, P, sn, R, layer - 1, rec[layer - 1], sums[0], &gacc, g, pf, pi,
                            res))
                break;
        }
        VX_FOR(i, blk, sn) { Gp[i] = g[i]; }
    }
}
