"""``vxsim slurm``: a sweep as a Slurm array job of shards plus a dependent merge job.

The main CLI mounts it with ``main.add_command(slurm)``. Bad input: one line
``vxsim: error: ...`` and exit status 2, and nothing written.
"""

import shlex

import click

from vxsim.clitools import emit, guarded
from vxsim.cluster import slurm as slurm_mod
from vxsim.cluster import status as status_mod
from vxsim.config import BACKENDS
from vxsim.errors import VxsimError


@click.command("slurm")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--shards", "-n", metavar="N", help="number of shards = array tasks (required)")
@click.option(
    "-o",
    "--output",
    "directory",
    metavar="DIR",
    help="job folder: scripts, config copy, logs, part-I.h5, merged sweep.h5 (required)",
)
@click.option("--partition", "-p", help="Slurm partition(s)")
@click.option("--gpus-per-task", metavar="[TYPE:]COUNT", help="GPUs per shard")
@click.option("--cpus-per-task", metavar="N", help="CPU cores per shard (Numba/BLAS threads)")
@click.option("--mem", help="memory per shard and for the merge, e.g. 16G")
@click.option("--time", help="time limit per shard and for the merge, e.g. 02:00:00 or 1-12")
@click.option("--account", "-A", help="account to charge")
@click.option("--qos", help="quality of service")
@click.option("--job-name", default="vxsim", show_default=True, help="(merge: NAME-merge)")
@click.option("--max-parallel", metavar="N", help="at most this many shards at once (array %limit)")
@click.option(
    "--extra-sbatch",
    multiple=True,
    metavar="OPTION",
    help="another #SBATCH line for both jobs, e.g. --extra-sbatch=--constraint=a100 (repeatable)",
)
@click.option(
    "--backend",
    metavar="|".join(BACKENDS),
    help="passed to vxsim sweep (default: the config's engine.backend)",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config key, passed to every shard (repeatable)",
)
@click.option(
    "--stop-before",
    metavar="SECONDS",
    help=f"SIGTERM each shard this long before --time runs out; it stops at a safe point and "
    f"is requeued to continue (default {slurm_mod.STOP_BEFORE})",
)
@click.option("--python", help="interpreter on the compute nodes (default: this one)")
@click.option("--vxsim-command", help="shell command that starts vxsim in a job, used as given")
@click.option("--submit", is_flag=True, help="submit the jobs now (runs DIR/submit.sh)")
@click.option("--json", "as_json", is_flag=True, help="print what was written (and submitted)")
@guarded
def slurm(
    config,
    shards,
    directory,
    partition,
    gpus_per_task,
    cpus_per_task,
    mem,
    time,
    account,
    qos,
    job_name,
    max_parallel,
    extra_sbatch,
    backend,
    overrides,
    stop_before,
    python,
    vxsim_command,
    submit,
    as_json,
):
    """Write a Slurm job for a sweep of CONFIG (TOML; the embedded default if omitted).

    DIR gets sweep.sbatch (an array job: task I runs shard I of N into part-I.h5,
    resuming it if it exists), merge.sbatch (merges the parts into sweep.h5) and
    submit.sh (submits both, the merge after every shard succeeded).
    """
    if directory is None:
        raise VxsimError("missing option -o DIR (the job folder)")
    job = slurm_mod.write_job(
        directory,
        _whole("--shards", shards, required=True),
        config=config,
        overrides=overrides,
        backend=backend,
        python=python,
        command=vxsim_command,
        job_name=job_name,
        partition=partition,
        gpus_per_task=gpus_per_task,
        cpus_per_task=_whole("--cpus-per-task", cpus_per_task),
        mem=mem,
        time=time,
        account=account,
        qos=qos,
        max_parallel=_whole("--max-parallel", max_parallel),
        extra_sbatch=extra_sbatch,
        stop_before=_whole("--stop-before", stop_before),
    )
    d = job["directory"]
    lines = [
        f"wrote {d}/",
        f"  config.toml    copy of {config or 'the embedded default config'}",
        f"  sweep.sbatch   array job 1-{job['shards']}: shard I of {job['shards']} -> part-I.h5 "
        f"({job['units']} work units)",
        "  merge.sbatch   part-1.h5 .. part-N.h5 -> sweep.h5, after every shard succeeded",
        "  submit.sh      submits both",
    ]
    if submit:
        ids = slurm_mod.submit(d)
        job.update(ids)
        lines += [
            f"submitted array job {ids['array_job']} ({job['shards']} shards) and merge job "
            f"{ids['merge_job']} (runs after all succeed)",
            f"watch: squeue -j {ids['array_job']},{ids['merge_job']}    logs: {d}/logs/",
            f"result: {job['result']}",
        ]
    else:
        lines += [
            f"submit: bash {shlex.quote(d + '/submit.sh')}",
            f"result: {job['result']}  (logs: {d}/logs/)",
        ]
    emit(job, as_json, "\n".join(lines))


def _whole(option, text, required=False):
    """A whole number from the command line (None when the option was not given)."""
    if text is None:
        if required:
            raise VxsimError(f"missing option {option} N")
        return None
    try:
        return int(text)
    except ValueError:
        raise VxsimError(f"{option} must be a whole number, got {text!r}") from None


@click.command("status")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@guarded
def status(directory, as_json):
    """What the Slurm job folder DIR (written by `vxsim slurm`) has done: per shard its
    work units done, its queue state and requeues; the ETA; whether it is merged."""
    s = status_mod.status(directory)
    emit(s, as_json, status_mod.format_status(s))
