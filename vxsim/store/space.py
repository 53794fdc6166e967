"""Disk space: estimate a results file before creating it, and one line when a disk fills.

The running file holds every stored variable uncompressed, chunked one work
unit at a time and allocated as units are written, so it grows to

    bytes = sum over stored variables of (product of its dims) x itemsize

plus the coordinates and HDF5 metadata (``OVERHEAD``). Finishing rewrites it
compressed under a temporary name beside it, so up to the same size again is
needed for a moment. ``check(path, config, done)`` refuses a run whose
remaining writes cannot fit in the free space of the output's file system
(``MARGIN`` kept free), before anything is written; ``writing(path, what)``
turns a full disk, a quota, a file-size limit or an I/O error in the middle of
a run into one ``VxsimError`` line. Every unit finished before is intact:
``--resume`` after freeing space continues the file.
"""

import contextlib
import errno
import os
import shutil

import numpy as np

from .. import variables
from ..errors import VxsimError

OVERHEAD = 1 << 20  # coordinates, attributes, HDF5 metadata (bytes, generous)
MARGIN = 0.05  # of the file system's free space left untouched
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than this file system allows",
    errno.EIO: "an I/O error occurred",
}
_MESSAGES = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "File too large": errno.EFBIG,
    "Input/output error": errno.EIO,
}


def file_bytes(config):
    """Bytes of the running results file of ``config`` (uncompressed, every unit written)."""
    sizes = {d: len(v) for d, v in _dim_sizes(config).items()}
    total = OVERHEAD
    for name, dims in variables.stored_variables(config).items():
        dtype = storage_dtype(config, variables.CATALOGUE[name])
        total += int(np.prod([sizes[d] for d in dims])) * dtype.itemsize
    return total


def storage_dtype(config, variable):
    """The on-disk dtype of a variable: per-layer float records follow measure.storage."""
    storage = getattr(config, "storage", "float64")
    if variable.per_layer and np.dtype(variable.dtype).kind == "f":
        return np.dtype(storage)
    return np.dtype(variable.dtype)


def _dim_sizes(config):
    from .schema import coordinates  # schema imports this module

    return coordinates(config)


def human(n):
    """Bytes as a short human-readable size."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def free_bytes(path):
    """Free bytes on the file system that holds (or will hold) ``path``; None if unknown."""
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return None


def check(path, config, done_fraction=0.0):
    """Refuse (one line) when what is left to write, plus the final compressed
    rewrite, does not fit in the free space of ``path``'s file system."""
    total = file_bytes(config)
    need = int(total * (1.0 - done_fraction)) + total
    folder = os.path.dirname(os.path.abspath(path))
    free = free_bytes(path)
    if free is None:
        return total  # unknown: the write errors will say it
    if need > (1.0 - MARGIN) * free:
        raise VxsimError(
            f"{path} needs about {human(need)} of disk ({human(total)} of results, and as much "
            f"again while it is finished) but {folder} has {human(free)} free; free space, "
            "write elsewhere, or shrink the file: fewer monte_carlo.samples or grid points, "
            'measure.record = { log = 64 }, or measure.storage = "float32"'
        )
    return total


def check_unit(path, unit_bytes):
    """Refuse to write a work unit of ``unit_bytes`` where the disk has less free (one line)."""
    folder = os.path.dirname(os.path.abspath(path))
    free = free_bytes(path)
    if free is not None and free < 1.1 * unit_bytes + OVERHEAD:
        raise VxsimError(
            f"the disk is full: {folder} has {human(free)} free, a work unit needs about "
            f"{human(unit_bytes)}; every finished work unit is kept in {path}: free space and "
            "run the same command with --resume"
        )


def disk_error(err):
    """The errno of a full-disk kind of OSError (h5py's messages included), else None."""
    if getattr(err, "errno", None) in DISK_ERRORS:
        return err.errno
    text = str(err)
    for message, code in _MESSAGES.items():
        if message in text:
            return code
    return None


@contextlib.contextmanager
def writing(path, what):
    """Turn a full disk (quota, size limit, I/O error) inside the block into one line."""
    try:
        yield
    except OSError as err:
        code = disk_error(err)
        if code is None:
            raise
        raise VxsimError(
            f"{DISK_ERRORS[code]} while {what} {path}; every finished work unit is kept: "
            "free space and run the same command with --resume"
        ) from None
