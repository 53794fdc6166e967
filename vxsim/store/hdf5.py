"""Results on disk: one HDF5 file per sweep, netCDF-4 style, resumable.

Layout (root group; the variables' dims, dtypes and attributes are the
catalogue's, ``vxsim.variables``, laid out by ``store.schema``):

    coordinates  width, activation, sigma_w2, sigma_b2, [extra], sample, layer  (dimension scales)
                 [extra]: the architecture's further grid axes (sigma_u2, alpha,
                 update_bias, forget_bias; none for the plain MLP)
    per unit     log_q, corr, log_tangent_norm, log_grad_norm
                 (width, activation, sigma_w2, sigma_b2, [extra], sample, layer), float64
                 diverged (width, activation, ..., sample): first bad layer, 0 = none
    progress     completed (width, sample): 1 once a work unit is on disk
    summary      growth_rate_{quenched,annealed}[_se] (mode, width, activation, sigma_w2, sigma_b2)
    attributes   vxsim_version, config (canonical JSON), config_text, backend, device, seed,
                 created, status ('running' | 'complete'; 'shard-complete': see shardfile)

While a sweep runs, the datasets are contiguous and allocated up front, so
writing a unit changes raw bytes only, never the file's structure: a kill at
any moment leaves a readable file in which every unit flagged complete is
whole. A unit's data are flushed before its flag is set. When the last unit is
in, the file is rewritten chunked and compressed with the summary added, into
a temporary file renamed over the original (atomic on POSIX).

The running file is written in SWMR mode (``store.swmr``: others read it while
it is written) by one writer holding a lock on it (``store.locks``).
"""

import json
import os

import h5py
import numpy as np

from .. import rng, variables
from ..errors import VxsimError
from ..variables import unit_variables
from . import schema, space, swmr
from .locks import BUSY, lock_for_writing, reason, refuse_if_written, replacing
from .schema import file_dims
from .swmr import open_reader

__all__ = [
    "BUSY",
    "Writer",
    "check_resumable",
    "create",
    "diff_keys",
    "file_dims",
    "finalize",
    "open_reader",
    "open_results",
    "read_unit_variables",
    "refuse_if_written",
    "unit_variables",
]


def create(path, config, backend, device, extra=None, numerics="", generator=rng.GENERATOR):
    """A new results file with every variable laid out (allocated as units arrive) and
    every unit marked incomplete.

    Built under a temporary name and renamed into place, so that a kill during
    creation leaves either no file or a whole one. ``extra``: more root
    variables and attributes, as for ``schema.write_extra`` (a shard's, say).
    ``numerics``: what decides the last bits of the numbers (``engines.numerics``);
    ``generator``: the normal generator that drew them (``rng.GENERATOR``).
    """
    with replacing(path, "creating") as tmp:
        try:
            f = h5py.File(tmp, "w", libver=swmr.RUNNING_LIBVER)
        except OSError as err:
            raise VxsimError(f"cannot create {path}: {reason(err)}") from None
        with f, space.writing(path, "creating"):
            schema.write_attrs(f, config, backend, device, numerics=numerics, generator=generator)
            datasets = schema.layout(f, config, compressed=False)
            for ds in datasets.values():
                if ds.chunks is None:  # small contiguous ones (the progress flags): now
                    ds[(0,) * ds.ndim] = ds.fillvalue
            if extra:
                schema.write_extra(f, extra)


def diff_keys(a, b, prefix="", labels=("file", "now")):
    """'key (file: x, now: y)' for every key (dotted for nested dicts) where a and b differ."""
    keys = []
    for k in sorted(set(a) | set(b)):
        name = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += diff_keys(a[k], b[k], f"{name}.", labels)
        elif a.get(k) != b.get(k):
            keys.append(
                f"{name} ({labels[0]}: {json.dumps(a.get(k))}, {labels[1]}: {json.dumps(b.get(k))})"
            )
    return keys


def check_resumable(path, config, numerics=None):
    """Refuse to resume a file written for another config (say which keys differ),
    with another normal generator (``rng.GENERATOR``: other weights altogether), or,
    given ``numerics``, by an engine whose numbers would differ in the last bits."""
    try:
        with open_reader(path) as f:
            stored = f.attrs["config"]
            had = str(f.attrs.get("numerics", ""))
            drawn_by = rng.file_generator(f.attrs)
    except OSError as err:
        raise VxsimError(f"cannot resume {path}: {reason(err)}") from None
    except KeyError:
        raise VxsimError(f"cannot resume {path}: not a vxsim results file") from None
    if stored != config.canonical():
        diffs = diff_keys(json.loads(stored), json.loads(config.canonical()))
        raise VxsimError(f"cannot resume {path}: config differs in " + "; ".join(diffs))
    if drawn_by != rng.GENERATOR:
        raise VxsimError(
            f"cannot resume {path}: its weights were drawn by the generator {drawn_by}, "
            f"this vxsim draws them with {rng.GENERATOR} (other numbers); "
            "start a new file or --overwrite"
        )
    if numerics is not None and had != numerics:
        raise VxsimError(
            f"cannot resume {path}: its units were computed by {had or 'an unknown engine'}, "
            f"this process would use {numerics} and its numbers would differ in the last "
            "bits; resume with the same backend on the same kind of machine, or --overwrite"
        )


