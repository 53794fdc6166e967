"""The engine's row-split GEMM on Python's threads against Numba's. Not a test.

The numba engine multiplies every GEMM with BLAS on one thread, its rows split
at verified cuts (``vxsim.engines.gemm``), each block on a thread: on Numba's
threads, one region per GEMM (``numba_gemm``), where NumPy's BLAS allows it,
else on a ``concurrent.futures`` pool of Python threads (``gemm.matmul``). Per
width and thread count this times, in alternation (one of each per round, the
best of ``--repeat`` rounds), the GEMM path's two forms of the benchmark's 1,026
columns (``A @ Z.T`` forward, ``G @ Z`` backward, float32):

* ``blas``: np.matmul with OpenBLAS on that many threads (not bit-reproducible);
* ``python``: gemm.matmul, the Python-thread split;
* ``numba``: numba_gemm.matmul, the Numba-thread split;

and prints milliseconds, each split's speed relative to ``blas``, and whether the
two splits gave the same bits. On 16 cores the Python split reached about one
core's throughput at width 256 (docs/performance.md, fifth round).

    python scripts/bench_gemm_split.py
    python scripts/bench_gemm_split.py --widths 256,1024 --threads 2,8,16
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the engine runs (numba_cpu)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vxsim.engines import gemm, numba_gemm  # noqa: E402

COLUMNS = 1026  # bench_cpu's grid: 342 points x 3 columns


def timed(fn, calls):
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def one_width(width, threads, repeat):
    """{form: {way: seconds}} and whether the splits' bits agree, for one width."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((COLUMNS, width), dtype=np.float32)
    z = rng.standard_normal((width, width), dtype=np.float32)
    calls = max(3, int(1e9 / (2 * width * width * COLUMNS)))
    out = {}
    same = True
    for form, b in (("A @ Z.T", z.T), ("G @ Z", z)):
        got = {w: np.empty((COLUMNS, width), np.float32) for w in ("blas", "python", "numba")}
        ways = {
            "blas": lambda b=b, o=got["blas"]: np.matmul(a, b, out=o),
            "python": lambda b=b, o=got["python"]: gemm.matmul(a, b, o, threads),
            "numba": lambda b=b, o=got["numba"]: numba_gemm.matmul(a, b, o, threads),
        }
        best = dict.fromkeys(ways, np.inf)
        for _ in range(repeat):
            with gemm.blas_threads(threads):
                best["blas"] = min(best["blas"], timed(ways["blas"], calls))
            with gemm.one_blas_thread():
                for way in ("python", "numba"):
                    ways[way]()  # cuts verified, kernels loaded
                    best[way] = min(best[way], timed(ways[way], calls))
        same &= np.array_equal(got["python"], got["numba"])
        out[form] = best
    return out, same


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="128,256,512,1024,2048")
    parser.add_argument("--threads", default=str(numba.config.NUMBA_NUM_THREADS),
                        help="comma-separated counts, at most NUMBA_NUM_THREADS")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    counts = [int(t) for t in args.threads.split(",")]
    taken = sorted(str(d) for d in numba_gemm.available()) or "none (gemm.matmul everywhere)"
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs; {COLUMNS} rows; "
          f"Numba-thread split for {taken}; BLAS {gemm.signature()}")  # fmt: skip
    print("# ms per GEMM, best of rounds; python/numba: np.matmul's time over the split's")
    print(f"{'threads':>7} {'width':>5} {'form':>8} {'blas':>8} {'python':>8} {'numba':>8} "
          f"{'python':>7} {'numba':>7}  same bits")  # fmt: skip
    for threads in counts:
        numba.set_num_threads(threads)
        for width in widths:
            times, same = one_width(width, threads, args.repeat)
            for form, t in times.items():
                ms = " ".join(f"{t[way] * 1e3:8.3f}" for way in ("blas", "python", "numba"))
                ratios = " ".join(f"{t['blas'] / t[way]:7.2f}" for way in ("python", "numba"))
                print(f"{threads:>7} {width:>5} {form:>8} {ms} {ratios}  {same}")


if __name__ == "__main__":
    main()
