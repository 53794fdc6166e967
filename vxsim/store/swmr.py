"""HDF5's single-writer/multiple-reader mode (SWMR) for a running results file.

A running file is created with the latest file format (SWMR needs superblock
v3) and its one writer opens it for SWMR writing, so other processes read it
(``open_reader``) while it is written. A writer killed with the file open
leaves "open for writing" marks in the superblock, which HDF5 refuses; the next
writer, holding the writer's lock (``locks``), clears them (``clear_writer_marks``,
like ``h5clear -s``), recomputing the superblock's lookup3 checksum.
"""

import os
import struct
import time

import h5py

from ..errors import VxsimError
from .locks import reason

RUNNING_LIBVER = "latest"  # the file format of a running file: SWMR needs superblock v3


def open_reader(path, wait=2.0):
    """Open a results file read-only, also while its sweep writes it (or after a kill).

    A file whose writer has it open (or was killed with it open) is marked so
    in its superblock, and HDF5 opens it only as an SWMR reader; a closed file
    opens plainly. Neither takes a lock, so the writer is never disturbed.

    A reader that comes while the writer closes the file can find the superblock
    already final (unmarked) but the file not yet extended to the end it names
    (HDF5: "truncated file"); it tries again for up to ``wait`` seconds, then
    raises that error (a file truncated for good, e.g. by a full disk).
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return _open_reader_once(path)
        except OSError as err:
            if "truncated file" not in str(err) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _open_reader_once(path):
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as err:
        if "already open for write" not in str(err):
            raise
    return h5py.File(path, "r", locking=False, swmr=True)


def open_writer(path, locked):
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
            raise VxsimError(f"cannot write {path}: {reason(err)}") from None
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
        raise VxsimError(f"cannot write {path}: {reason(err)}") from None


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
