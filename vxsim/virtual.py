"""A merged file made of HDF5 virtual datasets over the parts, and its materialisation.

``merge_virtual`` (``vxsim merge --virtual``) checks the parts exactly as the
copying merge does (``merging.validate``: same config, engine and version, no gap,
no duplicate) and writes a merged file in which every per-unit variable is an
HDF5 virtual dataset: the hyperslab of work unit (width, sample) maps onto the
same hyperslab of the part that holds it (a shard file has the whole sweep's
layout, so a unit lies at the same index in its part; runs of consecutive
samples of one width in one part are one mapping). No per-unit data are
copied: the file grows with the number of mappings (about 0.2 kB each: 242 kB
for 200 one-unit shards x 5 variables, against 1.7 MB copied at depth 5), not
with depth or grid.
Coordinates, the completion flags, the summary and the analysis group are
ordinary datasets, computed from the parts' data read through the virtual
datasets, so they equal a copying merge's bit for bit.

Paths to the parts: relative to the merged file's folder when the part lies in
that folder or below it (the folder can then be moved or copied as a whole),
absolute otherwise. HDF5 looks for a relative source beside the virtual file
(unless HDF5_VDS_PREFIX is set). A missing part reads as fill values (NaN) in
h5py and xarray alike, so keep the parts; ``materialise`` checks every part (and
that each still holds the units mapped to it) before it copies.

Attributes beside a copying merge's: ``virtual = 1``; ``merged_from`` (the
parts as given) as in a copying merge.

``materialise`` (``vxsim merge --materialise``) turns a virtual file into one
plain file, the same in every dataset as a copying merge of the same parts.
"""

import json
import os

import h5py
import numpy as np

from . import rng, sweep, variables
from .analysis import growth, report
from .errors import VxsimError
from .merging import copy_units, joined, unit_index, validate
from .store import hdf5, locks, schema, space

VIRTUAL = "virtual"  # root attribute: 1 in a file of virtual datasets


def merge_virtual(parts, output, overwrite=False):
    """Merge ``parts`` into ``output`` as virtual datasets over them; returns the path."""
    parts, infos, config, owner = validate(parts, output, overwrite)
    folder = os.path.dirname(os.path.abspath(output))
    sources = [source_name(info["path"], folder) for info in infos]
    with locks.replacing(output, "merging") as tmp, space.writing(output, "merging"):
        with h5py.File(tmp, "w") as f:
            schema.write_attrs(
                f,
                config,
                joined(infos, "backend"),
                joined(infos, "device"),
                numerics=str(infos[0]["attrs"].get("numerics", "")),
                generator=rng.file_generator(infos[0]["attrs"]),
            )
            for key in ("vxsim_version", "config_text"):
                f.attrs[key] = infos[0]["attrs"][key]
            f.attrs["merged_from"] = json.dumps(parts)
            f.attrs[VIRTUAL] = np.int8(1)
            _layout(f, config, _blocks(owner), sources)
        _summarise(tmp, config)
    return output


def source_name(part, folder):
    """How the virtual file names ``part``: relative to ``folder`` when the part lies in it
    or below it, absolute otherwise ('%' doubled: HDF5 reads source names as patterns)."""
    path = os.path.abspath(part)
    inside = os.path.commonpath([path, folder]) == folder
    name = os.path.relpath(path, folder) if inside else path
    return name.replace("%", "%%")


def _blocks(owner):
    """{part index: [(width_index, first sample, last sample + 1)]}: runs of consecutive
    samples of one width held by one part."""
    out = {}
    for wi, sample in sorted(owner):
        k = owner[wi, sample]
        runs = out.setdefault(k, [])
        if runs and runs[-1][0] == wi and runs[-1][2] == sample:
            runs[-1] = (wi, runs[-1][1], sample + 1)
        else:
            runs.append((wi, sample, sample + 1))
    return out


def _layout(f, config, blocks, sources):
    """Coordinates, a virtual dataset per per-unit variable, the completion flags (all 1)."""
    coords = schema.coordinates(config)
    for name, values in coords.items():
        schema.scale(f, name, values)
    schema.label(f)
    sizes = {k: len(v) for k, v in coords.items()}
    for name, dims in variables.stored_variables(config).items():
        v = variables.CATALOGUE[name]
        shape = tuple(sizes[d] for d in dims)
        dtype = space.storage_dtype(config, v)
        if v.role != "unit":  # the progress flags: every unit is in
            ds = schema.variable(f, name, dims, shape, dtype, False, v.fill, False)
            ds[...] = 1
            continue
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        for k, runs in blocks.items():
            source = h5py.VirtualSource(sources[k], name, shape=shape, dtype=dtype)
            for wi, first, stop in runs:
                index = unit_index(dims, wi, slice(first, stop))
                layout[index] = source[index]
        ds = f.create_virtual_dataset(name, layout, fillvalue=v.fill)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(f[dim])
        attrs = variables.attributes(name)
        ds.attrs["long_name"], ds.attrs["units"] = attrs["long_name"], attrs["units"]


