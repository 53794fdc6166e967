"""Results on disk: one HDF5 file per sweep, netCDF-4 style, resumable.

Layout (root group):

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

The running file uses HDF5's single-writer/multiple-reader mode (SWMR): it is
created with the latest file format and the one writer opens it for SWMR
writing, so other processes read it (``open_reader``) while it is written. The
writer also holds an exclusive record lock on the file for as long as it
runs; the kernel drops that lock however the writer ends, so a held lock means a
live writer (a second one is refused) and a free lock on a file still marked
open for writing means a killed one, whose marks are cleared on resume.
"""

import contextlib
import errno
import fcntl
import json
import os
import struct
import sys
import time

import h5py
import numpy as np

from .. import __version__
from ..errors import VxsimError


def dims(config):
    """Dimensions of a per-unit variable: width, the grid axes, sample, layer."""
    return ("width",) + config.grid_dims + ("sample", "layer")


UNIT_VARS = ("log_q", "corr", "log_tangent_norm", "log_grad_norm")
STR = h5py.string_dtype()
RUNNING_LIBVER = "latest"  # the file format of a running file: SWMR needs superblock v3


def coordinates(config):
    return {
        "width": np.array(config.widths, dtype=np.int64),
        "activation": np.array(config.activations, dtype=object),
        "sigma_w2": np.asarray(config.sigma_w2, dtype=np.float64),
        "sigma_b2": np.asarray(config.sigma_b2, dtype=np.float64),
        **{k: np.asarray(v, dtype=np.float64) for k, v in config.extra_axes.items()},
        "sample": np.arange(config.samples, dtype=np.int64),
        "layer": np.asarray(config.layers, dtype=np.int64),
    }


def unit_variables(config):
    """{name: dims} of the per-unit variables this config produces."""
    names = ["log_q", "corr"]
    if "jvp" in config.modes:
        names.append("log_tangent_norm")
    if "vjp" in config.modes:
        names.append("log_grad_norm")
    full = dims(config)
    out = {name: full for name in names}
    out["diverged"] = full[:-1]
    return out


ATTRS = {
    "log_q": ("log of the mean squared pre-activation of input 1", "1"),
    "corr": ("correlation of the pre-activations of the two inputs", "1"),
    "log_tangent_norm": ("JVP: log |J v0|^2 at layer l relative to |v0|^2", "1"),
    "log_grad_norm": ("VJP: log |dE/dh^l|^2 relative to its value at the output layer", "1"),
    "diverged": ("first layer at which the point left the float range (0: never)", "layer"),
    "completed": ("1 where the work unit (width, sample) is finished", "1"),
}


def _scale(f, name, values):
    dtype = STR if values.dtype == object else values.dtype
    ds = f.create_dataset(name, data=values, dtype=dtype)
    ds.make_scale(name)
    return ds


def _variable(f, name, dims, shape, dtype, compressed, fill):
    kw = {}
    if compressed:
        chunks = tuple(
            1 if d in ("width", "sample") else n for d, n in zip(dims, shape, strict=True)
        )
        kw = dict(chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
    ds = f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, **kw)
    for i, dim in enumerate(dims):
        ds.dims[i].attach_scale(f[dim])
    if name in ATTRS:
        ds.attrs["long_name"], ds.attrs["units"] = ATTRS[name]
    return ds


def _layout(f, config, compressed):
    """Create coordinates and empty variables; return {name: dataset}."""
    coords = coordinates(config)
    for name, values in coords.items():
        _scale(f, name, values)
    f["layer"].attrs["long_name"] = "layer index l (1 = first hidden layer)"
    sizes = {k: len(v) for k, v in coords.items()}
    out = {}
    for name, dims in unit_variables(config).items():
        shape = tuple(sizes[d] for d in dims)
        int_var = name == "diverged"
        out[name] = _variable(
            f,
            name,
            dims,
            shape,
            np.int32 if int_var else np.float64,
            compressed,
            0 if int_var else np.nan,
        )
    out["completed"] = _variable(
        f,
        "completed",
        ("width", "sample"),
        (sizes["width"], sizes["sample"]),
        np.uint8,
        False,
        0,
    )
    return out


def _write_attrs(f, config, backend, device, created=None, numerics=""):
    f.attrs["vxsim_version"] = __version__
    f.attrs["config"] = config.canonical()
    f.attrs["config_text"] = json.dumps(config.raw, sort_keys=True, indent=1)
    f.attrs["backend"] = backend
    f.attrs["device"] = device
    f.attrs["numerics"] = numerics
    f.attrs["seed"] = np.uint64(config.seed)
    f.attrs["created"] = created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.attrs["status"] = "running"
    f.attrs["Conventions"] = "CF-1.8"


