"""vxsim: where very deep random networks stop passing gradients.

>>> import vxsim
>>> cfg = vxsim.load_config(overrides=["network.depth=100"])
>>> path = vxsim.run_sweep(cfg, "out.h5")
>>> ds = vxsim.open_results(path)          # an xarray Dataset
"""

import os

# OpenBLAS's workers spin for a long while after each GEMM and take the cores
# from the Numba epilogue that follows (width 1024, 2 cores: 0.52 -> 0.69 of
# matmul throughput with a short timeout). OpenBLAS reads this only when NumPy
# loads it, so it is set here, before anything imports NumPy; a value the user
# set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"

from .config import load as load_config  # noqa: E402
from .errors import ConfigError, VxsimError  # noqa: E402

__all__ = [
    "ConfigError",
    "VxsimError",
    "__version__",
    "load_config",
    "materialise",
    "merge",
    "open_results",
    "run_sweep",
]


def run_sweep(config, output, **kwargs):
    """Run a sweep (a Config, a TOML path, or None for the default) into ``output``."""
    from .sweep import run_sweep as _run

    return _run(config, output, **kwargs)


def merge(parts, output, overwrite=False, virtual=False):
    """Merge the shard files ``parts`` of one sweep into ``output`` (as a single run writes it).

    ``virtual``: HDF5 virtual datasets over the parts instead of a copy (see ``vxsim.virtual``).
    """
    if virtual:
        from .virtual import merge_virtual as _merge
    else:
        from .merging import merge as _merge

    return _merge(parts, output, overwrite=overwrite)


def materialise(path, output, overwrite=False):
    """Turn the virtual merged file ``path`` into the plain file ``output`` (a copying merge's)."""
    from .virtual import materialise as _materialise

    return _materialise(path, output, overwrite=overwrite)


def open_results(path, group=None):
    """An xarray Dataset of a results file (needs xarray and h5netcdf)."""
    from .store.hdf5 import open_results as _open

    return _open(path, group=group)