class Writer:
    """The single writer of a running sweep: unit results in, completion flags out.

    Holds an exclusive lock on the file (a second writer is refused) and
    the file open in SWMR-write mode (readers see every flushed unit). Writes
    raw data into the laid-out datasets only: SWMR forbids new objects.

    A unit's chunks are allocated as it is written, so a disk may fill here.
    HDF5 reports a failed chunk write only when the chunk leaves its cache, so
    the datasets stay open and each is flushed before the unit's completion
    flag is set; and a unit is not started when the disk has less free space
    than it needs (``space.check_unit``), which keeps HDF5 off the failure paths
    it does not recover from.
    """

    def __init__(self, path):
        self.path = path
        self.lock = lock_for_writing(path)
        try:
            self.file = swmr.open_writer(path, locked=self.lock is not None)
        except BaseException:
            if self.lock is not None:
                os.close(self.lock)
            raise
        self.datasets = {}

    def completed(self):
        return self.file["completed"][...].astype(bool)

    def _dataset(self, name):
        if name not in self.datasets:
            self.datasets[name] = self.file[name]
        return self.datasets[name]

    def write_unit(self, width_index, sample, arrays):
        unit_bytes = sum(np.asarray(v).nbytes for v in arrays.values())
        space.check_unit(self.path, unit_bytes)
        with space.writing(self.path, "writing a work unit to"):
            for name, values in arrays.items():
                ds = self._dataset(name)
                ds[unit_index(ds, width_index, sample)] = values
                ds.id.flush()  # raises here if the chunk cannot be written
            self.file.flush()
            self._dataset("completed")[width_index, sample] = 1
            self.file.flush()

    def close(self):
        self.datasets = {}
        try:
            self.file.close()
        except OSError as err:  # the disk filled: what is finished was flushed before
            if space.disk_error(err) is None:
                raise
        if self.lock is not None:
            os.close(self.lock)  # releases the lock, after HDF5 has closed the file
            self.lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def unit_index(ds, width_index, sample):
    """The hyperslab of one work unit (width, sample) in a per-unit dataset."""
    return (width_index, Ellipsis, sample) + (slice(None),) * _after_sample(ds)


def read_unit_variables(path):
    """{name: array} of every stored catalogue variable, plus coordinates and attributes."""
    with open_reader(path) as f:
        names = [v.name for v in variables.CATALOGUE.values() if v.role in ("unit", "progress")]
        data = {name: f[name][...] for name in names if name in f}
        coords = {name: f[name][...] for name in file_dims(f)}
        for name in ("activation", "init"):
            if name in coords:
                coords[name] = np.array(
                    [s.decode() if isinstance(s, bytes) else s for s in coords[name]]
                )
        attrs = dict(f.attrs)
    return data, coords, attrs


def finalize(path, config, summary, analysis=None, status="complete", extra=None):
    """Rewrite the finished file chunked + compressed with the summary; atomic rename.

    ``status``: the status it ends with; ``extra``: root variables to carry along
    (see ``schema.write_extra``; root attributes are always kept).
    """
    with replacing(path, "finishing") as tmp, space.writing(path, "finishing"):
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            datasets = schema.layout(dst, config, compressed=True)
            done = src["completed"][...].astype(bool)
            for name, ds in datasets.items():
                _copy(src[name], ds, done)
            if summary:
                schema.write_summary(dst, summary)
            if analysis:
                schema.write_group(dst, "analysis", analysis)
            if extra:
                schema.write_extra(dst, extra)
            dst.attrs["status"] = status


def _copy(src, dst, done):
    """dst[...] = src[...], one work unit at a time where dst is chunked by unit (memory
    stays one unit's however large the file); a unit not ``done`` (a shard's others)
    holds only the fill value, which dst reads without storing it."""
    if dst.chunks is None:
        dst[...] = src[...]
        return
    tail = (slice(None),) * _after_sample(dst)
    for wi, sample in zip(*np.nonzero(done), strict=True):
        index = (int(wi), Ellipsis, int(sample)) + tail
        dst[index] = src[index]


def _after_sample(ds):
    """How many dims follow ``sample`` in a per-unit dataset (layer: 1; the spectrum's
    spectrum_layer, sv: 2; none: 0)."""
    names = [ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim)]
    return ds.ndim - 1 - names.index("sample")


def open_results(path, group=None):
    """An xarray Dataset of a results file (or of its ``analysis`` group)."""
    try:
        import xarray as xr
    except ImportError:
        raise VxsimError(
            "open_results needs xarray and h5netcdf: pip install 'vxsim[xarray]'"
        ) from None
    return xr.open_dataset(path, engine="h5netcdf", group=group, phony_dims="access")
