"""Join the files of a sharded sweep into the file a single-process run writes.

Every part must come from the same config (canonical ``config`` attribute) and
vxsim version, and together they must hold every work unit exactly once (a
unit counts where its ``completed`` flag is set, so the done units of a killed
shard count and the rest are missing). The per-unit data are copied as they
are, then the merged file is finished exactly like a single run
(``sweep.finish``: summary, analysis, chunked and compressed). It is built
under a temporary name and renamed into place, so a failed or killed merge
leaves no output; the parts are only read.
"""

import json
import os

import h5py
import numpy as np

from . import config as config_mod
from . import rng, sweep, variables
from .errors import VxsimError
from .store import hdf5, locks, shardfile

SHOWN = 8  # units named in a refusal before "... and k more"


def merge(parts, output, overwrite=False):
    """Merge result files ``parts`` (shards of one sweep) into ``output``; returns the path."""
    parts, infos, config, owner = validate(parts, output, overwrite)
    with locks.replacing(output, "merging") as tmp:
        hdf5.create(
            tmp,
            config,
            joined(infos, "backend"),
            joined(infos, "device"),
            numerics=str(infos[0]["attrs"].get("numerics", "")),
            generator=rng.file_generator(infos[0]["attrs"]),
        )
        with h5py.File(tmp, "r+") as dst:
            for key in ("vxsim_version", "config_text"):
                dst.attrs[key] = infos[0]["attrs"][key]
            dst.attrs["merged_from"] = json.dumps(parts)
            copy_units(dst, infos, owner, config)
        sweep.finish(tmp, config)
    return output


def validate(parts, output, overwrite=False):
    """Check that ``parts`` can be merged into ``output``: (parts, infos, config, owner).

    parts: the paths as strings; infos: each part's attributes and completion
    mask (``_read_part``); config: the sweep's Config; owner: {(width_index,
    sample): index of the part that holds the unit}. Refuses (one line) missing
    or repeated inputs, an existing output without ``overwrite``, parts of
    another config, engine, normal generator or version, and gaps or duplicates
    among the units.
    """
    parts = [os.fspath(p) for p in parts]
    if not parts:
        raise VxsimError("cannot merge: no input files given")
    _check_paths(parts, output, overwrite)
    infos = [_read_part(p) for p in parts]
    _check_same_sweep(infos)
    config = _config_of(infos[0])
    return parts, infos, config, _check_units(infos, config)


def _check_paths(parts, output, overwrite):
    """Refuse a missing or repeated part, and an output that is a part or exists already."""
    for i, part in enumerate(parts):
        if not os.path.isfile(part):
            raise VxsimError(f"cannot merge: {part} does not exist")
        for other in parts[:i]:
            if os.path.samefile(part, other):
                raise VxsimError(f"cannot merge: {part} is given twice")
    if os.path.exists(output):
        for part in parts:
            if os.path.samefile(part, output):
                raise VxsimError(
                    f"cannot merge into {output}: it is one of the inputs (inputs are never "
                    "overwritten; choose another -o)"
                )
        if not overwrite:
            raise VxsimError(f"{output} exists; pass --overwrite to replace it")
        locks.refuse_if_written(output)
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise VxsimError(f"output directory {parent} does not exist")


def _read_part(path):
    """Attributes, completion mask and shard info of one part (opened read-only)."""
    try:
        locks.refuse_if_written(path)
    except VxsimError:
        raise VxsimError(
            f"cannot merge: {path}: {locks.BUSY}; is its sweep still running?"
        ) from None
    try:
        f = hdf5.open_reader(path)  # a killed shard's file too: its units count as missing
    except OSError as err:
        raise VxsimError(f"cannot merge: {path}: {locks.reason(err)}") from None
    with f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        if "config" not in attrs or "completed" not in f or "config_text" not in attrs:
            raise VxsimError(f"cannot merge: {path} is not a vxsim results file")
        done = f["completed"][...].astype(bool)
        mask = f[shardfile.MASK][...].astype(bool) if shardfile.MASK in f else None
    shard = None
    if "shard_index" in attrs:
        shard = {"index": int(attrs["shard_index"]), "count": int(attrs["shard_count"])}
    return {"path": path, "attrs": attrs, "done": done, "shard": shard, "mask": mask}