def create(path, config, backend, device, extra=None, numerics=""):
    """A new results file with every variable allocated and marked incomplete.

    Built under a temporary name and renamed into place, so that a kill during
    creation leaves either no file or a whole one. ``extra``: more root
    variables and attributes, as for ``_write_extra`` (a shard's, say).
    ``numerics``: what decides the last bits of the numbers (``engines.numerics``).
    """
    with _replacing(path, "creating") as tmp:
        try:
            f = h5py.File(tmp, "w", libver=RUNNING_LIBVER)
        except OSError as err:
            raise VxsimError(f"cannot create {path}: {_reason(err)}") from None
        with f:
            _write_attrs(f, config, backend, device, numerics=numerics)
            datasets = _layout(f, config, compressed=False)
            for ds in datasets.values():
                ds[(0,) * ds.ndim] = ds.fillvalue  # allocate contiguous storage now
            if extra:
                _write_extra(f, extra)


@contextlib.contextmanager
def _replacing(path, purpose):
    """Yield a temporary name beside ``path``; rename it over ``path`` if the block succeeds.

    The name carries this host and process (``.NAME.PURPOSE-HOST-PID``): a
    process killed before it could clean up leaves its file behind, and the
    next one here removes such files of dead processes of this host (another
    host's, on a shared file system, are left alone: their PIDs mean nothing here).
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.{purpose}-{_host()}-"
    _remove_stale(folder, prefix)
    tmp = os.path.join(folder, f"{prefix}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _host():
    """This host's name, safe inside a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in os.uname().nodename) or "host"


