"""The ``vxsim`` command: a thin layer over the Python API.

Bad input of any kind ends with one line ``vxsim: error: ...`` and exit status 2.
"""

import os
import sys

import click
import numpy as np

from . import __version__, engines
from .clitools import emit, guarded
from .cluster.cli import slurm, status
from .errors import VxsimError
from .plot.cli import plot
from .theory.cli import theory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vxsim")
def main():
    """Map vanishing and exploding gradients in very deep random networks."""


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="vxsim.h5", show_default=True, help="results file (HDF5)")
@click.option(
    "--backend",
    type=click.Choice(engines.choices()),
    default=None,
    help="where to run (default: engine.backend of the config, 'auto')",
)
@click.option("--resume", is_flag=True, help="continue an interrupted sweep in OUTPUT")
@click.option("--overwrite", is_flag=True, help="replace OUTPUT if it exists")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config key, e.g. --set network.depth=1000 (repeatable)",
)
@click.option(
    "--shard",
    metavar="I/N",
    help="compute only shard I of N (1-based; auto/N: I from $SLURM_ARRAY_TASK_ID); "
    "join the parts with `vxsim merge`",
)
@click.option(
    "--executor",
    type=click.Choice(["serial", "dask"]),
    default="serial",
    show_default=True,
    help="how work units run: in this process, or as Dask tasks (pip install 'vxsim[dask]')",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Dask scheduler for --executor dask (default: a cluster of this machine)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result summary as JSON")
@click.option(
    "--progress",
    "progress_kind",
    type=click.Choice(["auto", "bar", "log", "json"]),
    default="auto",
    show_default=True,
    help="bars on a terminal, a line every 30 s in a batch log, or JSON lines (auto: by stderr)",
)
@click.option(
    "--dry-run", is_flag=True, help="print the work units, memory and file size; run nothing"
)
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
@guarded
def sweep(
    config,
    output,
    backend,
    resume,
    overwrite,
    overrides,
    shard,
    executor,
    scheduler,
    as_json,
    progress_kind,
    dry_run,
    quiet,
):
    """Run a sweep of CONFIG (TOML; the embedded default if omitted) into OUTPUT."""
    from . import config as config_mod
    from .progress import Reporter
    from .store.summary import summarise_file
    from .sweep import parse_shard, plan, run_sweep

    cfg = config_mod.load(config, overrides=overrides)
    if resume and overwrite:
        raise VxsimError("--resume and --overwrite exclude each other")
    if shard is not None:
        shard = parse_shard(shard)
    if dry_run:
        p = plan(cfg, output, backend=backend, shard=shard)
        emit(p, as_json, _format_plan(p))
        return
    every = float(os.environ.get("VXSIM_PROGRESS_EVERY", "30"))  # seconds between log lines
    reporter = Reporter("quiet" if quiet else progress_kind, every=every)
    try:
        run_sweep(
            cfg,
            output,
            backend=backend,
            resume=resume,
            overwrite=overwrite,
            progress=reporter,
            shard=shard,
            executor=executor,
            scheduler=scheduler,
        )
    finally:
        reporter.close()

    summary = summarise_file(output)
    emit(summary, as_json, f"wrote {output}\n" + _format_summary(summary))


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, help="the merged results file (HDF5)")
@click.option("--overwrite", is_flag=True, help="replace OUTPUT if it exists (never an input)")
@click.option(
    "--virtual",
    is_flag=True,
    help="HDF5 virtual datasets over the parts, no copy (keep the parts where they are)",
)
@click.option(
    "--materialise",
    "--materialize",
    "materialise",
    is_flag=True,
    help="turn the one virtual merged file given into a plain file, as a copying merge",
)
@click.option("--json", "as_json", is_flag=True, help="print the result summary as JSON")
@guarded
def merge(parts, output, overwrite, virtual, materialise, as_json):
    """Join the shard files PARTS of one sweep into OUTPUT, as one process would have written it."""
    from .store.summary import summarise_file

    if virtual and materialise:
        raise VxsimError("--virtual and --materialise exclude each other")
    if materialise:
        if len(parts) != 1:
            raise VxsimError(
                f"--materialise takes one file (a merge --virtual output), not {len(parts)}"
            )
        from .virtual import materialise as materialise_file

        materialise_file(parts[0], output, overwrite=overwrite)
        source = f"wrote {output} from {parts[0]}"
    else:
        if virtual:
            from .virtual import merge_virtual as merge_parts
        else:
            from .merging import merge as merge_parts

        merge_parts(parts, output, overwrite=overwrite)
        how = "virtual datasets over" if virtual else "from"
        source = f"wrote {output} {how} {len(parts)} parts"
    summary = summarise_file(output)
    emit(summary, as_json, source + "\n" + _format_summary(summary))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@guarded
def show(path, as_json):
    """Summarise what a results file holds (also while its sweep is running)."""
    from .store.summary import summarise_file

    summary = summarise_file(path)
    emit(summary, as_json, _format_summary(summary))


def _format_plan(p):
    from .store.space import human

    mem = ", ".join(f"width {w}: {human(b)}" for w, b in p["unit_memory_bytes"].items())
    free = "unknown" if p["free_bytes"] is None else human(p["free_bytes"])
    return "\n".join(
        [
            f"dry run: nothing computed or written ({p['output']})",
            f"backend       {p['backend']}",
            f"work units    {p['work_units']} (width x sample), {p['grid_points']} grid points "
            f"x {p['depth']} layers each",
            f"memory        per unit: {mem}",
            f"results file  about {human(p['file_bytes'])} ({free} free there; finishing "
            "needs as much again for a moment)",
        ]
    )