def _check_same_sweep(infos):
    """Every part has the first part's config and vxsim version; else name what differs."""
    first = infos[0]
    a, ref = first["attrs"], first["path"]
    problems = []
    for info in infos[1:]:
        b, path = info["attrs"], info["path"]
        if b["config"] != a["config"]:
            diffs = hdf5.diff_keys(
                json.loads(a["config"]), json.loads(b["config"]), labels=(ref, path)
            )
            problems.append(f"{path} has another config than {ref}: " + ", ".join(diffs))
        if str(b.get("numerics", "")) != str(a.get("numerics", "")):
            problems.append(
                f"{path} was computed by {b.get('numerics') or 'an unknown engine'}, "
                f"{ref} by {a.get('numerics') or 'an unknown engine'} (the last bits differ)"
            )
        if rng.file_generator(b) != rng.file_generator(a):
            problems.append(
                f"{path} was drawn by the generator {rng.file_generator(b)}, "
                f"{ref} by {rng.file_generator(a)} (other numbers)"
            )
        if b.get("vxsim_version") != a.get("vxsim_version"):
            problems.append(
                f"{path} was written by vxsim {b.get('vxsim_version')}, "
                f"{ref} by vxsim {a.get('vxsim_version')}"
            )
    if problems:
        raise VxsimError("cannot merge: " + "; ".join(problems))


def _config_of(info):
    """The Config a part was written for, rebuilt from its config text."""
    try:
        config = config_mod.build(json.loads(info["attrs"]["config_text"]))
    except (ValueError, KeyError) as err:
        raise VxsimError(
            f"cannot merge: the config in {info['path']} is unusable ({err})"
        ) from None
    if config.canonical() != info["attrs"]["config"]:
        raise VxsimError(f"cannot merge: {info['path']} has inconsistent config attributes")
    return config


def _unit(config, wi, sample):
    return f"(width={config.widths[wi]}, sample={sample})"


def _listed(items):
    shown = ", ".join(items[:SHOWN])
    return shown + (f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _check_units(infos, config):
    """{(width_index, sample): index of the part holding it}; refuse gaps and duplicates."""
    shape = (len(config.widths), config.samples)
    count = np.zeros(shape, dtype=np.int64)
    for info in infos:
        if info["done"].shape != shape:
            raise VxsimError(f"cannot merge: {info['path']} has a damaged completion mask")
        count += info["done"]
    problems = []
    dups = [tuple(u) for u in np.argwhere(count > 1)]
    if dups:
        named = [
            _unit(config, *u) + " in " + " and ".join(i["path"] for i in infos if i["done"][u])
            for u in dups
        ]
        problems.append(f"{len(dups)} work unit(s) present twice: {_listed(named)}")
    missing = [tuple(u) for u in np.argwhere(count == 0)]
    if missing:
        named = [_unit(config, *u) for u in missing]
        problems.append(f"{len(missing)} work unit(s) missing: {_listed(named)}")
        problems += _why_missing(infos)
    if problems:
        raise VxsimError("cannot merge: " + "; ".join(problems))
    return {tuple(u): k for k, info in enumerate(infos) for u in np.argwhere(info["done"])}


def _why_missing(infos):
    """Unfinished parts and absent shards, to say where the missing units went."""
    notes = []
    for info in infos:
        shard, status = info["shard"], info["attrs"].get("status")
        if shard is not None and status != shardfile.SEALED:
            label = f"{shard['index']}/{shard['count']}"
            notes.append(
                f"{info['path']} (shard {label}) is unfinished, "
                f"{int(info['done'].sum())} of {int(info['mask'].sum())} units done "
                f"(finish it with --resume --shard {label})"
            )
        elif shard is None and status != "complete":
            notes.append(
                f"{info['path']} is unfinished, "
                f"{int(info['done'].sum())} of {info['done'].size} units done"
            )
    counts = {i["shard"]["count"] for i in infos if i["shard"] is not None}
    if len(counts) == 1:
        (n,) = counts
        have = {i["shard"]["index"] for i in infos if i["shard"] is not None}
        absent = [f"{k}/{n}" for k in range(1, n + 1) if k not in have]
        if absent:
            notes.append("no input is shard " + ", ".join(absent))
    return notes


def unit_index(dims, width_index, sample):
    """The hyperslab of one work unit in a variable with dimensions ``dims``."""
    return tuple(
        width_index if d == "width" else sample if d == "sample" else slice(None) for d in dims
    )


def copy_units(dst, infos, owner, config):
    """Copy every unit's per-unit variables from the part that holds it, then flag it done."""
    unit_vars = variables.unit_variables(config)
    for k, info in enumerate(infos):
        units = [u for u, holder in owner.items() if holder == k]
        if not units:
            continue
        with hdf5.open_reader(info["path"]) as src:
            for name, dims in unit_vars.items():
                for wi, sample in units:
                    index = unit_index(dims, wi, sample)
                    dst[name][index] = src[name][index]
    done = np.zeros((len(config.widths), config.samples), dtype=np.uint8)
    for wi, sample in owner:
        done[wi, sample] = 1
    dst["completed"][...] = done


def joined(infos, key):
    """One attribute over the parts: its value, or the distinct values joined with ', '."""
    values = []
    for info in infos:
        value = str(info["attrs"].get(key, "?"))
        if value not in values:
            values.append(value)
    return ", ".join(values)
