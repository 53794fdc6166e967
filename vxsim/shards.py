"""Which work units a shard owns: a deterministic split of a sweep balanced by cost.

``vxsim sweep CONFIG --shard I/N`` computes shard I (1-based) of N. Every
process that computes the split from the same config gets the same answer,
so N independent jobs (a Slurm array, several machines) together compute each
work unit exactly once; ``vxsim merge`` puts their files back together.
"""

import os
import re

from .errors import VxsimError

ARRAY_TASK_VARIABLE = "SLURM_ARRAY_TASK_ID"


def unit_cost(config, width):
    """Relative cost of one work unit of ``width``: N^2 * L * P.

    One GEMM of an N x N weight matrix with N x P columns per layer dominates
    (P = grid points of the unit, the same for every unit of a config), so the
    cost grows with the square of the width and linearly with depth and grid.
    An exact integer, so the split never depends on rounding.
    """
    points = len(config.activations) * len(config.sigma_w2) * len(config.sigma_b2)
    return int(width) ** 2 * int(config.depth) * points


def work_units(config):
    """[(width_index, width, sample)] of the whole sweep, in the order they run."""
    return [(i, w, s) for i, w in enumerate(config.widths) for s in range(config.samples)]


def assign(costs, count):
    """Longest processing time first: [shard (0-based) of each job], loads as equal as it gets.

    Jobs in order of decreasing cost (ties: in their given order) each go to the
    shard with the smallest load so far (ties: the lowest shard). The largest
    load is at most 4/3 - 1/(3 count) times the best possible (Graham 1969);
    equal costs go round-robin, so counts differ by at most one.
    """
    order = sorted(range(len(costs)), key=lambda j: (-costs[j], j))
    loads = [0] * count
    owner = [0] * len(costs)
    for j in order:
        k = min(range(count), key=lambda s: (loads[s], s))
        owner[j] = k
        loads[k] += costs[j]
    return owner


def shard_units(config, index, count):
    """[(width_index, width, sample)] owned by shard ``index`` (1-based) of ``count``, in run order.

    Balanced by ``unit_cost`` (not only by number of units); a function of the
    config's widths, depth, grid and samples alone. ``count`` may not exceed the
    number of work units, so that no shard is empty.
    """
    check_shard(index, count)
    units = work_units(config)
    if count > len(units):
        raise VxsimError(
            f"--shard {index}/{count}: the sweep has only {len(units)} work units "
            f"({len(config.widths)} widths x {config.samples} samples); use at most "
            f"{len(units)} shards"
        )
    owner = assign([unit_cost(config, w) for _, w, _ in units], count)
    return [u for u, k in zip(units, owner, strict=True) if k == index - 1]


def shard_loads(config, count):
    """Total ``unit_cost`` of each of the ``count`` shards (for reports and job sizing)."""
    return [
        sum(unit_cost(config, w) for _, w, _ in shard_units(config, i, count))
        for i in range(1, count + 1)
    ]


def check_shard(index, count):
    for value in (index, count):
        if isinstance(value, bool) or not isinstance(value, int):
            raise VxsimError(f"--shard expects whole numbers I/N, got {index!r}/{count!r}")
    if count < 1:
        raise VxsimError(f"--shard {index}/{count}: the number of shards N must be >= 1")
    if not 1 <= index <= count:
        raise VxsimError(f"--shard {index}/{count}: the shard index must be in 1..{count}")


def parse_shard(value, environ=None):
    """(index, count) from "I/N", "auto/N" or a pair; index is 1-based.

    "auto/N" takes I from $SLURM_ARRAY_TASK_ID, so that one line serves every
    task of a Slurm job array submitted with ``--array=1-N``.
    """
    if isinstance(value, tuple | list) and len(value) == 2:
        index, count = value
        check_shard(index, count)
        return int(index), int(count)
    match = re.fullmatch(r"\s*(\d+|auto)\s*/\s*(\d+)\s*", str(value))
    if not match:
        raise VxsimError(f"--shard expects I/N (e.g. 2/3, 1-based) or auto/N, got {value!r}")
    count = int(match.group(2))
    if match.group(1) != "auto":
        index = int(match.group(1))
    else:
        env = os.environ if environ is None else environ
        task = env.get(ARRAY_TASK_VARIABLE)
        if task is None:
            raise VxsimError(
                f"--shard auto/{count} takes the shard index from ${ARRAY_TASK_VARIABLE}, "
                f"which is not set (not in a Slurm job array); give it: --shard I/{count}"
            )
        if not task.strip().isdigit() or not 1 <= int(task) <= count:
            raise VxsimError(
                f"--shard auto/{count}: ${ARRAY_TASK_VARIABLE}={task} is not in 1..{count}; "
                f"submit the job array as --array=1-{count}"
            )
        index = int(task)
    check_shard(index, count)
    return index, count