def _remove_stale(folder, prefix):
    """Delete ``prefix``PID files in ``folder`` whose process no longer exists."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for entry in names:
        pid = entry[len(prefix) :]
        if not entry.startswith(prefix) or not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, entry))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def refuse_if_written(path):
    """Raise if another process holds ``path`` open for writing (before replacing it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if not _try_lock(fd, exclusive=False):
            raise VxsimError(f"cannot replace {path}: {BUSY}")
    except OSError:
        pass  # no locks on this file system: nothing to tell
    finally:
        os.close(fd)


def _try_lock(fd, exclusive):
    """Lock the file of ``fd`` without waiting; False where another process holds a conflict.

    An open-file-description record lock (Linux: it goes when this descriptor
    closes or its process dies, however it dies), else a POSIX ``lockf``.
    Neither meets HDF5's own ``flock``, so readers that let HDF5 lock, such as
    ``h5py.File(path, "r", swmr=True)``, still open a file being written.
    """
    try:
        if sys.platform == "linux" and hasattr(fcntl, "F_OFD_SETLK"):
            kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
            request = struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)  # struct flock
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
        else:
            fcntl.lockf(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


BUSY = "the file is open in another process or program (one writer at a time)"


def _reason(err):
    """The useful part of an h5py OSError (it is open elsewhere, it is not HDF5, ...)."""
    text = str(err)
    if "unable to lock" in text or "already open" in text:  # not "superblock"
        return BUSY
    return f"not a readable HDF5 file ({text})"


def open_reader(path):
    """Open a results file read-only, also while its sweep writes it (or after a kill).

    A file whose writer has it open (or was killed with it open) is marked so
    in its superblock, and HDF5 opens it only as an SWMR reader; a closed file
    opens plainly. Neither takes a lock, so the writer is never disturbed.
    """
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as err:
        if "already open for write" not in str(err):
            raise
    return h5py.File(path, "r", locking=False, swmr=True)


def _diff_keys(a, b, prefix="", labels=("file", "now")):
    keys = []
    for k in sorted(set(a) | set(b)):
        name = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _diff_keys(a[k], b[k], f"{name}.", labels)
        elif a.get(k) != b.get(k):
            keys.append(
                f"{name} ({labels[0]}: {json.dumps(a.get(k))}, {labels[1]}: {json.dumps(b.get(k))})"
            )
    return keys


def check_resumable(path, config, numerics=None):
    """Refuse to resume a file written for another config (say which keys differ),
    or, given ``numerics``, by an engine whose numbers would differ in the last bits."""
    try:
        with open_reader(path) as f:
            stored = f.attrs["config"]
            had = str(f.attrs.get("numerics", ""))
    except OSError as err:
        raise VxsimError(f"cannot resume {path}: {_reason(err)}") from None
    except KeyError:
        raise VxsimError(f"cannot resume {path}: not a vxsim results file") from None
    if stored != config.canonical():
        diffs = _diff_keys(json.loads(stored), json.loads(config.canonical()))
        raise VxsimError(f"cannot resume {path}: config differs in " + "; ".join(diffs))
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
    raw data into the preallocated datasets only: SWMR forbids new objects.
    """

    def __init__(self, path):
        self.path = path
        self.lock = _lock_for_writing(path)
        try:
            self.file = _open_swmr_writer(path, locked=self.lock is not None)
        except BaseException:
            if self.lock is not None:
                os.close(self.lock)
            raise

    def completed(self):
        return self.file["completed"][...].astype(bool)

    def write_unit(self, width_index, sample, arrays):
        f = self.file
        for name, values in arrays.items():
            ds = f[name]
            has_layer = ds.dims[ds.ndim - 1][0].name.endswith("/layer")
            index = (width_index, Ellipsis, sample) + ((slice(None),) if has_layer else ())
            ds[index] = values
        f.flush()
        f["completed"][width_index, sample] = 1
        f.flush()

    def close(self):
        self.file.close()
        if self.lock is not None:
            os.close(self.lock)  # releases the lock, after HDF5 has closed the file
            self.lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _lock_for_writing(path):
    """A descriptor of ``path`` holding the writer's lock, or None where locks are unsupported."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as err:
        raise VxsimError(f"cannot write {path}: {err.strerror}") from None
    try:
        locked = _try_lock(fd, exclusive=True)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    if not locked:
        os.close(fd)
        raise VxsimError(f"cannot write {path}: {BUSY}")
    return fd


def _open_swmr_writer(path, locked):
    """``path`` opened for SWMR writing; a killed writer's marks are cleared when ``locked``."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_file_locking(False, True)  # the writer's own lock stands for HDF5's
    name = os.fsencode(path)
    mode = h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE
    try:
        return h5py.File(h5py.h5f.open(name, mode, fapl=fapl))
    except OSError as err:
        if "superblock version for SWMR" in str(err):  # begun by a vxsim before SWMR
            return h5py.File(path, "r+", locking=False)
        if "already open for write" not in str(err):
            raise VxsimError(f"cannot write {path}: {_reason(err)}") from None
    if not locked:
        raise VxsimError(
            f"cannot write {path}: it is marked open by a writer, and this file system "
            "has no locks to tell whether that writer still runs; if none does, clear "
            "the mark with `h5clear -s` and resume"
        )
    clear_writer_marks(path)  # we hold the lock: the writer that left them is gone
    try:
        return h5py.File(h5py.h5f.open(name, mode, fapl=fapl))
    except OSError as err:
        raise VxsimError(f"cannot write {path}: {_reason(err)}") from None


# Superblock versions 2 and 3 (HDF5 file format spec, section II.A): signature (8 bytes),
# version, size of offsets, size of lengths, status flags (1 byte each), four addresses,
# then a lookup3 checksum of everything before it. Flag bits: 0x1 open for writing,
# 0x4 open for SWMR writing.
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SWMR_WRITER_MARKS = 0x1 | 0x4


def clear_writer_marks(path):
    """Reset the superblock status flags that a killed SWMR writer left (``h5clear -s``).

    HDF5 refuses to open a file marked open for writing. Only the marks an SWMR
    writer leaves are cleared: such a writer keeps the file's structure valid at
    every moment, and vxsim's writer changes raw data only.
    """
    with open(path, "r+b") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
            raise VxsimError(f"cannot write {path}: not a vxsim results file")
        size = 12 + 4 * head[9]
        fh.seek(0)
        block = bytearray(fh.read(size + 4))
        if struct.unpack("<I", block[size:])[0] != lookup3(bytes(block[:size])):
            raise VxsimError(f"cannot write {path}: its superblock checksum is wrong")
        if block[11] & _SWMR_WRITER_MARKS != _SWMR_WRITER_MARKS:
            raise VxsimError(
                f"cannot write {path}: another program left it open for writing "
                "(not a vxsim sweep); it may be damaged"
            )
        block[11] = 0
        block[size:] = struct.pack("<I", lookup3(bytes(block[:size])))
        fh.seek(0)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())


def lookup3(data, initval=0):
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5 metadata (H5_checksum_lookup3).

    Bytes in little-endian 32-bit words a, b, c, 12 at a time, each block
    folded in by ``mix``; the last (zero-padded) block by ``final``; c is the hash.
    """
    mask = 0xFFFFFFFF

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & mask

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & mask
    if n == 0:
        return c
    padded = data + bytes(-n % 12)
    words = struct.unpack(f"<{len(padded) // 4}I", padded)
    for i in range(0, len(words) - 3, 3):  # every block but the last: mix
        a, b, c = (a + words[i]) & mask, (b + words[i + 1]) & mask, (c + words[i + 2]) & mask
        a = ((a - c) & mask) ^ rot(c, 4)
        c = (c + b) & mask
        b = ((b - a) & mask) ^ rot(a, 6)
        a = (a + c) & mask
        c = ((c - b) & mask) ^ rot(b, 8)
        b = (b + a) & mask
        a = ((a - c) & mask) ^ rot(c, 16)
        c = (c + b) & mask
        b = ((b - a) & mask) ^ rot(a, 19)
        a = (a + c) & mask
        c = ((c - b) & mask) ^ rot(b, 4)
        b = (b + a) & mask
    a, b, c = (a + words[-3]) & mask, (b + words[-2]) & mask, (c + words[-1]) & mask
    c = ((c ^ b) - rot(b, 14)) & mask
    a = ((a ^ c) - rot(c, 11)) & mask
    b = ((b ^ a) - rot(a, 25)) & mask
    c = ((c ^ b) - rot(b, 16)) & mask
    a = ((a ^ c) - rot(c, 4)) & mask
    b = ((b ^ a) - rot(a, 14)) & mask
    c = ((c ^ b) - rot(b, 24)) & mask
    return c


def read_unit_variables(path):
    """{name: array} of every per-unit variable, plus coordinates and attributes."""
    with open_reader(path) as f:
        data = {
            name: f[name][...] for name in list(UNIT_VARS) + ["diverged", "completed"] if name in f
        }
        coords = {name: f[name][...] for name in file_dims(f)}
        coords["activation"] = np.array(
            [s.decode() if isinstance(s, bytes) else s for s in coords["activation"]]
        )
        attrs = dict(f.attrs)
    return data, coords, attrs


def file_dims(f):
    """The dimension names of an open results file's per-unit variables (log_q's scales)."""
    ds = f["log_q"]
    return tuple(ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim))