def _summarise(path, config):
    """Growth rates and analysis from the units (read through the virtual datasets), as
    ``sweep.finish`` computes them, written beside the virtual datasets."""
    data, coords, _ = hdf5.read_unit_variables(path)
    summary = growth.summarise(data, coords, config)
    analysis = report.analyse(data, coords, config, summary)
    with h5py.File(path, "r+") as f:
        schema.write_summary(f, summary)
        schema.write_group(f, "analysis", analysis)
        f.attrs["status"] = "complete"


def materialise(path, output, overwrite=False):
    """Copy the virtual merged file ``path`` into the plain file ``output``; returns it.

    Every part it maps is checked first (present, same sweep, no gap or duplicate),
    then the units are copied and the file finished as a copying merge does.
    """
    path = os.fspath(path)
    attrs = _virtual_attrs(path)
    parts, mapped = sources_of(path)
    _, infos, config, owner = validate(parts, output, overwrite)
    if config.canonical() != attrs["config"]:
        raise VxsimError(f"cannot materialise {path}: its parts hold another config")
    wrong = sorted(u for u, k in owner.items() if mapped.get(u) != {k})
    if wrong:
        wi, sample = wrong[0]
        raise VxsimError(
            f"cannot materialise {path}: {len(wrong)} work unit(s) map to a part that does "
            f"not hold them, first (width={config.widths[wi]}, sample={sample}); "
            "were the parts replaced? merge them again"
        )
    with locks.replacing(output, "materialising") as tmp:
        hdf5.create(
            tmp,
            config,
            str(attrs.get("backend", "?")),
            str(attrs.get("device", "?")),
            numerics=str(attrs.get("numerics", "")),
            generator=rng.file_generator(attrs),
        )
        with h5py.File(tmp, "r+") as dst:
            for key in ("vxsim_version", "config_text", "merged_from"):
                dst.attrs[key] = attrs[key]
            whole = [{"path": path}]  # every unit from the virtual file, through its mappings
            copy_units(dst, whole, dict.fromkeys(owner, 0), config)
        sweep.finish(tmp, config)
    return output


def _virtual_attrs(path):
    """The root attributes of a virtual merged file; refuse anything else."""
    if not os.path.isfile(path):
        raise VxsimError(f"cannot materialise: {path} does not exist")
    try:
        with hdf5.open_reader(path) as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
    except OSError as err:
        raise VxsimError(f"cannot materialise {path}: {locks.reason(err)}") from None
    if "config" not in attrs:
        raise VxsimError(f"cannot materialise {path}: not a vxsim results file")
    if int(attrs.get(VIRTUAL, 0)) != 1:
        raise VxsimError(
            f"cannot materialise {path}: it is a plain file already (not from merge --virtual)"
        )
    return attrs


def sources_of(path):
    """(parts, mapped) of a virtual file: the parts it maps, as paths usable from here, and
    {(width_index, sample): {index in parts}} over its virtual datasets. Refuses a missing part."""
    folder = os.path.dirname(os.path.abspath(path))
    names, mapped = [], {}
    with hdf5.open_reader(path) as f:
        for ds in f.values():
            if not (isinstance(ds, h5py.Dataset) and ds.is_virtual):
                continue
            dims = [ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim)]
            w, s = dims.index("width"), dims.index("sample")
            for source in ds.virtual_sources():
                if source.file_name not in names:
                    names.append(source.file_name)
                low, high = source.vspace.get_select_bounds()
                for wi in range(low[w], high[w] + 1):
                    for sample in range(low[s], high[s] + 1):
                        mapped.setdefault((wi, sample), set()).add(names.index(source.file_name))
    parts = []
    for name in names:
        name = name.replace("%%", "%")
        part = os.path.normpath(os.path.join(folder, name))  # an absolute name stays
        if not os.path.isfile(part):
            raise VxsimError(
                f"cannot materialise {path}: its part {name} is missing "
                f"(looked for {part}; parts must stay where they were, relative to it)"
            )
        parts.append(part)
    return parts, mapped
