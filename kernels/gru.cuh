// gru.cuh: one element of a GRU step (models/gru.py, in its order of operations), for rnn.cu's
// step kernels (states in rows of global memory, the products from cuBLAS) and
// persist_gru.cu's persistent kernels (states in shared memory, the products by the block):
// values in, values out, so that both paths run this arithmetic and nothing else.
//
//   gates:   a_r = s (Z_r h)_i + real(b_r),  a_z = s (Z_z h)_i + real(b_z + update_bias),
//            r = sigma(a_r),  M = r h   (the candidate's product input)
//   update:  a_n = s (Z_n M)_i + real(b_n),  z = sigma(a_z),  n_t = phi(a_n),
//            h_t = (1 - z) n_t + z h
//   tangent: da = s Z dh,  M_t = r (1-r) da_r h + r dh,  dz = z (1-z) da_z,
//            dn = phi'(a_n) s (Z_n M_t)_i,  dh_t = (1-z) dn + z dh + (h - n_t) dz
//   backward: GAN = phi'(a_n) (1-z) g  (U1 = GAN Z_n, g_m = s U1),
//            GRZ = [r (1-r) h g_m; z (1-z) (h - n_t) g],  g <- z g + r g_m
//            (then g <- g + s (GRZ [Z_r; Z_z]))
#pragma once
#include "common.cuh"
#include "rnn.cuh"

// Element i's reset and update gates from its products zr = (Z_r h)_i, zz = (Z_z h)_i.
struct VxGruRz {
    real a_r, a_z, r, r_c;
};

VX_FN VxGruRz vx_gru_rz(real zr, real zz, int n, int i, const VxGated &q, const double *xi,
                        const double *drive)
{
    VxGruRz g;
    g.a_r = vx_gate_preact(zr, q.s, vx_gate_bias(xi, drive, i, q.sb, q.su, 0.0));
    g.a_z = vx_gate_preact(zz, q.s,
                           vx_gate_bias(xi, drive, (long long)n + i, q.sb, q.su, q.shift));
    vx_sigmoid(g.a_r, &g.r, &g.r_c);
    return g;
}

// The gates' tangent from the products zt_r = (Z_r dh)_i, zt_z = (Z_z dh)_i: da_z = s zt_z
// into *da_z; returns M_t = r (1-r) da_r h + r dh, da_r = s zt_r.
VX_FN real vx_gru_rz_tangent(const VxGruRz &g, real s, real zt_r, real zt_z, real h, real dh,
                             real *da_z)
{
    const real da_r = s * zt_r;
    *da_z = s * zt_z;
    const real dr = g.r * g.r_c * da_r;
    return dr * h + g.r * dh;
}

// Element i's update from its product zn = (Z_n M)_i, a_z and h_{t-1}.
struct VxGruUpdate {
    real a_n, z, z_c, cand, h;
};

VX_FN VxGruUpdate vx_gru_update(real zn, real a_z, real h, int n, int i, const VxGated &q,
                                const double *xi, const double *drive)
{
    VxGruUpdate u;
    u.a_n = vx_gate_preact(zn, q.s, vx_gate_bias(xi, drive, 2LL * n + i, q.sb, q.su, 0.0));
    vx_sigmoid(a_z, &u.z, &u.z_c);
    u.cand = vx_phi(q.code, u.a_n, q.param);
    u.h = u.z_c * u.cand + u.z * h;
    return u;
}

// Element i of a forward step's update, trajectories k = 0, 1 from zn[k], az[k][i] = a_z and
// h[k][i] = h_{t-1} into hn[k][i]; with jvp the tangent from zn[2] = (Z_n M_t)_i,
// az[2][i] = da_z and h[2][i] = dh into hn[2][i]. az, h, hn: the rows where they live (global
// memory on the step path, shared on the persistent one; hn may be h). sums: |h1|^2, |h2|^2,
// <h1, h2>, count of |h| beyond the limit, |dh|^2.
VX_FN void vx_gru_element(const real zn[3], const real *const az[3], real *const h[3],
                          real *const hn[3], int n, int i, const VxGated &q, const double *xi,
                          const double *drive, bool jvp, double limit, double sums[5])
{
    const real h1 = h[0][i], h2 = h[1][i], dh = jvp ? h[2][i] : (real)0;
    const VxGruUpdate u1 = vx_gru_update(zn[0], az[0][i], h1, n, i, q, xi, drive);
    if (jvp) {
        const real dz = u1.z * u1.z_c * az[2][i];
        const real dn = vx_dphi(q.code, u1.a_n, q.param) * (q.s * zn[2]);
        const real dhn = u1.z_c * dn + u1.z * dh + (h1 - u1.cand) * dz;
        hn[2][i] = dhn;
        sums[4] += (double)dhn * (double)dhn;
    }
    hn[0][i] = u1.h;
    const VxGruUpdate u2 = vx_gru_update(zn[1], az[1][i], h2, n, i, q, xi, drive);
    hn[1][i] = u2.h;
    sums[3] += vx_big(u1.h, limit);
    sums[3] += vx_big(u2.h, limit);
    sums[0] += (double)u1.h * (double)u1.h;
    sums[1] += (double)u2.h * (double)u2.h;
    sums[2] += (double)u1.h * (double)u2.h;
}

// Element i of a backward step's candidate part from the pre-activations a (a row of 3n) and
// g: GAN = phi'(a_n) (1 - z) g.
VX_FN real vx_gru_gan(const real *a, real g, int n, int i, const VxGated &q)
{
    real z, z_c;
    vx_sigmoid(a[n + i], &z, &z_c);
    return vx_dphi(q.code, a[2LL * n + i], q.param) * z_c * g;
}

// Element i of a backward step's gate part from a, h_{t-1} and g_m = s (GAN Z_n)_i: GRZ into
// grz (a row of 2n), g <- z g + r g_m (in *g).
VX_FN void vx_gru_grz(const real *a, real h, real g_m, real *g, real *grz, int n, int i,
                      const VxGated &q)
{
    real r, r_c, z, z_c;
    vx_sigmoid(a[i], &r, &r_c);
    vx_sigmoid(a[n + i], &z, &z_c);
    const real cand = vx_phi(q.code, a[2LL * n + i], q.param);
    const real gv = *g;
    grz[i] = r * r_c * h * g_m;
    grz[n + i] = z * z_c * (h - cand) * gv;
    *g = z * gv + r * g_m;
}