def finalize(path, config, summary, analysis=None, status="complete", extra=None):
    """Rewrite the finished file chunked + compressed with the summary; atomic rename.

    ``status``: the status it ends with; ``extra``: root variables to carry along
    (see ``_write_extra``; root attributes are always kept).
    """
    with _replacing(path, "finishing") as tmp:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            datasets = _layout(dst, config, compressed=True)
            for name, ds in datasets.items():
                ds[...] = src[name][...]
            if summary:
                _write_summary(dst, summary)
            if analysis:
                _write_group(dst, "analysis", analysis)
            if extra:
                _write_extra(dst, extra)
            dst.attrs["status"] = status


def _write_summary(f, summary):
    """summary: {'mode': [...], name: (dims, array)}."""
    _scale(f, "mode", np.array(summary["mode"], dtype=object))
    f.attrs["growth_law"] = summary.get("growth_law", "exponential")
    for name, (dims, values, desc) in summary["vars"].items():
        ds = f.create_dataset(name, data=values)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(f[dim])
        ds.attrs["long_name"] = desc


def _write_extra(f, content):
    """Root variables and attributes; content: {'vars': {name: (dims, array, desc)}, 'attrs': {}}.

    The dims must be root coordinates already in ``f``.
    """
    for name, (dims, values, desc) in content.get("vars", {}).items():
        ds = f.create_dataset(name, data=values)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(f[dim])
        ds.attrs["long_name"] = desc
    for key, value in content.get("attrs", {}).items():
        f.attrs[key] = value


def _write_group(f, group, content):
    """content: {'vars': {name: (dims, array, desc)}, 'attrs': {}}.

    The group gets its own copies of the root coordinates it uses, so that
    ``open_results(path, group=...)`` has labelled axes too.
    """
    g = f.create_group(group)
    for dim in sorted({d for dims, _, _ in content["vars"].values() for d in dims}):
        values = f[dim].asstr()[...] if h5py.check_string_dtype(f[dim].dtype) else f[dim][...]
        _scale(g, dim, np.asarray(values, dtype=object if values.dtype.kind in "OU" else None))
    for name, (dims, values, desc) in content["vars"].items():
        ds = g.create_dataset(name, data=values)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(g[dim])
        ds.attrs["long_name"] = desc
    for key, value in content.get("attrs", {}).items():
        g.attrs[key] = value


def open_results(path, group=None):
    """An xarray Dataset of a results file (or of its ``analysis`` group)."""
    try:
        import xarray as xr
    except ImportError:
        raise VxsimError(
            "open_results needs xarray and h5netcdf: pip install 'vxsim[xarray]'"
        ) from None
    return xr.open_dataset(path, engine="h5netcdf", group=group, phony_dims="access")
