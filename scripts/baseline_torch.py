"""vxsim's workload written without vxsim, in PyTorch on CPU: the baselines of bench_cpu.py.

The workload, per Monte Carlo sample: a grid of P points (activation,
sigma_w2, sigma_b2); for each, a depth-L MLP of width N with Gaussian weights
W ~ N(0, sigma_w2/N) and biases b ~ N(0, sigma_b2), two inputs x1, x2 of
correlation 0.5; per layer l the mean squared pre-activation q^l, the
correlation of the two inputs' pre-activations, and the squared norm of the
gradient dE/dh^l with E = <gamma, h^L> (VJP), or of the tangent J v (JVP).

Two versions, as a researcher would write them:

* ``plain``: an ``nn.Sequential`` per grid point with fresh weights
  (``nn.init.normal_``), both inputs as a batch of two, the layers walked in
  a loop to keep every h^l (``retain_grad``), autograd for the gradients.
* ``expert``: the whole grid batched as the columns of one matrix with the
  weights shared by every grid point (common random numbers): one matmul
  per layer over all grid columns, per-column scale and bias; VJP by
  autograd over the whole depth, JVP by forward-mode AD
  (``torch.autograd.forward_ad``, what ``torch.func.jvp`` is built on),
  which needs no memory per layer.

Both in float32 on all cores. Each function returns seconds per layer per
sample for the whole grid of ``points`` points; ``plain`` times a few grid
points and scales linearly (its grid points are independent networks).

    python scripts/baseline_torch.py --width 256 --points 60 --depth 20
"""

import argparse
import math
import time

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
FUNCTIONS = {"tanh": torch.tanh, "relu": torch.relu}


def grid(points, activations=("tanh", "relu")):
    """``points`` (activation, sigma_w2, sigma_b2) triples, activation outermost."""
    per = math.ceil(points / len(activations))
    n_b = 3 if per >= 6 else 1
    n_w = math.ceil(per / n_b)
    sw2 = torch.linspace(0.5, 4.0, n_w).tolist()
    sb2 = torch.linspace(0.0, 0.2, n_b).tolist()
    out = [(a, w, b) for a in activations for w in sw2 for b in sb2]
    return out[:points]


def inputs(width, generator):
    """x1, x2 with mean square 1 and correlation 0.5; gamma, v of unit mean square."""
    z = torch.randn(4, width, generator=generator)
    u = z[0] / z[0].norm()
    e = z[1] - (z[1] @ u) * u
    e = e / e.norm()
    s = math.sqrt(width)
    x1 = s * u
    x2 = s * (0.5 * u + math.sqrt(0.75) * e)
    gamma = z[2] * s / z[2].norm()
    v = z[3] * s / z[3].norm()
    return x1, x2, gamma, v


def _stats(h):
    """log q of input 1, correlation of the two inputs (h: (2, N) or (N, 2, P))."""
    h1, h2 = h[0], h[1]
    q = (h1 * h1).mean(-1)
    c = (h1 * h2).sum(-1) / (h1.norm(dim=-1) * h2.norm(dim=-1))
    return q.log(), c


def plain(width, points, depth, mode="vjp", sub_points=4, seed=0):
    """Seconds per layer per sample: one nn.Sequential per grid point, autograd.

    ``mode`` is accepted for symmetry; the plain version always backpropagates
    (that is how the gradient is got without vxsim), and JVP is not cheaper.
    """
    del mode
    gen = torch.Generator().manual_seed(seed)
    x1, x2, gamma, _ = inputs(width, gen)
    x = torch.stack([x1, x2])
    chosen = grid(points)[: max(1, min(sub_points, points))]
    start = time.perf_counter()
    for act, sw2, sb2 in chosen:
        layers = []
        for _ in range(depth):
            lin = nn.Linear(width, width)
            nn.init.normal_(lin.weight, 0.0, math.sqrt(sw2 / width))
            if sb2 > 0:
                nn.init.normal_(lin.bias, 0.0, math.sqrt(sb2))
            else:
                nn.init.zeros_(lin.bias)
            layers += [lin, ACTIVATIONS[act]()]
        net = nn.Sequential(*layers[:-1])  # no activation after the last layer
        hs, log_q, corr = [], [], []
        a = x
        for module in net:
            a = module(a)
            if isinstance(module, nn.Linear):
                a.retain_grad()
                hs.append(a)
                lq, c = _stats(a.detach())
                log_q.append(lq)
                corr.append(c)
        energy = (hs[-1][0] * gamma).sum()
        energy.backward()
        log_g = [(h.grad[0] * h.grad[0]).sum().log() for h in hs]
        torch.stack(log_g + log_q + corr).sum().item()
    elapsed = time.perf_counter() - start
    return elapsed / depth * points / len(chosen)


