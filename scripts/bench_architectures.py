"""CPU benchmark of the residual and recurrent architectures against PyTorch, side by side.

The workload, per Monte Carlo sample: a grid of P points (sigma_w2, sigma_b2
and the architecture's own axis: alpha, sigma_u2, update_bias, forget_bias);
for each, a residual tanh MLP of depth T or a tanh RNN unrolled over T steps
with tied weights and inputs x_t shared by two trajectories; per step the
mean square and correlation of the two trajectories, and the squared norm of
dE/dh_t by backpropagation through time (E = <gamma, h_T>).

* (a) ``GEMMs alone``: the BLAS calls of one step of the numba engine's unit, same
  shapes, same row split (``gemm_shapes``): the limit of (c);
* (c) ``vxsim``: the numba engine (the RNNs on ``engines.numba_rnn``'s stacked GEMMs
  and fused step kernels, the residual net on ``engines.generic``), in VJP mode and
  JVP mode;
* (b) ``torch expert``: the grid batched as the columns of one matrix with the
  weights shared by all points (common random numbers, as vxsim does), the
  second trajectory without autograd, autograd for the gradients;
* ``torch plain`` (``--plain``): what is usually written, one ``nn.RNNCell`` / ``GRUCell`` /
  ``LSTMCell`` (or one ``nn.Linear`` per residual layer) per grid point with
  both trajectories as a batch of two, ``retain_grad`` on every h_t; a few
  grid points are timed and the time scaled to P (they are independent).

All in float32 on every core, in the same run, so the ratios hold on a busy
machine even when the absolute times drift; PyTorch in processes of its own
(``torch_process``: vxsim's OpenMP settings slowed it 2-3.5x in one process).

    python scripts/bench_architectures.py            # widths 128, 256, 512, 1024; T = 100
    python scripts/bench_architectures.py --quick    # width 256, T = 40
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch_process  # before vxsim: it keeps the environment PyTorch is timed in

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_cpu import best  # noqa: E402  (this folder is on sys.path)
from docs_block import recorded  # noqa: E402

from vxsim import config as config_mod  # noqa: E402
from vxsim.engines import numba_cpu  # noqa: E402

# each architecture's own grid axis (alpha, sigma_u2, update_bias, forget_bias)
AXES = {arch: list(axes)[-1] for arch, axes in config_mod.EXTRA_AXES.items() if axes}
AXIS_VALUES = {"alpha": [0.5, 1.0], "sigma_u2": [0.5, 1.0], "update_bias": [0.0, 1.0],
               "forget_bias": [0.0, 1.0]}  # fmt: skip
SIGMA_W2 = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
SIGMA_B2 = [0.0, 0.1]
POINTS = len(SIGMA_W2) * len(SIGMA_B2) * 2


def make_config(arch, width, depth, mode, path="auto"):
    axis = AXES[arch]
    return config_mod.load(
        overrides=[
            f'engine.path="{path}"',
            f'network.architecture="{arch}"',
            f"network.width=[{width}]",
            f"network.depth={depth}",
            'network.activation=["tanh"]',
            f"grid.sigma_w2={SIGMA_W2}",
            f"grid.sigma_b2={SIGMA_B2}",
            f"grid.{axis}={AXIS_VALUES[axis]}",
            "monte_carlo.samples=1",
            f'measure.mode="{mode}"',
            'measure.precision="float32"',
        ]
    )


def time_vxsim(arch, width, depth, mode, repeat, path="auto"):
    """Seconds per step of one work unit (all P grid points)."""
    numba_cpu.run_unit(make_config(arch, width, 3, mode, path), width, 0)  # JIT, first touch
    cfg = make_config(arch, width, depth, mode, path)
    return best(lambda: numba_cpu.run_unit(cfg, width, 0), repeat) / depth


def vjp_keeps(arch, width, depth):
    """(every step kept, gates kept) of the numba engine's VJP plan for this workload
    (engines.numba_rnn: within the store budget nothing is recomputed, and a gated net's
    backward steps read the forward pass's gate values)."""
    from vxsim.engines import numba_rnn

    cfg = make_config(arch, width, depth, "vjp")
    cls = numba_rnn._ResidualUnit if arch == "residual" else numba_rnn._Unit
    unit = cls(cfg, width, 0, "gemm")
    return bool(unit.plan.keep_all), unit.gates_kept is not None


def gemm_shapes(arch, mode, points, width, kept=(True, True)):
    """(rows, inner, cols) of the GEMMs one step of a VJP or JVP unit does on the numba
    engine, the tangent or recomputation included (engines.numba_rnn, numba_cpu);
    ``kept``: vjp_keeps' answer (what the backward step recomputes)."""
    P, N = points, width
    rows = 3 * P if mode == "jvp" else 2 * P
    every, gates = kept
    if arch in ("rnn", "residual"):
        fwd, bwd = [(rows, N, N)], [(P, N, N)]
        if not every:
            bwd.append((P, N, N))  # a segment's recomputation (trajectory 1)
    elif arch == "gru":
        fwd = [(rows, N, 2 * N), (rows, N, N)]
        bwd = [(P, N, N), (P, 2 * N, N)]  # the transposed GEMMs
        if not gates:
            bwd += [(P, N, 2 * N), (P, N, N)]  # the gates again from the stored state
    else:
        fwd, bwd = [(rows, N, 4 * N)], [(P, 4 * N, N)]
        if not gates:
            bwd.append((P, N, 4 * N))
    return fwd + (bwd if mode == "vjp" else [])


def time_gemms(arch, width, mode, repeat, steps=20, kept=(True, True)):
    """Seconds per step of the GEMMs alone (numba_gemm.matmul, BLAS on one thread, rows
    split over the engine's lanes as in a unit): the limit of vxsim's time."""
    from vxsim.engines import gemm, numba_gemm

    lanes = numba_cpu._lanes()
    ops = []
    for m, k, n in gemm_shapes(arch, mode, POINTS, width, kept):
        a = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
        b = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32).T
        ops.append((a, b, np.empty((m, n), np.float32)))

    def run():
        for _ in range(steps):
            for a, b, out in ops:
                numba_gemm.matmul(a, b, out, lanes)

    with gemm.one_blas_thread():
        run()
        return best(run, repeat) / steps


