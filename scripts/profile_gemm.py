"""Profile of the numba engine's GEMM path (large widths), all threads. Not a test.

Per width and mode, on the benchmark's grid (``bench_cpu``: tanh and ReLU, 342
points, 1,026 GEMM columns per layer, float32), where a layer's time goes,
in ms per layer (each the best of ``--repeat`` units, timed side by side in
one run):

* ``layer``: a whole unit on the GEMM path, divided by its depth;
* ``gemm``: the engine's own GEMMs inside that unit (``numba_gemm.matmul``:
  rows split over the lanes, one BLAS thread each; VJP: a forward GEMM of 2P rows
  and a backward one of P rows);
* ``epi+draw``: the parallel call after each GEMM (every point's epilogue, then
  each lane's share of the next Z^l); ``draw``: the generator alone drawing
  one Z^l (N^2 normals into float32, all threads) and ``epi`` the difference;
* ``host``: the rest (Python between the calls);
* ``matmul``: the benchmark's reference (``bench_cpu.time_matmul``: float32
  (C, N) @ (N, N), the fastest of NumPy's threads and the two splits);
* ``ratio``: matmul / layer, as bench_cpu prints it; ``if free``: the ratio if
  the epilogue and the draw cost nothing (the engine's GEMMs and host time
  alone), an upper bound for this engine on this machine.

    PYTHONPATH=. python scripts/profile_gemm.py --widths 512,1024
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu import COLUMNS, POINTS, best, make_config, time_matmul  # noqa: E402

from vxsim import rng  # noqa: E402
from vxsim.engines import gemm, numba_cpu, numba_normals, workspace  # noqa: E402


class _TimedUnit(numba_cpu._Unit):
    """A unit that adds up the time of its GEMMs and of its kernel calls."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = {"gemm": 0.0, "call": 0.0}

    def _matmul(self, a, b, out):
        t = time.perf_counter()
        super()._matmul(a, b, out)
        self.seconds["gemm"] += time.perf_counter() - t

    def _call(self, *args):
        t = time.perf_counter()
        super()._call(*args)
        self.seconds["call"] += time.perf_counter() - t


def unit_seconds(width, mode, depth):
    """(whole, gemm, call) seconds of one unit on the GEMM path (in a borrowed workspace,
    as ``numba_cpu.run_unit`` runs it)."""
    with gemm.one_blas_thread(), workspace.borrowed() as ws:
        unit = _TimedUnit(make_config(width, depth, mode, path="gemm"), width, 0, ws=ws)
        t = time.perf_counter()
        unit.forward()
        if unit.vjp:
            unit.backward()
        whole = time.perf_counter() - t
    return whole, unit.seconds["gemm"], unit.seconds["call"]


def draw_seconds(width, repeat):
    """One Z^l (width^2 normals into float32) by the parallel generator."""
    out = np.empty(width * width, dtype=np.float32)
    numba_normals._call(out, 1, 0, 1, rng.STREAM_WEIGHT)
    return best(lambda: numba_normals._call(out, 1, 0, 1, rng.STREAM_WEIGHT), 10 * repeat)


def profile(width, mode, depth, repeat):
    unit_seconds(width, mode, 3)  # JIT and first touch
    whole, mm, call = min(unit_seconds(width, mode, depth) for _ in range(repeat))
    draw = draw_seconds(width, repeat)
    ref = time_matmul(width, COLUMNS, repeat)
    per = {k: v / depth for k, v in dict(layer=whole, gemm=mm, call=call).items()}
    per["host"] = per["layer"] - per["gemm"] - per["call"]
    return per, draw, ref


def main():
    parser = argparse.ArgumentParser(description="GEMM-path profile of the numba engine")
    parser.add_argument("--widths", default="256,512,1024,2048")
    parser.add_argument("--modes", default="jvp,vjp")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}; load average {os.getloadavg()[0]:.2f}; "
        f"{POINTS} points, {COLUMNS} GEMM columns; float32; "
        f"{numba_cpu._lanes()} threads; ms per layer"
    )
    print(
        f"{'width':>5} {'mode':>4} {'layer':>7} {'gemm':>7} {'epi+draw':>8} {'draw':>6} "
        f"{'epi':>6} {'host':>5} {'matmul':>7} {'ratio':>5} {'if free':>7}"
    )
    for width in (int(w) for w in args.widths.split(",")):
        depth = int(np.clip(4e9 / (2.0 * width * width * COLUMNS), 10, 200))
        for mode in args.modes.split(","):
            per, draw, ref = profile(width, mode, depth, args.repeat)
            ms = {k: v * 1e3 for k, v in per.items()}
            free = ref / (per["gemm"] + per["host"])
            print(
                f"{width:>5} {mode:>4} {ms['layer']:>7.2f} {ms['gemm']:>7.2f} "
                f"{ms['call']:>8.2f} {draw * 1e3:>6.2f} {ms['call'] - draw * 1e3:>6.2f} "
                f"{ms['host']:>5.2f} {ref * 1e3:>7.2f} {ref / per['layer']:>5.2f} {free:>7.2f}",
                flush=True,
            )
    print(f"# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
