"""A shard's results file: the whole sweep's layout, with only the shard's work units done.

Beside the usual content (store.hdf5) a shard file holds

    shard_units   (width, sample) uint8: 1 where the work unit belongs to this shard
    attributes    shard_index (1-based), shard_count

and ends with status 'shard-complete' instead of 'complete': it is rewritten
chunked and compressed like a finished sweep (so its never-computed units
take almost no space) but gets no summary or analysis, which only the merged
sweep has (``vxsim merge``). The owned units are read back from the file, not
recomputed, so a resumed shard continues exactly the units it was created with.
"""

import numpy as np

from ..errors import VxsimError
from . import hdf5, locks

MASK = "shard_units"
SEALED = "shard-complete"


def content(config, index, count, units):
    """Root variables and attributes that make a results file shard ``index`` of ``count``."""
    mask = np.zeros((len(config.widths), config.samples), dtype=np.uint8)
    for wi, _, sample in units:
        mask[wi, sample] = 1
    return _content(index, count, mask)


def _content(index, count, mask):
    desc = f"1 where the work unit (width, sample) belongs to shard {index} of {count}"
    return {
        "vars": {MASK: (("width", "sample"), mask, desc)},
        "attrs": {"shard_index": np.int64(index), "shard_count": np.int64(count)},
    }


def read(path):
    """{'index', 'count', 'mask'} of a shard file; None for a whole sweep's file."""
    try:
        with hdf5.open_reader(path) as f:
            if "shard_index" not in f.attrs:
                return None
            return {
                "index": int(f.attrs["shard_index"]),
                "count": int(f.attrs["shard_count"]),
                "mask": f[MASK][...].astype(bool),
            }
    except OSError as err:
        raise VxsimError(f"cannot read {path}: {locks.reason(err)}") from None


def label(info):
    return f"{info['index']}/{info['count']}"


def check_resumable(path, shard):
    """Refuse to resume a shard as another shard, a shard as a sweep, or a sweep as a shard."""
    info = read(path)
    if info is None and shard is not None:
        raise VxsimError(f"cannot resume {path} as a shard: it is a whole sweep; omit --shard")
    if info is not None and shard is None:
        raise VxsimError(
            f"cannot resume {path}: it is shard {label(info)} of a sweep; "
            f"resume it with --shard {label(info)}"
        )
    if info is not None and (info["index"], info["count"]) != tuple(shard):
        raise VxsimError(
            f"cannot resume {path} as shard {shard[0]}/{shard[1]}: it is shard {label(info)}"
        )


def seal(path, config):
    """Rewrite a shard whose own units are all done compressed, with status 'shard-complete'."""
    with hdf5.open_reader(path) as f:
        if f.attrs.get("status") == SEALED:
            return
        done = f["completed"][...].astype(bool)
        index, count = int(f.attrs["shard_index"]), int(f.attrs["shard_count"])
        mask = f[MASK][...]
    if not done[mask.astype(bool)].all():
        raise VxsimError(f"{path} has unfinished work units of its shard")
    hdf5.finalize(path, config, None, status=SEALED, extra=_content(index, count, mask))
