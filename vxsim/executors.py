"""Executors say *how* a sweep's work units are computed; the sweep writes what they yield.

``start(name, scheduler)`` is a context manager giving ``compute(engine, config, units)``,
an iterator of ``(unit, arrays)`` over the given units ``(width_index, width, sample)``,
each yielded as soon as it is finished, in any order. The one HDF5 writer stays
with the caller, in this process.

* ``serial``: the units one after another in this process.
* ``dask``: one Dask task per unit, on the scheduler at ``scheduler`` (its
  workers need vxsim installed) or on a cluster of this machine started for the
  sweep: one worker per GPU, pinned with ``CUDA_VISIBLE_DEVICES``, for the cuda
  engine; otherwise a single one-thread worker whose engine uses every core
  itself (the numba kernels and BLAS are multithreaded), so that workers x
  threads never oversubscribe the cores.
"""

import contextlib
import logging
import os

from . import engines, progress, rng
from .errors import VxsimError

EXECUTORS = ("serial", "dask")

# Thread counts of the numerical libraries, which Dask's nanny sets to 1 in its workers.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def start(name="serial", scheduler=None):
    """The ``compute`` function of an executor; checks it can run before anything is written."""
    if name not in EXECUTORS:
        raise VxsimError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
    if name == "serial":
        if scheduler:
            raise VxsimError("--scheduler needs --executor dask")
        yield serial
    else:
        with _dask(scheduler) as compute:
            yield compute


def serial(engine, config, units):
    """Each unit in turn, in this process."""
    for unit in units:
        progress.starting(f"width {unit[1]}, sample {unit[2]}")
        yield unit, engines.run(engine, config, unit[1], unit[2])


def run_unit(engine_name, config, unit):
    """One work unit where a Dask worker runs it; the engine is looked up there by
    name. Returns what decides the worker's numbers too: (``engines.numerics``, the
    normal generator ``rng.GENERATOR``)."""
    engine = engines.get(engine_name)
    here = (engines.numerics(engine), rng.GENERATOR)
    return unit, engines.run(engine, config, unit[1], unit[2]), here


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise VxsimError(
            "the dask executor needs dask and distributed: pip install 'vxsim[dask]'"
        ) from None
    return distributed


@contextlib.contextmanager
def _dask(scheduler):
    """Connect to ``scheduler`` now (or start a local cluster at the first units); close after."""
    distributed = _import_distributed()
    quiet = logging.getLogger("distributed")  # its INFO chatter would reach the sweep's log
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    client = cluster = None

    def compute(engine, config, units):
        nonlocal client, cluster
        if not units:
            return
        if client is None:
            cluster = local_cluster(engine.NAME)
            client = distributed.Client(cluster)
        from . import engines

        here = (engines.numerics(engine), rng.GENERATOR)
        futures = [client.submit(run_unit, engine.NAME, config, u, pure=False) for u in units]
        results = distributed.as_completed(futures, with_results=True)
        del futures  # each result is dropped from the cluster once it is yielded
        try:
            for _, (unit, arrays, (numerics, generator)) in results:
                if generator != here[1]:
                    raise VxsimError(
                        f"a Dask worker drew its weights with the generator {generator}, "
                        f"this process with {here[1]} (other numbers): install the same vxsim "
                        "on the workers (finished units are kept: --resume continues)"
                    )
                if numerics != here[0]:
                    raise VxsimError(
                        f"a Dask worker computed with {numerics}, this process with {here[0]}: "
                        "their numbers would differ in the last bits; use workers on machines "
                        "like this one (finished units are kept: --resume continues)"
                    )
                yield unit, arrays
        except distributed.KilledWorker as err:
            raise VxsimError(
                f"Dask workers died running a work unit ({err}); finished units are kept: "
                "--resume continues"
            ) from None

    try:
        client = _connect(distributed, scheduler) if scheduler else None
        yield compute
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        quiet.setLevel(level)


def _connect(distributed, address):
    """A Client of the scheduler at ``address``, or a one-line error if it cannot be reached.

    How long to try is Dask's ``distributed.comm.timeouts.connect`` (30 s by default;
    environment: DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT).
    """
    try:
        return distributed.Client(address)
    except (OSError, TimeoutError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VxsimError(f"cannot reach the Dask scheduler at {address}: {reason}") from None


def visible_gpus():
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES' entries, else all CuPy sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() not in ("", "-1")]
    try:
        import cupy

        return [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]
    except Exception:
        return []


def worker_environments(engine_name):
    """One dict of environment variables per local worker to start.

    cuda: one worker per visible GPU with ``CUDA_VISIBLE_DEVICES`` set to it;
    otherwise one worker.
    """
    gpus = visible_gpus() if engine_name == "cuda" else []
    if engine_name == "cuda" and not gpus:
        raise VxsimError("the cuda engine sees no GPU to start Dask workers on")
    return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus] or [{}]


def local_cluster(engine_name):
    """A Dask cluster of this machine for one sweep (see the module's docstring)."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    envs = worker_environments(engine_name)
    options = {
        "host": "127.0.0.1",
        "nthreads": 1,
        "memory_limit": 1.0 / len(envs),  # a share of this machine's memory each
        "silence_logs": logging.ERROR,
    }
    workers = {i: {"cls": Nanny, "options": {**options, "env": env}} for i, env in enumerate(envs)}
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"},
    }
    # Dask's nanny would pin these to 1 in its workers (and in this process); a
    # value set here is kept, else each worker gets its share of the cores.
    threads = str(max(1, _cores() // len(envs)))
    spawn_env = "distributed.nanny.pre-spawn-environ"
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    try:
        with dask.config.set({f"{spawn_env}.{name}": threads for name in _THREAD_VARIABLES}):
            return SpecCluster(
                scheduler=scheduler, workers=workers, silence_logs=logging.ERROR, name="vxsim"
            )
    finally:
        for name, value in saved.items():  # the nanny sets them here too: undo that
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
