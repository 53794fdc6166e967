"""Profile of the numba engine's fused path (small widths), one thread. Not a test.

Per width, on the benchmark's grid (``bench_cpu``: tanh and ReLU, 342 points,
float32), the cost of each piece of a fused layer, in ns per point and layer,
each timed alone in a loop on one thread (the best of several runs):

* ``products``: ``rows_times`` over every point's rows (3 in JVP, 2 forward VJP);
* ``epilogue``: ``_forward_point`` of every point (from a saved copy of the
  products; the copy's own time is subtracted), and inside it ``act_rows``
  alone (the activation pass: phi, phi' into the next GEMM input), per
  activation;
* ``generation``: one lane's share of Z^l and xi^l (``fill_share``: the lanes
  draw them together, each 1/lanes) plus its ``transpose_into`` (every lane
  transposes the whole Z^l), per lane and layer, divided by the points of one
  lane;
* ``whole``: a fused JVP unit on one thread, per point and layer (what the
  pieces should add up to).

    PYTHONPATH=. python scripts/profile_fused.py --widths 32,64,128
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu import POINTS, best, make_config  # noqa: E402

from vxsim.engines import numba_cpu  # noqa: E402


def _timers(k):
    """Timing loops around the generated module's kernels."""
    rows_times, forward_point = k.rows_times, k._forward_point
    act_rows, fill_share, transpose_into = k._act_rows, k.fill_share, k.transpose_into
    kind_jvp = k.KIND_JVP

    @njit
    def products(A, Zt, H, rows, nrows, reps):
        for _ in range(reps):
            for b in range(0, nrows, 24):
                rows_times(A, Zt, H, rows[b:], min(24, nrows - b))

    @njit
    def copies(H, H0, pf, pf0, reps):
        for _ in range(reps):
            H[:] = H0
            pf[:] = pf0

    @njit
    def epilogues(H, H0, pf, pf0, A, D, xi, pi, res, limit, cp, cp_ls, reps):
        P = pi.shape[1]
        for _ in range(reps):
            H[:] = H0
            pf[:] = pf0
            for p in range(P):
                forward_point(p, 5, kind_jvp, H, A, D, 0, xi, True, pf, pi, res, -1, limit,
                              cp, cp_ls, -1)  # fmt: skip

    @njit
    def activations(H, A, pf, pi, code, reps):
        P = pi.shape[1]
        one = H.dtype.type(1.0)
        n = 0
        for _ in range(reps):
            for p in range(P):
                if pi[0, p] != code:
                    continue
                n += 1
                act_rows(code, kind_jvp, H[p], H[P + p], H[2 * P + p], one, one, one,
                         A[p], A[P + p], A[2 * P + p], A[p], pf[2, p])  # fmt: skip
        return n

    @njit
    def generation(Z, Zt, xi, keys, w, o, lanes, reps):
        for r in range(reps):
            fill_share(Z, xi, 1 + r % 7, True, keys, w, o, 0, lanes)
            transpose_into(Zt, Z)

    return products, copies, epilogues, activations, generation


def profile(width, repeat):
    cfg = make_config(width, 6, "jvp", path="fused")
    unit = numba_cpu._Unit(cfg, width, 0)
    unit.forward()  # realistic states in A (phi of layer 6), pf, pi
    b = unit.buffers
    k = unit.k
    products, copies, epilogues, activations, generation = _timers(k)
    P, N = unit.P, unit.N
    lanes = numba_cpu._lanes()
    Z, xi = numba_cpu.weights(cfg, width, 0, 6)
    Zt = np.ascontiguousarray(Z.T)
    live = np.flatnonzero(unit.pi[2] == 0)
    rows = np.concatenate([np.stack([live, P + live, 2 * P + live], 1).ravel()]).astype(np.int64)
    out = {"live": live.size}
    reps = max(1, int(2e7 / (3 * P * N * N)))
    products(b.A, Zt, b.H, rows, rows.size, 1)
    t = best(lambda: products(b.A, Zt, b.H, rows, rows.size, reps), repeat)
    out["products"] = t / reps / live.size
    H0, pf0 = b.H.copy(), b.pf.copy()
    pi0 = b.pi.copy()
    ereps = max(1, int(2e6 / (P * N)))
    args = (b.H, H0, b.pf, pf0, b.A, b.D, xi, b.pi, b.res, b.limit, b.cp, b.cp_ls)
    epilogues(*args, 1)
    b.pi[:] = pi0
    copies(b.H, H0, b.pf, pf0, 1)
    tc = best(lambda: copies(b.H, H0, b.pf, pf0, ereps), repeat)
    te = best(lambda: epilogues(*args, ereps), repeat)
    dead = int(np.sum(b.pi[2] != pi0[2]))
    b.pi[:] = pi0
    out["epilogue"] = (te - tc) / ereps / live.size
    out["newly_dead"] = dead
    names, _ = numba_cpu._activation_codes(numba_cpu.base.grid(cfg))
    b.H[:] = H0
    for act in ("tanh", "relu"):
        code = names.index(act)
        n = activations(b.H, b.A, b.pf, b.pi, code, 1)
        ta = best(lambda c=code: activations(b.H, b.A, b.pf, b.pi, c, ereps), repeat)
        out[f"act_{act}"] = ta / (n * ereps)
    greps = max(1, int(2e6 / (N * N)))
    generation(Z, Zt, xi, b.keys, b.wbuf[0], b.obuf[0], lanes, 1)
    tg = best(lambda: generation(Z, Zt, xi, b.keys, b.wbuf[0], b.obuf[0], lanes, greps), repeat)
    out["gen_per_layer_us"] = tg / greps * 1e6
    out["generation"] = tg / greps / (P / lanes)
    numba.set_num_threads(1)
    try:
        depth = max(10, int(4e8 / (3 * P * N * N)))
        cfgw = make_config(width, depth, "jvp", path="fused")
        numba_cpu.run_unit(make_config(width, 3, "jvp", path="fused"), width, 0)
        tw = best(lambda: numba_cpu.run_unit(cfgw, width, 0), repeat)
        out["whole_1thread"] = tw / depth / P
    finally:
        numba.set_num_threads(lanes)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,64,128")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; load average {os.getloadavg()[0]:.2f}; "
          f"{POINTS} points; ns per point and layer, one thread")  # fmt: skip
    print(
        f"{'width':>5} {'products':>9} {'epilogue':>9} {'act tanh':>9} {'act relu':>9} "
        f"{'gen/pt':>7} {'gen us':>7} {'whole':>7}"
    )
    for w in (int(x) for x in args.widths.split(",")):
        r = profile(w, args.repeat)
        print(
            f"{w:>5} {r['products'] * 1e9:>9.0f} {r['epilogue'] * 1e9:>9.0f} "
            f"{r['act_tanh'] * 1e9:>9.0f} {r['act_relu'] * 1e9:>9.0f} "
            f"{r['generation'] * 1e9:>7.0f} {r['gen_per_layer_us']:>7.1f} "
            f"{r['whole_1thread'] * 1e9:>7.0f}",
            flush=True,
        )
    print(f"# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