# ---------------------------------------------------------------- PyTorch


def _grid(torch, arch):
    """Per-point (P,) tensors: sw2, sb2 and the architecture's axis, as in make_config."""
    values = AXIS_VALUES[AXES[arch]]
    sw2, sb2, extra = np.meshgrid(SIGMA_W2, SIGMA_B2, values, indexing="ij")
    return [torch.tensor(a.ravel(), dtype=torch.float32) for a in (sw2, sb2, extra)]


def _inputs(torch, width, gen):
    """x1, x2 (mean square 1, correlation 0.5) and gamma (unit mean square)."""
    z = torch.randn(3, width, generator=gen)
    u = z[0] / z[0].norm()
    e = z[1] - (z[1] @ u) * u
    e = e / e.norm()
    s = math.sqrt(width)
    return s * u, s * (0.5 * u + math.sqrt(0.75) * e), z[2] * s / z[2].norm()


def _stats(torch, h1, h2):
    """log q of trajectory 1 and the correlation of the two, per column (or per row)."""
    q = (h1 * h1).mean(0)
    c = (h1 * h2).sum(0) / (h1.norm(dim=0) * h2.norm(dim=0))
    return q.log(), c


def expert(arch, width, depth):
    """Seconds per step: the grid as columns, shared weights, autograd (module doc)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    N = width
    sw2, sb2, extra = _grid(torch, arch)
    P = sw2.numel()
    s, sb = (sw2 / N).sqrt(), sb2.sqrt()
    x1, x2, gamma = _inputs(torch, N, gen)
    gates = {"residual": 1, "rnn": 1, "gru": 3, "lstm": 4}[arch]
    start = time.perf_counter()
    W = torch.randn(gates * N, N, generator=gen)
    U = torch.randn(gates * N, N, generator=gen) / math.sqrt(N)
    b = torch.randn(gates * N, 1, generator=gen)

    def step(h, c, t_drive, Z, bias):
        if arch == "residual":
            return h + extra * (s * (Z @ torch.tanh(h)) + bias), c
        a = s * (W @ h) + t_drive
        if arch == "rnn":
            return torch.tanh(a), c
        if arch == "gru":
            r, z = torch.sigmoid(a[:N]), torch.sigmoid(a[N : 2 * N] + extra)
            n = torch.tanh(s * (W[2 * N :] @ (r * h)) + t_drive[2 * N :])
            return (1 - z) * n + z * h, c
        i, f = torch.sigmoid(a[:N]), torch.sigmoid(a[N : 2 * N] + extra)
        g, o = torch.tanh(a[2 * N : 3 * N]), torch.sigmoid(a[3 * N :])
        c = f * c + i * g
        return o * torch.tanh(c), c

    h1 = x1[:, None].expand(N, P).clone().requires_grad_()
    h2 = x2[:, None].expand(N, P).clone()
    c1 = c2 = torch.zeros(N, P)
    hs, out = [], []
    for _ in range(depth):
        Z = bias = drive = None
        if arch == "residual":
            Z = torch.randn(N, N, generator=gen)
            bias = sb * torch.randn(N, 1, generator=gen)
        else:
            x = torch.randn(N, generator=gen)
            su = extra.sqrt() if arch == "rnn" else 1.0  # sigma_u2 is the Elman axis only
            drive = (U @ x)[:, None] * su + b * sb
        h1, c1 = step(h1, c1, drive, Z, bias)
        with torch.no_grad():
            h2, c2 = step(h2, c2, drive, Z, bias)
        h1.retain_grad()
        hs.append(h1)
        out += _stats(torch, h1.detach(), h2)
    (hs[-1] * gamma[:, None]).sum().backward()
    out += [(h.grad * h.grad).sum(0).log() for h in hs]
    torch.stack(out).sum().item()
    return (time.perf_counter() - start) / depth


def _cell(torch, arch, N, sw2, sb2, extra):
    """One grid point's PyTorch cell with the vxsim initialisation."""
    from torch import nn

    cell = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[arch](N, N)
    with torch.no_grad():
        nn.init.normal_(cell.weight_hh, 0.0, math.sqrt(sw2 / N))
        nn.init.normal_(cell.weight_ih, 0.0, math.sqrt(extra / N) if arch == "rnn" else 1 / N**0.5)
        nn.init.normal_(cell.bias_ih, 0.0, math.sqrt(sb2) if sb2 > 0 else 0.0)
        nn.init.zeros_(cell.bias_hh)
        if arch != "rnn":
            cell.bias_hh[N : 2 * N] += extra  # the update / forget gate's bias axis
    return cell


