"""The numba engine's MLP on 1 .. many threads: ms per layer per thread count. Not a test.

On the benchmark's grid (``bench_cpu``: tanh and ReLU, 342 points, float32,
path auto: fused up to numba_cpu.FUSED_MAX_WIDTH), per width, mode and Numba
thread count, the best of ``--repeat`` units, the thread counts timed in
alternation (one unit of each per round). ``--tree`` runs another source tree's
vxsim (an old commit's checkout), to compare two commits on one machine, as for
the shared draws of the fused path (docs/performance.md, fifth round):

    python scripts/bench_lanes.py --widths 64,128,192 --threads 2,16
    python scripts/bench_lanes.py --tree ../old-checkout --threads 2,16
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numba  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def commit(tree):
    """The source tree's git commit (with '+' if it has changes), or '?'."""
    try:
        run = dict(cwd=tree, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
        return (head or "?") + ("+" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def per_layer(width, mode, threads, repeat):
    """{threads: ms per layer}, the best of ``repeat`` rounds."""
    from bench_cpu import depth_for, make_config

    from vxsim.engines import numba_cpu

    depth = depth_for(width, False)
    cfg = make_config(width, depth, mode)
    out = dict.fromkeys(threads, float("inf"))
    for t in threads:  # JIT and first touch, per thread count
        numba.set_num_threads(t)
        numba_cpu.run_unit(make_config(width, 3, mode), width, 0)
    for _ in range(repeat):
        for t in threads:
            numba.set_num_threads(t)
            start = time.perf_counter()
            numba_cpu.run_unit(cfg, width, 0)
            out[t] = min(out[t], (time.perf_counter() - start) / depth * 1e3)
    return out


def main():
    parser = argparse.ArgumentParser(description="numba MLP engine, ms per layer per thread count")
    parser.add_argument("--widths", default="64,128,192")
    parser.add_argument("--modes", default="jvp,vjp")
    parser.add_argument("--threads", default=f"1,{numba.config.NUMBA_NUM_THREADS}")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--tree", default=str(ROOT), help="the source tree to run")
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    sys.path[:0] = [str(tree), str(ROOT / "scripts")]  # its vxsim; this tree's bench_cpu
    from bench_cpu import machine, make_config

    from vxsim.engines import numba_cpu

    threads = [int(t) for t in args.threads.split(",")]
    if max(threads) > numba.config.NUMBA_NUM_THREADS:
        parser.error(f"at most {numba.config.NUMBA_NUM_THREADS} threads on this machine")
    cpu = machine().split(",")[0]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {cpu}, {os.cpu_count()} CPUs")
    print(f"# {tree.name} at {commit(tree)}; load average {os.getloadavg()[0]:.2f}")
    print("# ms per layer (342 points, float32, path auto)")
    print(f"{'width':>5} {'mode':>4} {'path':>5} " + " ".join(f"{t:>4} thr" for t in threads))
    for width in (int(w) for w in args.widths.split(",")):
        for mode in args.modes.split(","):
            ms = per_layer(width, mode, threads, args.repeat)
            path = numba_cpu.choose_path(make_config(width, 3, mode), width)
            print(
                f"{width:>5} {mode:>4} {path:>5} " + " ".join(f"{ms[t]:>8.4f}" for t in threads),
                flush=True,
            )


if __name__ == "__main__":
    main()
