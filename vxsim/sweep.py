"""Run a sweep: work units through an engine into one resumable HDF5 file.

A work unit is one (width, Monte Carlo sample): every grid point of it runs
at once on the engine (common random numbers). Units finished on disk are
never computed again; a killed sweep continues with ``resume=True``. With
``shard=(i, n)`` only shard i of n runs (see ``shards``; ``vxsim merge`` joins them).
"""

import logging
import os
import platform

import numpy as np

from . import engines, executors, interrupt
from . import progress as progress_mod
from .analysis import growth, report
from .config import Config, load
from .engines import base, workspace
from .errors import VxsimError
from .shards import parse_shard, shard_units, work_units
from .store import hdf5, shardfile, space

log = logging.getLogger("vxsim")


def available_memory():
    """Bytes of memory available to this process (Linux MemAvailable, else physical)."""
    have = base.mem_available()
    if have is not None:
        return have
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, limit=None):
    """Refuse a run whose largest work unit would not fit in memory."""
    need = max(base.estimate_unit_bytes(config, w) for w in config.widths)
    have = available_memory() if limit is None else limit
    if have is not None and need > 0.8 * have:
        raise VxsimError(
            f"a work unit needs about {need / 2**30:.1f} GiB of memory but only "
            f"{have / 2**30:.1f} GiB is available; lower network.width, the grid "
            f"or (in vjp mode) set engine.checkpoint"
        )
    return need


def device_name(backend):
    if backend == "cuda":
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        except Exception:  # pragma: no cover - GPU only
            return "cuda"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.machine()} x {os.cpu_count()}"


def plan(config, output, backend=None, shard=None):
    """What a sweep would do, computing and writing nothing (``vxsim sweep --dry-run``):
    the engine, the work units, the memory of a unit per width, the file's size and
    the free space beside it."""
    if not isinstance(config, Config):
        config = load(config)
    units = work_units(config) if shard is None else shard_units(config, *parse_shard(shard))
    engine = engines.get(backend or config.backend, config.architecture)
    return {
        "backend": engine.NAME,
        "work_units": len(units),
        "units": [{"width": w, "sample": s} for _, w, s in units],
        "grid_points": int(np.prod(config.grid_shape)),
        "depth": config.depth,
        "unit_memory_bytes": {str(w): base.estimate_unit_bytes(config, w) for w in config.widths},
        "file_bytes": space.file_bytes(config),
        "free_bytes": space.free_bytes(output),
        "output": os.path.abspath(output),
    }


def prepare(config, output, backend=None, resume=False, overwrite=False, shard=None):
    """Validate everything before the first unit; returns (config, engine module).

    ``shard``: (index, count) to create or resume that shard of the sweep.
    """
    if not isinstance(config, Config):
        config = load(config)
    extra = None
    if shard is not None:
        extra = shardfile.content(config, *shard, shard_units(config, *shard))
    check_memory(config)
    engine = engines.get(backend or config.backend, config.architecture)
    if config.precision == "tf32" and engine.NAME != "cuda":
        raise VxsimError(
            f'measure.precision = "tf32" runs only on the cuda backend (GPU tensor cores); '
            f"this run would use {engine.NAME!r}"
        )
    getattr(engine, "check_config", lambda config: None)(config)  # engine-specific limits
    exists = os.path.exists(output)
    if exists and not (resume or overwrite):
        raise VxsimError(
            f"{output} exists; pass --resume to continue it or --overwrite to replace it"
        )
    if resume and exists:
        hdf5.check_resumable(output, config, engines.numerics(engine))
        shardfile.check_resumable(output, shard)
        with hdf5.open_reader(output) as f:
            fraction = float(f["completed"][...].mean())
        space.check(output, config, fraction)
    else:
        space.check(output, config)
        if exists:
            hdf5.refuse_if_written(output)
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise VxsimError(f"output directory {parent} does not exist")
        hdf5.create(
            output,
            config,
            engine.NAME,
            device_name(engine.NAME),
            extra=extra,
            numerics=engines.numerics(engine),
        )
    return config, engine


def run_sweep(
    config=None,
    output="vxsim.h5",
    backend=None,
    resume=False,
    overwrite=False,
    progress=None,
    shard=None,
    executor="serial",
    scheduler=None,
):
    """Run (or finish) a sweep into ``output``; returns the path.

    ``config``: a Config, a TOML path or None (the embedded default).
    ``progress``: a ``progress.Reporter`` (units, and steps inside each unit), or a
    callable(done, total) called after each unit.
    ``shard``: (i, n), "i/n" or "auto/n": compute only shard i (1-based) of n
    into a shard file (status 'shard-complete' when done; ``vxsim.merge`` joins them).
    ``executor``: 'serial' (this process) or 'dask' (Dask tasks on the scheduler at
    ``scheduler``, else on a cluster of this machine); see ``vxsim.executors``.
    """
    if shard is not None:
        shard = parse_shard(shard)
    reporter = progress if isinstance(progress, progress_mod.Reporter) else None
    with interrupt.stoppable(), progress_mod.listening(reporter):
        with executors.start(executor, scheduler) as compute:
            with interrupt.critical():
                config, engine = prepare(config, output, backend, resume, overwrite, shard)
            try:
                _run_units(config, engine, output, compute, progress, shard)
            finally:
                workspace.release()  # the buffers the engine kept between units
        with interrupt.critical():
            if shard is not None:
                shardfile.seal(output, config)
            else:
                finish(output, config)
    return output


def _run_units(config, engine, output, compute, progress, shard=None):
    """Compute the units not yet on disk and write each as it arrives (in any order)."""
    units = work_units(config)
    if shard is not None:  # the units the file says it owns
        owned = shardfile.read(output)["mask"]
        units = [u for u in units if owned[u[0], u[2]]]
    with hdf5.Writer(output) as writer:
        done = writer.completed()
        todo = [u for u in units if not done[u[0], u[2]]]
        finished = len(units) - len(todo)
        tell = progress.units if isinstance(progress, progress_mod.Reporter) else progress
        if tell:
            tell(finished, len(units))
        for (wi, width, sample), arrays in compute(engine, config, todo):
            with interrupt.critical():
                writer.write_unit(wi, sample, arrays)
            finished += 1
            log.info("unit width=%d sample=%d done (%d/%d)", width, sample, finished, len(units))
            if tell:
                tell(finished, len(units))


def finish(output, config):
    """Summarise a file whose units are all complete: growth rates, compressed layout."""
    data, coords, attrs = hdf5.read_unit_variables(output)
    if attrs.get("status") == "complete":
        return
    if not data["completed"].all():
        raise VxsimError(f"{output} has unfinished work units")
    summary = growth.summarise(data, coords, config)
    hdf5.finalize(output, config, summary, report.analyse(data, coords, config, summary))
