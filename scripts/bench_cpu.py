"""CPU benchmark of the numba engine (issue 4). Not a test: it prints figures.

In one run, on this machine, for widths 32 ... 2048 and a realistic grid
(tanh and ReLU x 19 sigma_w2 x 9 sigma_b2 = 342 points, i.e. 1,026 GEMM
columns per layer: h1, h2 and the tangent in JVP; h1, h2 forward and the
gradient backward in VJP), per mode:

* ms per layer (one sample, all grid points), the path ``auto`` chose;
* effective GFLOP/s, counting 2 N^2 C per layer (C = 1,026 columns; VJP's
  recomputation is not counted), and its ratio to float32 matmul of the same
  shape (C, N) @ (N, N) timed in the same run, in alternation with the engine
  (``side_by_side``), the fastest of NumPy's and the engine's row-split ones
  (``vxsim.engines.gemm``, ``numba_gemm``): the practical limit;
* the normal generator's rate (``numba_normals``, all threads, 4 M normals per call,
  float64 and float32 stores) beside NumPy's ``standard_normal`` (one thread) in the
  same run;
* the speedup over the NumPy engine (timed on a few layers, per layer), and
  over the two PyTorch baselines of ``baseline_torch.py`` when torch is installed,
  each timed in a process of its own (``torch_process``: vxsim's OpenMP settings
  slowed PyTorch 2-3.5x in one process);

for VJP also the plan (every layer's phi' and Z kept, or checkpoints: see
``numba_cpu.vjp_plan``) and the time with checkpoints forced (what runs beyond
the memory budget, e.g. at depth 10,000); then the JIT time of a cold (empty
cache) and a warm run of the default config through ``vxsim sweep``, and with
``--memory`` the peak resident memory of a 10,000-layer run at width 1024
with 1,026 columns in each mode
(a subprocess each; minutes on 2 cores).

Timings are the minimum over ``--repeat`` runs: on a shared machine the
minimum is the figure least disturbed by other processes.

    python scripts/bench_cpu.py            # full table (several minutes on 2 cores)
    python scripts/bench_cpu.py --quick    # fewer layers and repeats
    python scripts/bench_cpu.py --memory   # also the 10,000-layer peak memory
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_process  # noqa: E402  (first: it keeps the environment PyTorch is timed in)

# OpenBLAS's worker threads spin for a while after each GEMM (2^28 cycles by
# default); on a machine with as many threads as cores that spinning steals
# the cores from the Numba epilogue that follows every GEMM (measured at
# width 1024: 10.3 ms instead of 6.1 ms per layer for the epilogue). OpenBLAS
# reads this when NumPy loads it, so it is set before NumPy is imported.
# Run with OPENBLAS_THREAD_TIMEOUT= (empty) to measure OpenBLAS's default.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from docs_block import recorded  # noqa: E402

from vxsim import config as config_mod  # noqa: E402
from vxsim import rng as vx_rng  # noqa: E402
from vxsim.engines import gemm, numba_cpu, numba_gemm, numba_normals, numpy_ref  # noqa: E402

WIDTHS = (32, 64, 128, 256, 512, 1024, 2048)
GRID = [
    'network.activation=["tanh", "relu"]',
    "grid.sigma_w2={start = 0.5, stop = 4.0, num = 19}",
    "grid.sigma_b2={start = 0.0, stop = 0.2, num = 9}",
]
POINTS = 2 * 19 * 9
COLUMNS = 3 * POINTS  # per layer: JVP h1, h2, t; VJP h1, h2 forward + g backward


def make_config(width, depth, mode, path="auto", extra=()):
    return config_mod.load(
        overrides=[
            f"network.width=[{width}]",
            f"network.depth={depth}",
            *GRID,
            "monte_carlo.samples=1",
            f'measure.mode="{mode}"',
            'measure.precision="float32"',
            f'engine.path="{path}"',
            *extra,
        ]
    )


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def generator_rates(repeat, count=1 << 22):
    """Millions of normals per second: vxsim's generator (numba_normals, every thread,
    into float64 and float32) and NumPy's Generator.standard_normal (float64, one
    thread), ``count`` per call, the best of ``repeat`` x 10 calls each (the least disturbed)."""
    out = {}
    for dtype in (np.float64, np.float32):
        buf = np.empty(count, dtype=dtype)
        numba_normals._call(buf, 1, 0, 1, vx_rng.STREAM_WEIGHT)  # JIT
        seconds = best(lambda b=buf: numba_normals._call(b, 1, 0, 1, 0), 10 * repeat)
        out[np.dtype(dtype).name] = count / seconds / 1e6
    gen, buf = np.random.default_rng(0), np.empty(count)
    out["numpy"] = count / best(lambda: gen.standard_normal(out=buf), 10 * repeat) / 1e6
    return out


def time_vxsim(width, mode, depth, repeat, path="auto"):
    cfg = make_config(width, depth, mode, path)
    numba_cpu.run_unit(make_config(width, 3, mode, path), width, 0)  # JIT and first touch
    per = best(lambda: numba_cpu.run_unit(cfg, width, 0), repeat) / depth
    return per, numba_cpu.choose_path(cfg, width)


def time_vjp_checkpointed(width, depth, repeat):
    """VJP with a zero memory budget: checkpoints every ceil(sqrt(L)) layers."""
    saved = numba_cpu.STORE_BYTES
    numba_cpu.STORE_BYTES = 0
    try:
        return time_vxsim(width, "vjp", depth, repeat)[0]
    finally:
        numba_cpu.STORE_BYTES = saved


def vjp_plan_text(width, depth):
    cfg = make_config(width, depth, "vjp")
    plan = numba_cpu.vjp_plan(cfg, width, POINTS, numba_cpu.choose_path(cfg, width))
    every, full, zstore = plan.every, plan.keep_all, plan.keep_weights
    if full:
        return "every layer's phi'" + (" and Z" if zstore else "") + " kept"
    return f"checkpoints every {every} layers" + (", segment's Z kept" if zstore else "")


def crossover(widths, depth, repeat):
    """ms per layer of both paths, forced, per width and mode; and the largest
    width at which the fused path is still faster (in both modes)."""
    rows, fused_wins = [], []
    for width in widths:
        row = {"width": width}
        for mode in ("jvp", "vjp"):
            for path in ("gemm", "fused"):
                row[mode, path] = time_vxsim(width, mode, depth, repeat, path)[0]
        rows.append(row)
        if all(row[m, "fused"] < row[m, "gemm"] for m in ("jvp", "vjp")):
            fused_wins.append(width)
    return rows, max(fused_wins, default=0)


def matmul_round(width, columns):
    """A function that times one round of float32 (C, N) @ (N, N) and returns seconds
    per GEMM: the fastest of NumPy's matmul (OpenBLAS's threads) and the engine's
    row-split GEMMs (one BLAS thread; blocks on Python's threads, gemm.matmul, and on
    Numba's, numba_gemm.matmul), each repeated for about 2 GFLOP."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((columns, width), dtype=np.float32)
    Z = rng.standard_normal((width, width), dtype=np.float32)
    H = np.empty((columns, width), dtype=np.float32)
    np.matmul(A, Z.T, out=H)
    n = max(3, int(2e9 / (2 * width * width * columns)))
    lanes = numba_cpu._lanes()

    def run():
        for _ in range(n):
            np.matmul(A, Z.T, out=H)

    def run_split(matmul):
        with gemm.one_blas_thread():
            for _ in range(n):
                matmul(A, Z.T, H, lanes)

    splits = [lambda m=m: run_split(m) for m in (gemm.matmul, numba_gemm.matmul)]
    return lambda: min(best(f, 1) for f in (run, *splits)) / n


def time_matmul(width, columns, repeat):
    """Seconds of float32 (C, N) @ (N, N): the best of ``repeat`` rounds (matmul_round)."""
    one_round = matmul_round(width, columns)
    return min(one_round() for _ in range(repeat))


def side_by_side(width, modes, depth, repeat):
    """Seconds per layer of the matmul reference (per GEMM of COLUMNS rows) and of
    vxsim in each mode (path auto), timed in alternation: one of each per round,
    ``repeat`` rounds, the best of each. This machine's speed drifts by 10-30 %
    over minutes; alternating makes each ratio compare times taken moments apart."""
    one_round = matmul_round(width, COLUMNS)
    cfgs = {mode: make_config(width, depth, mode) for mode in modes}
    for mode in modes:
        numba_cpu.run_unit(make_config(width, 3, mode), width, 0)  # JIT and first touch
    out = dict.fromkeys(["matmul", *modes], float("inf"))
    for _ in range(repeat):
        out["matmul"] = min(out["matmul"], one_round())
        for mode in modes:
            seconds = best(lambda c=cfgs[mode]: numba_cpu.run_unit(c, width, 0), 1)
            out[mode] = min(out[mode], seconds / depth)
    return out


def time_numpy_engine(width, mode, depth):
    cfg = make_config(width, depth, mode)
    numpy_ref.run_unit(make_config(width, 2, mode), width, 0)
    return best(lambda: numpy_ref.run_unit(cfg, width, 0), 1) / depth


def depth_for(width, quick):
    """Enough layers for ~0.5-2 s of work per timing."""
    flops = 2.0 * width * width * COLUMNS
    depth = int(np.clip(4e9 / flops, 20, 1000))
    return max(10, depth // 4) if quick else depth


def torch_rows(width, mode, quick):
    """Seconds per layer of baseline_torch's plain and expert versions, each in a process
    of its own (torch_process: not in this process's OpenMP settings)."""
    depth = 5 if quick else 10
    args, warmup = (width, POINTS, depth, mode), (width, POINTS, 2, mode)
    expert = torch_process.run("baseline_torch", "expert", args,
                               repeat=1 if quick else 2, warmup=warmup)  # fmt: skip
    sub = 2 if width >= 512 else 4
    plain = torch_process.run("baseline_torch", "plain",
                              (width, POINTS, 3 if width >= 1024 else depth, mode),
                              kwargs={"sub_points": sub})  # fmt: skip
    return plain, expert


def jit_times():
    """Wall seconds of the default config through `vxsim sweep`, cold then warm cache."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, VXSIM_CACHE_DIR=tmp, PYTHONPATH=str(ROOT))
        for label in ("cold", "warm"):
            cmd = [sys.executable, "-m", "vxsim", "sweep", "-o", f"{tmp}/out.h5", "--overwrite"]
            cmd += ["--backend", "numba", "-q"]
            t = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            out[label] = time.perf_counter() - t
            if res.returncode != 0:
                out[label] = float("nan")
                out["error"] = res.stderr.strip().splitlines()[-1:] or ["?"]
    return out


def peak_rss_mib():
    """Peak resident memory of this process in MiB: VmHWM (per address space, so
    a fresh one after exec), where ru_maxrss after fork and exec still holds the
    parent's resident size at the fork (Linux) when that was larger."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB


def memory_child(mode, depth, width):
    cfg = make_config(width, depth, mode)
    t = time.perf_counter()
    out = numba_cpu.run_unit(cfg, width, 0)
    elapsed = time.perf_counter() - t
    rss = peak_rss_mib()
    # Sound numbers: no NaN where nothing diverged, and finite gradient logs. log q may
    # read -inf there: tanh at sigma_b2 = 0 in the ordered phase underflows to its
    # fixed point q* = 0 over 10,000 layers (counted, not a failure).
    ok = out["diverged"] == 0
    grads = [out[k][ok] for k in ("log_tangent_norm", "log_grad_norm") if k in out]
    finite = not np.isnan(out["log_q"][ok]).any() and all(np.isfinite(g).all() for g in grads)
    at_zero = int(np.isneginf(out["log_q"][ok][..., -1]).sum())
    print(
        json.dumps(
            {"mode": mode, "peak_mib": rss, "seconds": elapsed, "finite": finite, "q0": at_zero}
        )
    )


def memory_rows(depth, width):
    rows = []
    for mode in ("jvp", "vjp"):
        cmd = [sys.executable, __file__, "--memory-child", mode, "--memory-depth", str(depth)]
        cmd += ["--memory-width", str(width)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            rows.append({"mode": mode, "error": res.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def machine():
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    return (
        f"{cpu}, {os.cpu_count()} cores; numpy {np.__version__}, numba {numba.__version__}, "
        f"{numba.get_num_threads()} numba threads, {numba.threading_layer()} layer"
    )


def main():
    parser = argparse.ArgumentParser(description="CPU benchmark of the numba engine")
    parser.add_argument("--quick", action="store_true", help="fewer layers and repeats")
    parser.add_argument("--memory", action="store_true", help="10,000-layer peak memory (slow)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    parser.add_argument("--no-jit", action="store_true", help="skip the cold/warm JIT timing")
    parser.add_argument("--no-crossover", action="store_true", help="skip the path crossover")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--modes", default="jvp,vjp")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--memory-depth", type=int, default=10_000)
    parser.add_argument("--memory-width", type=int, default=1024)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--docs", action="store_true", help="also write the output into docs/performance.md"
    )
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_depth, args.memory_width)
        return
    with recorded("bench_cpu", write=args.docs):
        table(args)


def table(args):
    repeat = args.repeat or (2 if args.quick else 3)
    widths = [int(w) for w in args.widths.split(",")]
    modes = args.modes.split(",")
    torch_version = None if args.no_torch else torch_process.version()
    use_torch = torch_version is not None
    numba_cpu.run_unit(make_config(32, 2, "both"), 32, 0)  # first JIT, not timed below
    print(f"# vxsim numba engine, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# {machine()}" + (f"; torch {torch_version}" if use_torch else ""))
    print(f"# OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT') or '(default)'}")
    print(
        f"# grid: {POINTS} points, {COLUMNS} GEMM columns per layer; float32; load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    rates = generator_rates(repeat)
    print(
        f"# normal generator {vx_rng.GENERATOR}: {rates['float64']:.0f} M normals/s "
        f"(float32 store: {rates['float32']:.0f} M/s) on {numba_cpu._lanes()} threads; "
        f"NumPy standard_normal {rates['numpy']:.0f} M/s (1 thread); load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    head = (
        f"{'width':>5} {'mode':>4} {'path':>5} {'ms/layer':>9} {'GFLOP/s':>8} {'matmul':>7} "
        f"{'ratio':>6} {'xNumPy':>7}"
    )
    if use_torch:
        head += f" {'xTorchPlain':>11} {'xTorchExpert':>12}"
    print(head)
    results = []
    for width in widths:
        depth = depth_for(width, args.quick)
        times = side_by_side(width, modes, depth, repeat)
        mm_gflops = 2.0 * width * width * COLUMNS / times["matmul"] / 1e9
        for mode in modes:
            per, path = times[mode], numba_cpu.choose_path(make_config(width, 3, mode), width)
            gflops = 2.0 * width * width * COLUMNS / per / 1e9
            np_depth = 2 if width >= 1024 else 4
            ref = time_numpy_engine(width, mode, np_depth)
            row = (
                f"{width:>5} {mode:>4} {path:>5} {per * 1e3:>9.3f} {gflops:>8.1f} "
                f"{mm_gflops:>7.1f} {gflops / mm_gflops:>6.2f} {ref / per:>7.1f}"
            )
            rec = dict(
                width=width,
                mode=mode,
                path=path,
                ms_per_layer=per * 1e3,
                gflops=gflops,
                matmul_gflops=mm_gflops,
                ratio=gflops / mm_gflops,
                speedup_numpy=ref / per,
            )
            if use_torch:
                plain, expert = torch_rows(width, mode, args.quick)
                row += f" {plain / per:>11.1f} {expert / per:>12.2f}"
                rec.update(speedup_torch_plain=plain / per, speedup_torch_expert=expert / per)
            if mode == "vjp":
                rec.update(
                    plan=vjp_plan_text(width, depth),
                    ms_per_layer_checkpointed=time_vjp_checkpointed(width, depth, repeat) * 1e3,
                )
            print(row, flush=True)
            results.append(rec)
    print(f"# load average {os.getloadavg()[0]:.2f} at end of the table")
    budget = numba_cpu.store_budget() / 2**20
    print(f"# vjp: memory budget {budget:.0f} MiB; per width, what the table's VJP kept, and")
    print("# the same run with checkpoints forced (as beyond the budget), ms per layer:")
    for rec in results:
        if rec["mode"] != "vjp":
            continue
        cp = rec["ms_per_layer_checkpointed"]
        line = f"#   width {rec['width']:>4}: {rec['plan']}; checkpointed {cp:.3f}"
        if "speedup_torch_expert" in rec:
            expert = rec["speedup_torch_expert"] * rec["ms_per_layer"]
            line += f" (xTorchExpert {expert / cp:.2f})"
        print(line)
    if not args.no_crossover:
        rows, cross = crossover(
            (16, 24, 32, 48, 64, 96, 128, 160, 192, 256), 50 if args.quick else 200, repeat
        )
        print("# path crossover, ms per layer (jvp gemm/fused, vjp gemm/fused):")
        for row in rows:
            print(
                f"#   width {row['width']:>4}: jvp {row['jvp', 'gemm'] * 1e3:.3f}/"
                f"{row['jvp', 'fused'] * 1e3:.3f}  vjp {row['vjp', 'gemm'] * 1e3:.3f}/"
                f"{row['vjp', 'fused'] * 1e3:.3f}"
            )
        print(
            f"# fused path faster up to width {cross}; "
            f"numba_cpu.FUSED_MAX_WIDTH = {numba_cpu.FUSED_MAX_WIDTH}"
        )
    if not args.no_jit:
        jit = jit_times()
        print(
            f"# default config via `vxsim sweep` (numba): cold cache {jit['cold']:.1f} s, "
            f"warm cache {jit['warm']:.1f} s (JIT about {jit['cold'] - jit['warm']:.1f} s)"
            + (f"  error: {jit['error']}" if "error" in jit else "")
        )
    if args.memory:
        for row in memory_rows(args.memory_depth, args.memory_width):
            if "error" in row:
                print(f"# memory {row['mode']}: failed: {row['error']}")
                continue
            print(
                f"# peak RSS, depth {args.memory_depth}, width {args.memory_width}, "
                f"{COLUMNS} columns, {row['mode']}: {row['peak_mib']:.0f} MiB "
                f"({row['seconds']:.0f} s, numbers sound: {row['finite']}; "
                f"{row.get('q0', 0)} points at q* = 0 by the last layer)"
            )


if __name__ == "__main__":
    main()
