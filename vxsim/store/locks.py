"""One writer per results file, and temporary files that never outlive their process.

The writer of a running sweep holds an exclusive record lock on its file for
as long as it runs; the kernel drops that lock however the writer ends, so a
held lock means a live writer (a second one is refused) and a free lock on a
file still marked open for writing means a killed one (``swmr``).

Files are created, finished and merged under a temporary name beside the
target and renamed over it (atomic on POSIX); the name carries the host and
process, so that the next process here removes those of dead processes.
"""

import contextlib
import errno
import fcntl
import os
import struct
import sys

from ..errors import VxsimError

BUSY = "the file is open in another process or program (one writer at a time)"


@contextlib.contextmanager
def replacing(path, purpose):
    """Yield a temporary name beside ``path``; rename it over ``path`` if the block succeeds.

    The name carries this host and process (``.NAME.PURPOSE-HOST-PID``): a
    process killed before it could clean up leaves its file behind, and the
    next one here removes such files of dead processes of this host (another
    host's, on a shared file system, are left alone: their PIDs mean nothing here).
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.{purpose}-{host()}-"
    _remove_stale(folder, prefix)
    tmp = os.path.join(folder, f"{prefix}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def host():
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


def lock_for_writing(path):
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


def reason(err):
    """The useful part of an h5py OSError (it is open elsewhere, it is not HDF5, ...)."""
    text = str(err)
    if "unable to lock" in text or "already open" in text:  # not "superblock"
        return BUSY
    return f"not a readable HDF5 file ({text})"
