"""Sizes and times of a sweep far beyond one machine, derived from rates measured here.

    python scripts/scale_estimate.py [--docs]   # --docs: into docs/scale.md

The sweep: 10^6 grid points (1,000 sigma_w2 x 1,000 sigma_b2, tanh) x 10^3
samples, width 1024, depth 1000, JVP and VJP, 64 log-spaced recorded layers,
over 1,000 GPUs. Every size comes from vxsim's own estimates (the file's
catalogue, ``store.space.file_bytes``; a unit's memory,
``engines.base.estimate_unit_bytes``). The CPU rate is measured in this run:
the numba engine's GEMM path on width 1024 (a few hundred grid points, a few
layers), as GEMM FLOP/s. The GPU rate (``--gpu-tflops``) defaults to what
scripts/gpu_check.py measured for the cuda engine's whole GEMM-path layer
(fill, GEMM, epilogue) at width 1024 with 4,096 points, float32, on an NVIDIA
H200 on 2026-12-04: 2 r P N^2 over 0.651 ms, 40 TFLOP/s; give another device's.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docs_block import recorded  # noqa: E402

import vxsim  # noqa: E402
from vxsim.engines import base, numba_cpu  # noqa: E402
from vxsim.store import space  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "scale.md"
N, DEPTH, SAMPLES, SIDE, GPUS = 1024, 1000, 1000, 1000, 1000
KEYS = [
    f"network.width=[{N}]",
    f"network.depth={DEPTH}",
    'network.activation=["tanh"]',
    f"grid.sigma_w2={{start = 0.5, stop = 4.0, num = {SIDE}}}",
    f"grid.sigma_b2={{start = 0.0, stop = 0.3, num = {SIDE}}}",
    f"monte_carlo.samples={SAMPLES}",
    'measure.mode="both"',
    "measure.record={log = 64}",
]


def gemm_flops(points, mode_columns):
    """FLOPs of one layer's GEMMs: 2 N^2 x columns."""
    return 2.0 * N * N * points * mode_columns


def measured_cpu_rate(points=171, depth=6):
    """GEMM FLOP/s of the numba engine's JVP at width N, measured now (best of 3)."""
    cfg = vxsim.load_config(
        overrides=[
            f"network.width=[{N}]",
            f"network.depth={depth}",
            'network.activation=["tanh"]',
            f"grid.sigma_w2={{start = 0.5, stop = 4.0, num = {points}}}",
            "grid.sigma_b2=[0.0]",
            'measure.mode="jvp"',
            'engine.path="gemm"',
        ]
    )
    numba_cpu.run_unit(cfg, N, 0)  # compile and first touch
    best = min(_timed(lambda: numba_cpu.run_unit(cfg, N, 0)) for _ in range(3))
    return gemm_flops(points, 3) * depth / best


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def human_time(s):
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def report(gpu_tflops):
    cfg = vxsim.load_config(overrides=KEYS)
    points = int(cfg.grid_shape[1] * cfg.grid_shape[2])
    units = len(cfg.widths) * cfg.samples
    # columns per layer: forward 2P + tangent P; VJP: backward P + recomputation P
    flops_unit = DEPTH * (gemm_flops(points, 3) + gemm_flops(points, 2))
    cpu = measured_cpu_rate()
    gpu = gpu_tflops * 1e12
    f64 = space.file_bytes(cfg)
    cfg32 = vxsim.load_config(overrides=KEYS + ['measure.storage="float32"'])
    f32 = space.file_bytes(cfg32)
    mem = base.estimate_unit_bytes(cfg, N)
    per_gpu = -(-units // GPUS)
    t_gpu = flops_unit / gpu
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC; CPU rate measured in this run")
    print(f"grid points                 {points:,} (x {units:,} work units = samples)")
    print(f"GEMM work per unit          {flops_unit:.3g} FLOP (JVP + VJP, {DEPTH} layers)")
    print(f"memory per unit             {space.human(mem)} (numba estimate; the GPU's is alike)")
    print(f"CPU rate (measured)         {cpu / 1e9:.0f} GFLOP/s GEMM on this machine's cores")
    print(f"GPU rate (--gpu-tflops)     {gpu_tflops:.0f} TFLOP/s float32 (H200: 40, measured)")
    print(
        f"time per unit               CPU {human_time(flops_unit / cpu)}, GPU {human_time(t_gpu)}"
    )
    print(f"units per GPU               {per_gpu} ({GPUS} GPUs, one shard each)")
    print(f"wall time                   {human_time(per_gpu * t_gpu)} + queue and merge")
    print(f"file, float64 records       {space.human(f64)} ({space.human(f64 / GPUS)} per shard)")
    print(f"file, float32 records       {space.human(f32)} ({space.human(f32 / GPUS)} per shard)")
    every = vxsim.load_config(overrides=KEYS[:-1] + ["measure.record={every = 1}"])
    print(f"every layer recorded        {space.human(space.file_bytes(every))} (float64)")
    print(f"1 % of nodes failing        {GPUS // 100} shards rerun from their last finished")
    print(f"                            unit: + {human_time(t_gpu)} wall time, nothing lost")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-tflops", type=float, default=40.0)
    parser.add_argument("--docs", action="store_true", help="write into docs/scale.md")
    args = parser.parse_args()
    with recorded("scale", write=args.docs, doc=DOC):
        report(args.gpu_tflops)


if __name__ == "__main__":
    main()
