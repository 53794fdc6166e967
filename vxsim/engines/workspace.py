"""Memory kept between work units, so that a unit writes pages already mapped.

A VJP unit keeps every layer's phi'(h) and Z^l (``schedule.vjp_plan``): at width
1024 and 342 grid points that is 5.4 MB a layer, written to memory the process
has never touched when each unit allocates its own. The operating system maps
a page on its first write (a fault and a zeroing; in a virtual machine often
the host's fault too). Measured on the 2-core EPYC KVM guest (2026-12-04):
first writes cost 0.55-13 ms per 4 MB against 0.3 ms for rewriting mapped
memory, and a VJP unit at width 1024 ran 25-30 ms a layer with fresh arrays
against 17-20 ms with the previous unit's.

``borrowed()`` lends a unit a ``Workspace``, named buffers that outlive it: when
the unit ends they go back to a free list, and the next unit in the process
(a sweep's worker runs them one after another) gets them again. Two units
alive at once get two workspaces, so nothing is shared between them.
``Workspace.empty`` arrays are uninitialised, like ``np.empty``: they hold what
the previous unit left (the engine tests poison them with NaN first and
check that no result changes). ``release()`` frees the idle ones; ``sweep.run_sweep``
calls it when its units are done.
"""

import contextlib
import threading

import numpy as np


class Workspace:
    """Named byte buffers, each grown to the largest array asked of it."""

    def __init__(self):
        self._buffers = {}

    def empty(self, name, shape, dtype):
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` in buffer ``name``
        (replaced by a larger one when too small; one array per name at a time)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.size < nbytes:
            self._buffers.pop(name, None)  # free the old buffer before the new one
            buf = self._buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    @property
    def nbytes(self):
        """Bytes held (what a unit borrowing this workspace can reuse)."""
        return sum(buf.nbytes for buf in self._buffers.values())

    def poison(self):
        """Set every held byte to 0xFF, a NaN in float32 and float64 (tests: what the
        previous unit left must not reach any result)."""
        for buf in self._buffers.values():
            buf[:] = 0xFF


_idle = []  # workspaces no unit holds, the most recently returned last
_lock = threading.Lock()


@contextlib.contextmanager
def borrowed():
    """A workspace for one unit: the last one returned, else a new one."""
    with _lock:
        ws = _idle.pop() if _idle else Workspace()
    try:
        yield ws
    finally:
        with _lock:
            _idle.append(ws)


def idle():
    """The workspaces no unit holds now (tests)."""
    with _lock:
        return list(_idle)


def release():
    """Free the memory of every idle workspace."""
    with _lock:
        _idle.clear()