def _expert_setup(width, points, seed):
    gen = torch.Generator().manual_seed(seed)
    x1, x2, gamma, v = inputs(width, gen)
    pts = grid(points)
    scale = torch.tensor([math.sqrt(w / width) for _, w, _ in pts])
    bamp = torch.tensor([math.sqrt(b) for _, _, b in pts])
    groups = []
    for name in dict.fromkeys(a for a, _, _ in pts):
        idx = [i for i, p in enumerate(pts) if p[0] == name]
        groups.append((FUNCTIONS[name], slice(idx[0], idx[-1] + 1)))
    P = len(pts)
    h0 = torch.stack([x1, x2])[:, None, :].expand(2, P, width)  # (2, P, N): rows are columns
    return gen, h0, gamma, v, scale, bamp, groups


def _phi(h, groups):
    """phi column group by column group (the point axis is the second-last)."""
    return torch.cat([f(h[..., cols, :]) for f, cols in groups], dim=-2)


def expert(width, points, depth, mode="jvp", seed=0):
    """Seconds per layer per sample: the grid batched with shared weights (see module doc)."""
    gen, h0, gamma, v, scale, bamp, groups = _expert_setup(width, points, seed)
    start = time.perf_counter()
    if mode == "jvp":
        import torch.autograd.forward_ad as fwad

        with torch.no_grad(), fwad.dual_level():
            # Input 1 carries the tangent (dual), input 2 does not: 3 GEMM columns per point.
            a1 = fwad.make_dual(h0[0].contiguous(), v.expand_as(h0[0]).contiguous())
            a2 = h0[1].contiguous()
            out = []
            for _ in range(depth):
                W = torch.randn(width, width, generator=gen)
                b = torch.randn(width, generator=gen)
                bias = bamp[:, None] * b
                h1 = (a1 @ W.T) * scale[:, None] + bias
                h2 = (a2 @ W.T) * scale[:, None] + bias
                primal, tan = fwad.unpack_dual(h1)
                lq, c = _stats(torch.stack([primal, h2]))
                out += [lq, c, (tan * tan).sum(-1).log()]
                a1, a2 = _phi(h1, groups), _phi(h2, groups)
            torch.stack(out).sum().item()
    else:
        a = h0.contiguous().requires_grad_()  # so that every h^l is in the graph
        hs, out = [], []
        for _ in range(depth):
            W = torch.randn(width, width, generator=gen)
            b = torch.randn(width, generator=gen)
            h = (a @ W.T) * scale[:, None] + bamp[:, None] * b
            h.retain_grad()
            hs.append(h)
            lq, c = _stats(h.detach())
            out += [lq, c]
            a = _phi(h, groups)
        energy = (hs[-1][0] * gamma).sum()
        energy.backward()
        out += [(h.grad[0] * h.grad[0]).sum(-1).log() for h in hs]
        torch.stack(out).sum().item()
    return (time.perf_counter() - start) / depth


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--points", type=int, default=60)
    parser.add_argument("--depth", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for mode in ("jvp", "vjp"):
        e = expert(args.width, args.points, args.depth, mode)
        print(f"expert {mode}: {e * 1e3:.3f} ms per layer per sample")
    p = plain(args.width, args.points, args.depth)
    print(f"plain (autograd): {p * 1e3:.3f} ms per layer per sample")


if __name__ == "__main__":
    main()