def _format_summary(s):
    lines = [
        f"file        {s['path']}  ({s['status']}, "
        f"{s['units_done']}/{s['units_total']} work units)",
        f"vxsim       {s['vxsim_version']}  backend {s['backend']} on {s['device']}",
        f"network     {s['architecture']}  width {s['width']}  depth {s['depth']}",
        f"activation  {', '.join(s['activation'])}",
        *([f"init        {', '.join(s['init'])}"] if "init" in s else []),
        f"grid        sigma_w2 {s['sigma_w2_range']} ({s['n_sigma_w2']})  sigma_b2 {s['sigma_b2']}"
        + "".join(f"  {k} {v}" for k, v in s.get("architecture_axes", {}).items()),
        f"samples     {s['samples']}  seed {s['seed']}  mode {s['mode']}  "
        f"layers recorded {s['n_layers']}",
        f"diverged    {s['diverged_points']} of {s['total_points']} (point, sample) pairs",
    ]
    if s.get("spectrum"):
        sp = s["spectrum"]
        lines.append(
            f"spectrum    J^l singular values ({sp['sv']}) at layers {sp['layers']}: "
            + ", ".join(sp["variables"])
        )
    if s.get("missing_parts"):
        lines.append(
            f"MISSING     {len(s['missing_parts'])} part(s) of this virtual merge, whose units "
            f"read as NaN: {', '.join(s['missing_parts'])}"
        )
    if s.get("growth_law") == "power":
        lines.append("growth law  power: rates are exponents of |g|^2 ~ l^rate (residual)")
    if s.get("shard"):
        sh = s["shard"]
        lines.insert(
            1,
            f"shard       {sh['index']}/{sh['count']}: {sh['units_done']}/{sh['units']} of its "
            "work units done; join the shards with `vxsim merge`",
        )
    for row in s.get("exponents", []):
        extra = "".join(f" {k} {row[k]:g}" for k in s.get("architecture_axes", {}))
        theory = row["theory_exponent"]
        lines.append(
            f"exponent    {row['mode']} {_act_init(row)} width {row['width']} "
            f"sigma_w2 {row['sigma_w2']:g} sigma_b2 {row['sigma_b2']:g}{extra}: "
            + ("-" if row["exponent"] is None else f"{row['exponent']:.4g}")
            + ("" if theory is None else f" (theory {theory:.4g})")
        )
    for row in s.get("crossings", []):
        extra = "".join(f" {k} {row[k]:g}" for k in s.get("architecture_axes", {}))
        lines.append(
            f"edge        {row['mode']} {_act_init(row)} width {row['width']} "
            f"sigma_b2 {row['sigma_b2']:g}{extra}: quenched rate crosses 0 at sigma_w2 ~ "
            + ("none in grid" if row["sigma_w2"] is None else f"{row['sigma_w2']:.4g}")
            + (
                ""
                if row.get("theory_sigma_w2") is None
                else f" (theory {row['theory_sigma_w2']:.4g})"
            )
        )
    return "\n".join(lines)


def _act_init(row):
    """'tanh', or 'tanh orthogonal' where the file has weight laws (the init axis)."""
    return row["activation"] + (f" {row['init']}" if "init" in row else "")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@guarded
def boundary(path, as_json):
    """The empirical edge of chaos per (width, activation, sigma_b2), beside the theory's."""
    from .store.summary import boundary_rows

    rows = boundary_rows(path)
    fmt = lambda v: "   -   " if v is None else f"{v:7.4f}"  # noqa: E731
    base_keys = {"mode", "estimator", "width", "activation", "sigma_b2", "critical_sigma_w2"}
    base_keys |= {"ci_low", "ci_high", "theory_sigma_w2", "flag", "note", "init"}
    extra = [k for k in (rows[0] if rows else {}) if k not in base_keys]
    lines = [
        "mode estimator  width activation        sigma_b2"
        + "".join(f" {k:>11}" for k in extra)
        + "  critical [95% interval]          theory"
    ]
    for r in rows:
        lines.append(
            f"{r['mode']:4} {r['estimator']:9} {r['width']:6} {_act_init(r):16} "
            f"{r['sigma_b2']:8.4f}"
            + "".join(f" {r[k]:11.4g}" for k in extra)
            + f"  {fmt(r['critical_sigma_w2'])} "
            f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]  {fmt(r['theory_sigma_w2'])}"
            + "".join(
                f"  ({text})"
                for text in (r.get("note"), r.get("flag"))
                if text and text != "inside the grid"
            )
        )
    emit(rows, as_json, "\n".join(lines))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@guarded
def info(as_json):
    """Versions, backends and devices."""
    import h5py
    import numba

    from . import activations, laws

    data = {
        "vxsim": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "backends": engines.available(),
        "default_backend": engines.auto(),
        "cpu_count": os.cpu_count(),
        "gpus": _gpus(),
        "activations": activations.names(),
        "weight_laws": [
            f"{n}({laws.get(n).param_name})" if laws.get(n).takes_param else n for n in laws.names()
        ],
    }
    text = "\n".join(
        [
            f"vxsim {data['vxsim']}  (python {data['python']}, numpy {data['numpy']}, "
            f"numba {data['numba']}, h5py {data['h5py']}, HDF5 {data['hdf5']})",
            "backends    "
            + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in data["backends"].items())
            + f"  (auto -> {data['default_backend']})",
            f"cpus        {data['cpu_count']}",
            f"gpus        {', '.join(data['gpus']) or 'none'}",
            f"activations {', '.join(data['activations'])}",
            f"weight laws {', '.join(data['weight_laws'])}  (network.init)",
        ]
    )
    emit(data, as_json, text)


def _gpus():
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        return [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(n)]
    except Exception:
        return []


main.add_command(theory)
main.add_command(plot)
main.add_command(slurm)
main.add_command(status)


if __name__ == "__main__":  # pragma: no cover
    main()