def plain(arch, width, depth, sub_points=2):
    """Seconds per step for all P points: one network per grid point (module doc)."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    N = width
    sw2, sb2, extra = _grid(torch, arch)
    x1, x2, gamma = _inputs(torch, N, gen)
    chosen = range(sub_points)
    start = time.perf_counter()
    for p in chosen:
        w2, b2, e = float(sw2[p]), float(sb2[p]), float(extra[p])
        h = torch.stack([x1, x2]).requires_grad_()
        c = torch.zeros(2, N)
        hs, out = [], []
        if arch == "residual":
            for _ in range(depth):
                lin = nn.Linear(N, N)
                nn.init.normal_(lin.weight, 0.0, math.sqrt(w2 / N))
                nn.init.normal_(lin.bias, 0.0, math.sqrt(b2) if b2 > 0 else 0.0)
                h = h + e * lin(torch.tanh(h))
                h.retain_grad()
                hs.append(h)
                out += _stats(torch, h[0].detach(), h[1].detach())
        else:
            cell = _cell(torch, arch, N, w2, b2, e)
            for _ in range(depth):
                x = torch.randn(1, N, generator=gen).expand(2, N)
                if arch == "lstm":
                    h, c = cell(x, (h, c))
                else:
                    h = cell(x, h)
                h.retain_grad()
                hs.append(h)
                out += _stats(torch, h[0].detach(), h[1].detach())
        (hs[-1][0] * gamma).sum().backward()
        out += [(g.grad[0] * g.grad[0]).sum().log() for g in hs]
        torch.stack(out).sum().item()
    return (time.perf_counter() - start) / depth * POINTS / len(chosen)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 256, 40 steps, 1 repeat")
    parser.add_argument("--widths", default=None, help="comma-separated (default 256,512,1024)")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--archs", default=",".join(AXES))
    parser.add_argument("--no-torch", action="store_true", help="vxsim only")
    parser.add_argument("--plain", action="store_true", help="also one PyTorch cell per point")
    parser.add_argument("--repeat", type=int, default=None, help="best of this many runs")
    parser.add_argument(
        "--docs", action="store_true", help="also write the output into docs/performance.md"
    )
    parser.add_argument(
        "--paths", action="store_true", help="the RNNs' gemm and fused paths per width instead"
    )
    args = parser.parse_args()
    with recorded("bench_architectures", write=args.docs):
        crossover(args) if args.paths else table(args)


def crossover(args):
    """ms per step of the recurrent nets on each numba path (numba_rnn's fused_max_width)."""
    widths = [int(w) for w in (args.widths or "32,64,96,128,160,192,256").split(",")]
    depth, repeat = args.depth or 100, args.repeat or 2
    print(f"# numba_rnn paths, {POINTS} points, {depth} steps, float32, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'arch':>6} {'width':>5} {'mode':>4} {'gemm ms':>8} {'fused ms':>8} {'faster':>6}")
    for arch in args.archs.split(","):
        if arch == "residual":
            continue
        for width in widths:
            for mode in ("jvp", "vjp"):
                g = time_vxsim(arch, width, depth, mode, repeat, "gemm")
                f = time_vxsim(arch, width, depth, mode, repeat, "fused")
                print(f"{arch:>6} {width:>5} {mode:>4} {g * 1e3:>8.3f} {f * 1e3:>8.3f} "
                      f"{'fused' if f < g else 'gemm':>6}", flush=True)  # fmt: skip


def table(args):
    widths = [
        int(w) for w in (args.widths or ("256" if args.quick else "128,256,512,1024")).split(",")
    ]
    depth = args.depth or (40 if args.quick else 100)
    repeat = args.repeat or (1 if args.quick else 2)
    torch_version = None if args.no_torch else torch_process.version()
    use_torch = torch_version is not None
    version = f"torch {torch_version}, {os.cpu_count()} threads, in processes of its own"
    import numba

    print(f"# vxsim numba engine, residual and recurrent nets, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# {os.cpu_count()} cores; numpy {np.__version__}, numba {numba.__version__}; "
          f"{version if use_torch else 'torch baselines skipped'}")  # fmt: skip
    print(f"# grid: {POINTS} points (tanh), {depth} steps, float32, VJP = gradients through "
          f"all steps; load average {os.getloadavg()[0]:.2f} at start")  # fmt: skip
    print("# ms per step; (a) GEMMs alone, (c) vxsim, (a)/(c) = share of the GEMM limit;"
          " (b) torch expert (VJP), (b)/(c) = vxsim's speed-up, (b)/(a) = the most it"
          " could be (GEMMs alone)")  # fmt: skip
    head = (
        f"{'arch':>8} {'width':>5} {'vjp (a)':>8} {'vjp (c)':>8} {'a/c':>5}"
        f" {'jvp (a)':>8} {'jvp (c)':>8} {'a/c':>5}"
    )
    if use_torch:
        head += f" {'expert (b)':>10} {'b/c vjp':>7} {'b/c jvp':>7} {'b/a vjp':>7}"
        head += f" {'plain ms':>9} {'x plain':>8}" if args.plain else ""
    print(head)
    for arch in args.archs.split(","):
        for width in widths:
            vjp = time_vxsim(arch, width, depth, "vjp", repeat)
            jvp = time_vxsim(arch, width, depth, "jvp", repeat)
            gv = time_gemms(arch, width, "vjp", repeat, kept=vjp_keeps(arch, width, depth))
            gj = time_gemms(arch, width, "jvp", repeat)
            row = (
                f"{arch:>8} {width:>5} {gv * 1e3:>8.2f} {vjp * 1e3:>8.2f} {gv / vjp:>5.2f}"
                f" {gj * 1e3:>8.2f} {jvp * 1e3:>8.2f} {gj / jvp:>5.2f}"
            )
            if use_torch:
                ex = torch_process.run("bench_architectures", "expert", (arch, width, depth),
                                       repeat=repeat, threads=os.cpu_count())  # fmt: skip
                row += f" {ex * 1e3:>10.2f} {ex / vjp:>7.2f} {ex / jvp:>7.2f} {ex / gv:>7.2f}"
                if args.plain:
                    pl = torch_process.run("bench_architectures", "plain",
                                           (arch, width, min(depth, 40)),
                                           threads=os.cpu_count())  # fmt: skip
                    row += f" {pl * 1e3:>9.1f} {pl / vjp:>8.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
