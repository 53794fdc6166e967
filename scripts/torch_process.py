"""The PyTorch baselines in a Python process of their own, in the benchmark's starting environment.

Importing vxsim's numba engine sets ``OMP_WAIT_POLICY=PASSIVE`` for its own
OpenMP threads (``numba_cpu``), and ``bench_cpu`` sets ``OPENBLAS_THREAD_TIMEOUT``.
In one process these reach PyTorch's OpenMP runtime too: its threads then sleep
between operations, and the expert baselines ran 2-3.5x slower at widths 64-256
(2026-12-04, 2 cores, ``baseline_torch.expert`` JVP at width 256: 2.0 ms a layer in a
clean process, 4.7 with ``OMP_WAIT_POLICY=PASSIVE``), which flattered vxsim's
speed-ups in the earlier rounds' tables. So the benchmarks time PyTorch through
``run``: a fresh Python, with the environment captured when this module was first
imported (import it before anything sets a variable), that imports torch before
anything else. Not a test.
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

START_ENV = dict(os.environ)
HERE = Path(__file__).resolve().parent


def version():
    """PyTorch's version, or None where it is not installed (torch is not imported here)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def run(module, function, args, kwargs=None, repeat=1, warmup=None, threads=None):
    """The least of ``repeat`` calls of ``module.function(*args, **kwargs)`` (each returns
    seconds), after one call with ``warmup`` arguments if given, in a fresh process:
    torch imported first (on ``threads`` threads if given), then ``module`` from this
    folder."""
    code = "\n".join(
        [
            "import json, sys",
            f"sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]",
            "import torch",
            f"torch.set_num_threads({threads})" if threads else "",
            f"import {module} as m",
            f"f = m.{function}",
            f"f(*{tuple(warmup)!r}, **{kwargs or {}!r})" if warmup is not None else "",
            f"print(json.dumps(min(f(*{tuple(args)!r}, **{kwargs or {}!r}) "
            f"for _ in range({repeat}))))",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=START_ENV, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module}.{function}{tuple(args)}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
